// The one plotting implementation of report.html and compare.html: it draws every figure.panel
// element (its data-panel attribute is i) from the page's JSON, PAGE.panels[i], as an inline SVG.
// A panel: {title, ylabel, log, stacked, smooth, series: [{name, points: [[x, y]],
// band: [[x, lo, hi]]}], marks: [[x, label]]}. Smoothing is TensorBoard's debiased EMA (its
// scalar dashboard's smoothing): s_t = w s_{t-1} + (1 - w) y_t, shown as s_t / (1 - w^t).
"use strict";
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
const W = 430, H = 260, L = 62, R = 14, T = 14, B = 40;
const NS = "http://www.w3.org/2000/svg";

function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

function ema(values, w) {
  if (!(w > 0)) return values.slice();
  let last = 0, n = 0;
  return values.map(v => { last = last * w + (1 - w) * v; n += 1; return last / (1 - Math.pow(w, n)); });
}

function fmt(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(2).replace(/\.?0+e/, "e");
  return String(+v.toPrecision(4));
}

// About five round ticks over [lo, hi].
function ticks(lo, hi) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / 5, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toPrecision(12));
  return out;
}

// Ticks of a log axis: 1, 2, 5 times powers of ten over a few decades, powers of ten over many,
// round linear values within one decade.
function logTicks(lo, hi) {
  const d0 = Math.floor(Math.log10(lo)), d1 = Math.ceil(Math.log10(hi));
  if (d1 - d0 <= 1) return ticks(lo, hi).filter(t => t > 0);
  const mults = d1 - d0 <= 3 ? [1, 2, 5] : [1];
  const out = [];
  for (let d = d0; d <= d1; d++) for (const m of mults) {
    const v = +(m * Math.pow(10, d)).toPrecision(6);
    if (v >= lo && v <= hi) out.push(v);
  }
  return out;
}

