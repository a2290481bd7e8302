"""Coverage of Law.interval on the 8 SLDBench test splits.

For each task: an offline 150-iteration run (`evolve run TASK --iterations 150 --seed 0
--proposer offline`), the law it returns (`run.best`: best.py, evolve.selection's choice),
then the fraction of test points inside its 90% interval (bootstrap refits and residual
noise, widened with the distance beyond the fit rows and floored by the interval calibrated
without the widening, calibrated by split conformal on rolling-origin folds of train; see
evolve.intervals). Selection and the intervals never read test; test is read here only
to measure the coverage, after the method was fixed on train-only evidence
(bench/interval_proxy.py, bench/results/interval_proxy.md).

Runs are the expensive part and are reused: with `--runs DIR`, a task whose run directory
DIR/<task> holds an archive is opened as it is, else it is run there first. So iterating on
the interval method re-does only the refits.

    python bench/intervals.py --runs /work/notes/runs150 [--tasks a,b] [--level 0.9] [--resamples 30]

writes bench/results/intervals.md (after each task, so a partial run is readable). The
"nested" column is train-only evidence for the method: on tasks with two or more
calibration folds, the multiplier calibrated on folds 2+ alone (fit on the smallest rows)
and the fraction of fold 1's held-out rows (the largest train rows) it covers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import evolve  # noqa: E402
from evolve.intervals import calibrate, extrapolation_reach  # noqa: E402
from evolve.tasks import shipped_task_names  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "intervals.md"
ROWS = ROOT / "bench" / "results" / "intervals.json"  # every task measured so far, so tasks can be measured as their runs finish
TARGET = (0.80, 0.97)
METHOD = "max(q1·sqrt(spread² + s²)·(1 + reach), q0·sqrt(spread² + s²)), task folds"  # evolve.intervals' scale; stored rows of another are dropped


def open_or_run(task: str, runs: Path, iterations: int):
    run_dir = runs / task
    if (run_dir / "archive.db").exists():
        from evolve.store.rundir import open_read_only

        with open_read_only(run_dir) as archive:
            status = archive.get_meta("status")
        if status != "finished":
            raise SystemExit(f"{run_dir}: the run is {status!r}, not finished; wait for it or remove it")
        return evolve.open_run(run_dir)
    return evolve.run(task, iterations=iterations, seed=0, run_dir=run_dir, quiet=True, proposer="offline")


def nested_check(law, resamples: int, level: float) -> str:
    """Train only: calibrate on folds 2+, coverage of fold 1's held-out rows."""
    held = law._calibration(resamples)
    folds = {h.fold for h in held}
    if len(folds) < 2:
        return "one fold"
    n_targets = len(law.task.targets)
    multipliers = calibrate([h for h in held if h.fold >= 1], n_targets, level)
    first = [h for h in held if h.fold == 0]
    inside = np.concatenate([np.abs(h.actual - h.fitted.center) <= multipliers.half_width(h.fitted) for h in first])
    return f"{np.mean(inside):.1%} of {inside.size}"


def measure(task: str, runs: Path, iterations: int, level: float, resamples: int) -> dict:
    started = time.perf_counter()
    run = open_or_run(task, runs, iterations)
    law = run.best
    test = law.task.test
    known = np.isin(test.groups, law.groups)
    X, y, groups = test.X[known], test.y[known], test.groups[known]
    low, high = law.interval(X, groups, level=level, resamples=resamples)
    low, high = np.asarray(low).reshape(y.shape), np.asarray(high).reshape(y.shape)
    inside = (y >= low) & (y <= high)
    scores = law.calibration_scores(resamples)
    multipliers = calibrate(law._calibration(resamples), len(law.task.targets), level)
    reach = law_reach(law, X, groups)
    unfloored = without_floor(y, low, high, reach, multipliers)
    width = np.median((high - low) / np.maximum(np.abs(y), 1e-12))
    test_r2 = law.record.test.metrics.r2 if law.record.test is not None and law.record.test.ok else float("nan")
    return {
        "task": task, "program": law.id, "val_r2": law.record.r2, "test_r2": test_r2, "points": int(y.size),
        "coverage": float(inside.mean()), "without_floor": float(unfloored.mean()), "width": float(width), "scores": len(scores),
        "multiplier": "/".join(f"{m:.2f}" for m in multipliers.grown) + ("" if multipliers.enough else " (max)"),
        "floor": "/".join(f"{m:.2f}" for m in multipliers.flat),
        "folds": len({h.fold for h in law._calibration(resamples)}), "reach": float(np.median(reach)),
        "floor_binds": float(np.mean((1 + reach)[:, None] <= (multipliers.flat / multipliers.grown)[None, :])),  # q₀·d ≥ q₁·d·(1 + reach)
        "nested": nested_check(law, resamples, level), "seconds": time.perf_counter() - started,
    }  # fmt: skip


def without_floor(y: np.ndarray, low: np.ndarray, high: np.ndarray, reach: np.ndarray, multipliers) -> np.ndarray:
    """Which test points the interval without its floor (q₁·d·(1 + reach) alone, round 3's
    method) would hold, from the same fits: where the floor binds, the half-width q₀·d
    becomes q₁·d·(1 + reach), a factor q₁·(1 + reach)/q₀ of it."""
    center, half = (low + high) / 2, (high - low) / 2
    growth = multipliers.grown[None, :] * (1 + reach)[:, None]
    factor = np.where(multipliers.flat[None, :] >= growth, growth / multipliers.flat[None, :], 1.0)
    return np.abs(y - center) <= half * factor


