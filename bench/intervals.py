"""Coverage of Law.interval on the 8 SLDBench test splits.

For each task: an offline 150-iteration run (`evolve run TASK --iterations 150 --seed 0
--proposer offline`), its best law by validation, then the fraction of test points inside
the 90% interval (bootstrap refits in the sandbox + held-out residual spread, see
evolve.api.Law.interval). Selection and the intervals never read test.

    python bench/intervals.py [--tasks a,b] [--iterations 150] [--level 0.9] [--resamples 30]

writes bench/results/intervals.md (after each task, so a partial run is readable).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import evolve  # noqa: E402
from evolve.tasks import shipped_task_names  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "intervals.md"


def coverage(law, level: float, resamples: int) -> tuple[float, float, int]:
    test = law.task.test
    inside, widths, n = 0, [], 0
    for g in test.group_names():
        mask = test.groups == g
        if g not in law.groups:
            continue
        lo, hi = law.interval(test.X[mask], g, level=level, resamples=resamples)
        y = test.y[mask].reshape(lo.shape)
        inside += int(np.sum((y >= lo) & (y <= hi)))
        widths.append(np.abs(hi - lo) / np.maximum(np.abs(y), 1e-12))
        n += y.size
    return inside / max(n, 1), float(np.median(np.concatenate([w.ravel() for w in widths]))) if widths else float("nan"), n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default=",".join(shipped_task_names()))
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--resamples", type=int, default=30)
    parser.add_argument("--runs", default="/tmp/evolve-intervals")
    args = parser.parse_args()
    rows = []
    for task in args.tasks.split(","):
        started = time.perf_counter()
        run_dir = Path(args.runs) / task
        if (run_dir / "archive.db").exists():
            run = evolve.open_run(run_dir)
        else:
            run = evolve.run(task, iterations=args.iterations, seed=0, run_dir=run_dir, quiet=True, proposer="offline")
        law = run.best
        cov, width, n = coverage(law, args.level, args.resamples)
        test_r2 = law.record.test.metrics.r2 if law.record.test is not None and law.record.test.ok else float("nan")
        rows.append((task, law.id, law.record.r2, test_r2, n, cov, width, time.perf_counter() - started))
        write(rows, args)
        print(rows[-1], flush=True)


def write(rows, args) -> None:
    ok = sum(1 for r in rows if 0.80 <= r[5] <= 0.97)
    lines = [
        "# Prediction-interval coverage on the SLDBench test splits",
        "",
        f"`python bench/intervals.py --iterations {args.iterations} --level {args.level} --resamples {args.resamples}`: best law by validation of",
        f"`evolve run TASK --iterations {args.iterations} --seed 0 --proposer offline`; coverage = fraction of test points inside its {args.level:.0%} interval",
        "(bootstrap refits of each group in the sandbox + relative held-out residual quantiles). Target 80–97%.",
        "",
        "| task | program | val R² | test R² | test points | coverage | median width / |y| | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, pid, val, test, n, cov, width, secs in rows:
        lines.append(f"| {task} | {pid} | {val:.4f} | {test:.4f} | {n} | {cov:.1%} | {width:.3f} | {secs:.0f} |")
    lines += ["", f"{ok} of {len(rows)} tasks within 80–97%."]
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