function draw(fig, panel, smoothing) {
  fig.querySelectorAll("svg, .legend").forEach(n => n.remove());
  // Sparse curves (evaluations) and stacked shares are never smoothed.
  if (!panel.smooth || panel.stacked) smoothing = 0;
  const series = panel.series.map((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const xs = s.points.map(p => p[0]), ys = s.points.map(p => p[1]);
    const band = s.band && s.band.length ? s.band : null;
    return { name: s.name, colour, xs, ys, sm: ema(ys, smoothing), band,
             lo: band && ema(band.map(b => b[1]), smoothing), hi: band && ema(band.map(b => b[2]), smoothing) };
  });
  if (panel.stacked) {
    // Stacked areas: each series sits on the sum of the ones before it, point by point.
    let base = null;
    for (const s of series) {
      s.base = base ? s.xs.map((_, j) => base[j] || 0) : s.xs.map(() => 0);
      s.top = s.ys.map((y, j) => y + s.base[j]);
      base = s.top;
    }
  }
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const s of series) {
    s.xs.forEach(x => { x0 = Math.min(x0, x); x1 = Math.max(x1, x); });
    const ys = [].concat(panel.stacked ? s.top.concat(s.base) : s.ys.concat(s.sm), s.lo || [], s.hi || []);
    ys.forEach(y => { if (isFinite(y)) { y0 = Math.min(y0, y); y1 = Math.max(y1, y); } });
  }
  const log = panel.log && y0 > 0;
  const f = log ? (y => Math.log10(y)) : (y => y);
  let fy0 = f(y0), fy1 = f(y1);
  if (!(fy1 > fy0)) { const d = Math.abs(fy0) * 0.05 || 0.5; fy0 -= d; fy1 += d; }
  else { const pad = (fy1 - fy0) * 0.04; fy0 -= pad; fy1 += pad; }
  if (!(x1 > x0)) { x0 -= 0.5; x1 += 0.5; }
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = y => T + (fy1 - f(y)) / (fy1 - fy0) * (H - T - B);
  const svg = el("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, "font-size": 10 });
  fig.appendChild(svg);
  // Grid and ticks.
  const yt = log ? logTicks(Math.pow(10, fy0), Math.pow(10, fy1)) : ticks(fy0, fy1);
  for (const t of yt) {
    const y = sy(t);
    if (y < T - 0.5 || y > H - B + 0.5) continue;
    el("line", { x1: L, x2: W - R, y1: y, y2: y, stroke: "#eee" }, svg);
    el("text", { x: L - 4, y: y + 3, "text-anchor": "end", fill: "#555" }, svg).textContent = fmt(t);
  }
  for (const t of ticks(x0, x1)) {
    const x = sx(t);
    el("line", { x1: x, x2: x, y1: H - B, y2: H - B + 4, stroke: "#888" }, svg);
    el("text", { x, y: H - B + 14, "text-anchor": "middle", fill: "#555" }, svg).textContent = fmt(t);
  }
  el("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#bbb" }, svg);
  el("text", { x: L + (W - L - R) / 2, y: H - 6, "text-anchor": "middle", fill: "#333" }, svg).textContent = "step";
  el("text", { x: 12, y: T + (H - T - B) / 2, "text-anchor": "middle", fill: "#333",
               transform: `rotate(-90 12 ${T + (H - T - B) / 2})` }, svg).textContent = panel.ylabel + (log ? " (log)" : "");
  // Stage boundaries.
  for (const [x, label] of panel.marks || []) {
    if (x <= x0 || x >= x1) continue;
    el("line", { x1: sx(x), x2: sx(x), y1: T, y2: H - B, stroke: "#999", "stroke-dasharray": "4 3" }, svg);
    el("text", { x: sx(x) + 3, y: T + 10, fill: "#777" }, svg).textContent = label;
  }
  const pts = (xs, ys) => xs.map((x, j) => `${sx(x).toFixed(1)},${sy(ys[j]).toFixed(1)}`).join(" ");
  for (const s of series) {
    if (panel.stacked) {
      const back = s.xs.slice().reverse();
      el("polygon", { points: pts(s.xs, s.top) + " " + pts(back, s.base.slice().reverse()),
                      fill: s.colour, "fill-opacity": 0.55, stroke: s.colour }, svg);
      continue;
    }
    if (s.band) {
      const bx = s.band.map(b => b[0]);
      el("polygon", { points: pts(bx, s.hi) + " " + pts(bx.slice().reverse(), s.lo.slice().reverse()),
                      fill: s.colour, "fill-opacity": 0.18, stroke: "none" }, svg);
    }
    if (s.xs.length === 1) {
      el("circle", { cx: sx(s.xs[0]), cy: sy(s.ys[0]), r: 3.5, fill: s.colour }, svg);
      continue;
    }
    if (smoothing > 0) el("polyline", { points: pts(s.xs, s.ys), fill: "none", stroke: s.colour, "stroke-opacity": 0.25 }, svg);
    el("polyline", { points: pts(s.xs, s.sm), fill: "none", stroke: s.colour, "stroke-width": 1.6 }, svg);
    if (s.xs.length <= 12) s.xs.forEach((x, j) => el("circle", { cx: sx(x), cy: sy(s.sm[j]), r: 2.5, fill: s.colour }, svg));
  }
  // Hover: the value of every series at the step nearest the pointer.
  const cursor = el("line", { y1: T, y2: H - B, stroke: "#444", visibility: "hidden" }, svg);
  const overlay = el("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "transparent" }, svg);
  const tip = document.getElementById("tip");
  overlay.addEventListener("mousemove", ev => {
    const box = svg.getBoundingClientRect();
    const x = x0 + (ev.clientX - box.left - L) / (W - L - R) * (x1 - x0);
    let step = null;
    const rows = series.map(s => {
      if (!s.xs.length) return "";
      let j = 0;
      s.xs.forEach((v, k) => { if (Math.abs(v - x) < Math.abs(s.xs[j] - x)) j = k; });
      step = step === null || Math.abs(s.xs[j] - x) < Math.abs(step - x) ? s.xs[j] : step;
      const raw = s.ys[j], shown = s.sm[j];
      const spread = s.band && s.band[j] ? ` [${fmt(s.band[j][1])}, ${fmt(s.band[j][2])}]` : "";
      const smooth = smoothing > 0 ? ` (raw ${fmt(raw)})` : "";
      return `<div><b style="color:${s.colour}">■</b> ${s.name}: ${fmt(shown)}${smooth}${spread}</div>`;
    });
    cursor.setAttribute("x1", sx(step)); cursor.setAttribute("x2", sx(step));
    cursor.setAttribute("visibility", "visible");
    tip.innerHTML = `<div>step ${fmt(step)}</div>` + rows.join("");
    tip.style.left = ev.pageX + 14 + "px"; tip.style.top = ev.pageY + 10 + "px"; tip.style.display = "block";
  });
  overlay.addEventListener("mouseleave", () => { tip.style.display = "none"; cursor.setAttribute("visibility", "hidden"); });
  const legend = document.createElement("div");
  legend.className = "legend";
  legend.innerHTML = series.map(s => `<span><b style="color:${s.colour}">■</b> ${s.name}</span>`).join(" ");
  fig.appendChild(legend);
}

function drawAll() {
  const w = +document.getElementById("smoothing").value;
  document.getElementById("smoothing-value").textContent = w.toFixed(2);
  document.querySelectorAll("figure.panel").forEach(fig => draw(fig, PAGE.panels[+fig.dataset.panel], w));
}

try {
  document.getElementById("smoothing").addEventListener("input", drawAll);
  drawAll();
  const figs = document.querySelectorAll("figure.panel");
  const drawn = [...figs].filter(f => f.querySelector("svg")).length;
  document.body.dataset.panels = figs.length;
  document.body.dataset.rendered = drawn === figs.length ? "ok" : `only ${drawn} of ${figs.length} panels drawn`;
} catch (e) {
  document.body.dataset.rendered = "error: " + e;
}