def law_reach(law, X: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """How far each test point lies beyond its group's train rows (in spans of them)."""
    reach = np.zeros(len(X))
    for g in set(groups.tolist()):
        reach[groups == g] = extrapolation_reach(law.task.train.X[law.task.train.groups == g], X[groups == g])
    return reach


READING = """
## How to read this (and what was not done)

- This table (2026-12-04, second session) is of 150-iteration runs that return the same laws as the previous
  tables (the task's seed law on five tasks: data_constrained, domain_mixture, easy_question, moe, sft; an
  evolved law on three), re-made on a new machine with the same returned ids.
- 3 of 8 tasks within 80–97%. The target (6 of 8) is not met.
- One change since the previous table (4 of 8): the refits' spread is their interquartile range in standard
  deviations, not their standard deviation. A new user's interval at 4× beyond their data grew with the
  resamples, two diverging refits of 30 owning the standard deviation; on the train-only pseudo-test of
  `bench/interval_proxy.py` (round 6) the chosen method's error fell from 0.110 to 0.075 with it, and it was
  adopted there, before this table was measured. Here it moves domain_mixture from 94.2% to 97.5% (over the
  97% line by 0.5 points, 3 of 120 points), sft from 92.9% to 90.5% with median width / |y| 0.082 → 0.057, and
  leaves the others within 1 point. Intervals also keep their bounds on the side of zero where every train
  value of the target lies (coverage cannot change where the truth has that sign; none of these targets
  changes sign), and with fewer calibration rows than the level needs they are no narrower than normal
  errors would need (no task here has so few at 0.9).
- The method was chosen on train-only evidence (bench/results/interval_proxy.md, a pseudo-test cut from train,
  decision rule written before measuring) and was not tuned on this table.
- Where it fails:
  - easy_question (63.0%): the returned law (the task's seed) has test R² 0.026 against validation R² 0.93; the
    test errors are far beyond anything its validation folds show, and the train-only nested check (fold 1
    predicted from folds 2+) covers 88.9%, so nothing train-side flags it.
  - parallel (58.3%): 12 calibration scores, the floor q₀ binds, and the test errors in units of d are larger
    than validation's; the pseudo-test (100% for every candidate) cannot see it.
  - data_constrained (100%) and moe (100%): 21 and 28 test points, the floor binds on all of them; the laws do
    better beyond train than validation showed (data_constrained test R² 0.91 against validation 0.82).
  - domain_mixture (97.5%): just over the line, 117 of 120 points covered.
- Not chosen though measured: reach along products of features (N·D) and in train spans, one-scale-at-a-time
  folds, ŷ-proportional noise, the next laws' disagreement (bench/results/interval_proxy.md). Not tried:
  weighted conformal at the asked reach, which needs a proxy that reaches as far as test does.
"""


def write(rows: list[dict], args: argparse.Namespace) -> None:
    ok = sum(1 for r in rows if TARGET[0] <= r["coverage"] <= TARGET[1])
    lines = [
        "# Prediction-interval coverage on the SLDBench test splits",
        "",
        f"`python bench/intervals.py --runs {args.runs} --level {args.level} --resamples {args.resamples}`",
        f"(runs: `evolve run TASK --iterations {args.iterations} --seed 0 --proposer offline --run-dir {args.runs}/TASK`).",
        f"Law: the one the run returns (`run.best`, best.py). Coverage: fraction of test points (all targets) inside its {args.level:.0%} interval",
        f"(`Law.interval`: half-width max(q₁·d·(1 + reach), q₀·d), d = sqrt(spread² + s²) from {args.resamples} bootstrap refits and the",
        "fit's residual scale s, reach the point's distance beyond the fit rows, q₁ and q₀ calibrated by split conformal on",
        "rolling-origin folds of train; test is read only to measure this). Target: 80–97%. 'reach': median over test points,",
        "in spans of the train rows. 'q₁' / 'q₀ floor': the multipliers (per target); 'floor binds': share of test points",
        "whose half-width is the floor q₀·d; 'without the floor': coverage of q₁·d·(1 + reach) alone (round 3's method) from",
        "the same fits, for attribution only.",
        "",
        "| task | program | val R² | test R² | test points | reach | coverage | without the floor | median width / abs(y) | folds | calibration scores | q₁ | q₀ floor | floor binds | nested (train only) | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['task']} | {r['program']} | {r['val_r2']:.4f} | {r['test_r2']:.4f} | {r['points']} | {r['reach']:.2f} | {r['coverage']:.1%} | {r['without_floor']:.1%} | "
                     f"{r['width']:.3f} | {r['folds']} | {r['scores']} | {r['multiplier']} | {r['floor']} | {r['floor_binds']:.0%} | {r['nested']} | {r['seconds']:.0f} |")
    loads = ", ".join(r["load"].split(" / ")[0] for r in rows)
    lines += ["", f"{ok} of {len(rows)} tasks within 80–97%. One-minute load average when each task finished: {loads} (2 cores)."]
    RESULTS.write_text("\n".join(lines) + "\n" + READING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(shipped_task_names()))
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--resamples", type=int, default=30)
    parser.add_argument("--runs", default="bench/runs150", help="one run directory per task under it (reused when present)")
    args = parser.parse_args()
    settings = {"runs": str(args.runs), "iterations": args.iterations, "level": args.level, "resamples": args.resamples,
                "method": METHOD}  # rows of another method are not mixed in
    stored = json.loads(ROWS.read_text()) if ROWS.exists() else {}
    rows = stored.get("rows", {}) if stored.get("settings") == settings else {}
    for task in args.tasks.split(","):
        row = measure(task, Path(args.runs), args.iterations, args.level, args.resamples)
        row["load"] = " / ".join(f"{v:.1f}" for v in os.getloadavg())
        rows[task] = row
        ROWS.write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
        write([rows[t] for t in sorted(rows)], args)
        print(row, flush=True)


if __name__ == "__main__":
    main()
