#!/usr/bin/env python3
"""Runs the method recipes (the preference half of issue 8, the RL half of issue 9) and their controls over several seeds, and writes the
table of docs/methods.md from the runs (never typed by hand).

usage: scripts/methods.py [--seeds 1 2 3] [--only NAME ...] [--out runs/methods] [--table docs/methods.md]

Each method is run as written and with the one `--set` its header names as the control, once
per seed (`--set seed=N`), with the `recipe` binary `cargo build` makes (the optimised dev profile
the README uses).
The metric is the recipe's evaluation at the end of the run (the last metrics line that has
it); `val_loss` is lower-is-better, every accuracy higher-is-better. Runs already on disk (a
`recipe.lock` in their folder) are reused, so an interrupted sweep continues.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# name, recipe, eval name, metric key, better, control --set
METHODS = [
    ("curry_dpo", "recipes/curry_dpo.recipe", "pair_acc", "accuracy", "higher", "curriculum=uniform()"),
    ("temple_pre_sft", "recipes/temple_pre_sft.recipe", "held_acc", "accuracy", "higher", "align_first=false"),
    ("wpo", "recipes/wpo.recipe", "pair_acc", "accuracy", "higher", "loss=dpo()"),
    ("mixed_po", "recipes/mixed_po.recipe", "held_acc", "accuracy", "higher", "loss=dpo()"),
    ("ref_guided_subset", "recipes/ref_guided_subset.recipe", "pair_acc", "accuracy", "higher", "select=random"),
    ("pacing_warmup", "recipes/pacing_warmup.recipe", "val_loss", "loss", "lower", "curriculum=uniform()"),
    ("iterative_rpo", "recipes/iterative_rpo.recipe", "held_acc", "accuracy", "higher", "loss=dpo()"),
    ("online_difficulty_filter", "recipes/online_difficulty_filter.recipe", "held_acc", "accuracy", "higher", "curriculum=uniform()"),
    ("vcrl", "recipes/vcrl.recipe", "held_acc", "accuracy", "higher", "curriculum=uniform()"),
    ("self_evolving_curriculum", "recipes/self_evolving_curriculum.recipe", "hard_acc", "accuracy", "higher", "curriculum=uniform()"),
    ("adaptive_target_difficulty", "recipes/adaptive_target_difficulty.recipe", "held_acc", "accuracy", "higher", "curriculum=uniform()"),
    ("length_budget", "recipes/length_budget.recipe", "held_acc", "accuracy", "higher", "budget=constant(6.0)"),
]

# What a reader must know to read a row: where method and control do not spend equal compute,
# or why a metric cannot separate them.
NOTES = {
    "online_difficulty_filter": "`band_pass` refills: it samples up to 5 rounds of prompts a step "
    "(`curriculum/sampled` about 20-26 groups against the control's 8), so the optimiser steps are "
    "equal but the generated tokens are not.",
    "self_evolving_curriculum": "`hard_acc` (4-digit sums) is 0 in every run: the tiny model does "
    "not reach them at this budget, a floor effect. The bandit itself works as described: the "
    "logged arm probabilities move to the arm with the largest mean |advantage| (1 digit, "
    "`curriculum/p/1` about 0.5 by step 20), not from easy to hard.",
    "vcrl": "`variance_filter` does not refill: it trains on the admitted groups only (about 3 of 8 "
    "a step), so it takes fewer gradient samples than the control at equal sampling.",
}


def final_metric(run, eval_name, key):
    value = None
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            evals = json.loads(line).get("eval") or {}
            if isinstance(evals.get(eval_name), dict) and key in evals[eval_name]:
                value = evals[eval_name][key]
    return value


def run_once(binary, recipe, sets, out):
    if os.path.exists(os.path.join(out, "recipe.lock")):
        return None
    cmd = [binary, "run", recipe, "--quiet", "--out", out]
    for s in sets:
        cmd += ["--set", s]
    start = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--out", default="runs/methods")
    ap.add_argument("--table", default="docs/methods.md")
    ap.add_argument("--binary", default="target/debug/recipe")
    a = ap.parse_args()
    rows = []
    for name, recipe, eval_name, key, better, control in METHODS:
        if a.only and name not in a.only:
            continue
        results = {}
        for arm, sets in (("method", []), ("control", [control])):
            values, walls = [], []
            for seed in a.seeds:
                out = os.path.join(a.out, name, arm, f"seed{seed}")
                wall = run_once(a.binary, recipe, sets + [f"seed={seed}"], out)
                if wall is not None:
                    with open(os.path.join(out, "wall_s.txt"), "w") as f:
                        f.write(f"{wall:.1f}\n")
                with open(os.path.join(out, "wall_s.txt")) as f:
                    walls.append(float(f.read()))
                values.append(final_metric(out, eval_name, key))
                print(f"{name} {arm} seed {seed}: {eval_name}.{key} = {values[-1]} ({walls[-1]:.0f} s)", flush=True)
            results[arm] = (values, walls)
        rows.append((name, recipe, eval_name, key, better, control, results))
    write_table(a, rows)


def write_table(a, rows):
    seeds = " ".join(str(s) for s in a.seeds)
    lines = [
        "# The methods, measured",
        "",
        "Generated by `scripts/methods.py --seeds " + seeds + "` (do not edit by hand): each method recipe",
        "as written and with its control (the one `--set` its header names), once per seed",
        "(`--set seed=N`), with the `cargo build` binary on this project's 2-core CPU machine. The metric is",
        "the recipe's own evaluation at the end of the run; the median over the seeds, then every seed's",
        "value. Equal compute: method and control run the same stages, steps and batch sizes.",
        "",
        "| method | metric | method (median) | control (median) | Δ | method, per seed | control, per seed | wall time per run (median) | control |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, recipe, eval_name, key, better, control, results in rows:
        (mv, mw), (cv, cw) = results["method"], results["control"]
        m, c = statistics.median(mv), statistics.median(cv)
        fmt = lambda xs: ", ".join(f"{x:.3f}" for x in xs)
        lines.append(
            f"| `{name}` | `{eval_name}.{key}` ({better} is better) | {m:.3f} | {c:.3f} | {m - c:+.3f} | {fmt(mv)} | {fmt(cv)} | "
            f"{statistics.median(mw + cw):.0f} s | `--set {control}` |"
        )
    notes = [f"- `{name}`: {NOTES[name]}" for name, *_ in rows if name in NOTES]
    if notes:
        lines += ["", "Notes:", ""] + notes
    lines += [
        "",
        "Commands, per run: `target/debug/recipe run RECIPE --set seed=N [--set CONTROL] --out DIR`.",
        "",
        "Reading it: n = " + str(len(a.seeds)) + " seeds per arm. A difference smaller than the spread of the",
        "per-seed values is not evidence either way; these are tiny models on synthetic tasks, trained",
        "for seconds, so a null or a loss for the method is a result, not a bug to tune away. Wall times",
        "are from a shared machine and only say the recipes run in seconds.",
        "",
    ]
    with open(a.table, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {a.table}")


if __name__ == "__main__":
    sys.exit(main())
