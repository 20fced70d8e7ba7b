#!/usr/bin/env python3
"""Checks that TensorBoard reads a run folder's event file as the same scalars as its metrics.jsonl.

usage: scripts/tensorboard_check.py RUN [RUN ...]

Needs the `tensorboard` package (`python3 -m venv V && V/bin/pip install tensorboard`). Each run
folder is loaded with TensorBoard's own reader (`EventAccumulator`, every event kept), and the
scalars it finds are compared with those metrics.jsonl implies under the rules of
runtime/src/tensorboard.rs, restated here independently: every numeric leaf of a line except
`step`, nested keys joined with `/`, under the line's `stage` (or its `event` without one), as
float32, at a global step that continues across stages (each run of lines with one
(stage, round) is offset by the last steps of the runs before it; a line without `step` sits at
the current position). Prints one line per run; exits 1 on any difference.
"""
import json
import os
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def flatten(prefix, value, out):
    if isinstance(value, bool) or value is None or isinstance(value, (str, list)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}/{k}" if prefix else k, v, out)
    else:
        out.append((prefix, f32(float(value))))


def expected(run):
    """{tag: [(global step, float32 value), ...]} from metrics.jsonl."""
    want = {}
    base, current, last = 0, None, 0
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            line = json.loads(line)
            if isinstance(line.get("step"), int):
                key = (line.get("stage"), line.get("round"))
                if current is not None and key != current:
                    base += last
                current, last = key, line["step"]
            step = base + last if current is not None else 0
            prefix = line.get("stage") or line.get("event") or ""
            scalars = []
            for k, v in line.items():
                if k != "step":
                    flatten(f"{prefix}/{k}" if prefix else k, v, scalars)
            for tag, value in scalars:
                want.setdefault(tag, []).append((step, value))
    return want


def found(run):
    """{tag: [(step, value), ...]} as TensorBoard reads the run folder."""
    acc = event_accumulator.EventAccumulator(run, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def check(run):
    want, got = expected(run), found(run)
    problems = [f"tag {t} missing" for t in sorted(want.keys() - got.keys())]
    problems += [f"tag {t} not in metrics.jsonl" for t in sorted(got.keys() - want.keys())]
    for tag in sorted(want.keys() & got.keys()):
        if want[tag] != got[tag]:
            diff = next(i for i in range(max(len(want[tag]), len(got[tag])))
                        if i >= len(want[tag]) or i >= len(got[tag]) or want[tag][i] != got[tag][i])
            problems.append(f"{tag}: point {diff}: metrics.jsonl {want[tag][diff:diff + 1]}, "
                            f"tensorboard {got[tag][diff:diff + 1]} ({len(want[tag])} vs {len(got[tag])} points)")
    n = sum(len(v) for v in want.values())
    steps = sorted({s for v in got.values() for s, _ in v})
    if problems:
        print(f"FAIL {run}:\n  " + "\n  ".join(problems))
        return False
    print(f"ok {run}: {len(got)} tags, {n} scalars equal metrics.jsonl's, "
          f"global steps {steps[0]}..{steps[-1]}; tags: {', '.join(sorted(got))}")
    return True


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    results = [check(run) for run in sys.argv[1:]]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
