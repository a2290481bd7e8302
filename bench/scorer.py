"""Benchmark the sandboxed scorer against in-process scoring; write bench/results/scorer.md.

For every shipped seed law (tasks/*/seeds/*.py) on its validation split: the mean seconds
of one evaluation isolated and in-process (one at a time, `--repeats` each after one
untimed warm-up run), their ratio, and whether both gave identical metrics. Then the
throughput with every program submitted at once through Scorer.submit (2 workers), the
pure per-evaluation overhead on a trivial program, and the isolation layers in effect. BLAS is pinned to one thread in this process
as in the workers, so the ratio measures the sandbox rather than threading.

    python bench/scorer.py                          # 3 to 4 minutes on 2 busy cores
    python bench/scorer.py --repeats 1 --rounds 1   # a quick look
    python bench/scorer.py --overhead-only          # fixed cost only, wall and CPU (under a minute)

The CPU figure is the sandbox's own CPU time per trivial evaluation (workers and their
children, from getrusage after the pool is closed, minus a pool that only started), so
it stays meaningful on a machine other people are loading; wall time does not.
"""

from __future__ import annotations

import os

# Pin BLAS to one thread as in the sandbox workers, before numpy is first imported.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's evolve, not an older installed copy

from evolve.config import ScorerConfig  # noqa: E402
from evolve.scoring.scorer import Evaluation, Scorer  # noqa: E402
from evolve.tasks import Task, load_task, shipped_task_names  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scorer.md"
WORKERS = 2

TRIVIAL = """
import numpy as np

def fit_scaling_law(data_points, loss_values):
    return [float(np.mean(loss_values))]

def scaling_law_func(data_points, params):
    return np.full(len(data_points), params[0])
"""

POWER_LAW = """
import numpy as np
from scipy.optimize import curve_fit

def scaling_law_func(data_points, params):
    a, b, c = params
    return c + a * np.power(np.asarray(data_points, dtype=float)[:, 0] / 1e3, -b)

def fit_scaling_law(data_points, loss_values):
    y = np.asarray(loss_values, dtype=float)
    law = lambda d, a, b, c: scaling_law_func(d.reshape(-1, 1), [a, b, c])
    try:
        params, _ = curve_fit(law, np.asarray(data_points, dtype=float)[:, 0], y,
                              p0=[y.max() - y.min(), 0.3, 0.9 * y.min()], maxfev=2000)
    except RuntimeError:
        params = [y.max() - y.min(), 0.3, 0.9 * y.min()]
    return params
"""


@dataclass(frozen=True)
class Case:
    task: Task
    seed: str
    program: str


@dataclass
class Timing:
    case: Case
    isolated: list[float]
    in_process: list[float]
    evaluation: Evaluation
    same_metrics: bool

    @property
    def ratio(self) -> float:
        return statistics.mean(self.isolated) / statistics.mean(self.in_process)


def load_cases(task_filter: str | None) -> list[Case]:
    """Every shipped seed law; when none exist yet, two inline programs on sft_scaling_law."""
    cases = []
    for name in shipped_task_names():
        if task_filter and name != task_filter:
            continue
        task = load_task(name)
        for path in sorted((task.path / "seeds").glob("*.py")):
            cases.append(Case(task, path.stem, path.read_text()))
    if not cases:
        task = load_task(task_filter or "sft_scaling_law")
        cases = [Case(task, "inline-mean", TRIVIAL), Case(task, "inline-power", POWER_LAW)]
    return cases


def timed(scorer: Scorer, case: Case) -> tuple[float, Evaluation]:
    started = time.perf_counter()
    evaluation = scorer.score(case.program, case.task, "validation")
    return time.perf_counter() - started, evaluation


def time_cases(cases: list[Case], isolated: Scorer, in_process: Scorer, repeats: int) -> list[Timing]:
    timings = []
    for case in cases:
        for scorer in (isolated, in_process):
            timed(scorer, case)  # untimed: the first call pays one-off imports and compilation
        iso = [timed(isolated, case) for _ in range(repeats)]
        loc = [timed(in_process, case) for _ in range(repeats)]
        same = all(e.metrics == loc[0][1].metrics and e.status == loc[0][1].status for _, e in iso + loc)
        timings.append(Timing(case, [s for s, _ in iso], [s for s, _ in loc], iso[0][1], same))
        print(f"  {case.task.name:30s} {case.seed:12s} {iso[0][1].status:8s} "
              f"isolated {statistics.mean(timings[-1].isolated):7.3f}s  "
              f"in-process {statistics.mean(timings[-1].in_process):7.3f}s  ratio {timings[-1].ratio:5.2f}",
              flush=True)
    return timings


def throughput(scorer: Scorer, cases: list[Case], rounds: int) -> tuple[int, float]:
    """Evaluations per second with every case submitted `rounds` times at once."""
    started = time.perf_counter()
    futures = [scorer.submit(c.program, c.task, "validation") for _ in range(rounds) for c in cases]
    for future in futures:
        future.result()
    return len(futures), len(futures) / (time.perf_counter() - started)


def overhead(scorer: Scorer, task: Task, count: int) -> float:
    """Mean seconds of a trivial evaluation: the fixed cost of one scoring."""
    case = Case(task, "trivial", TRIVIAL)
    timed(scorer, case)  # first call may pay one-off costs
    return statistics.mean(timed(scorer, case)[0] for _ in range(count))


def sandbox_cpu_seconds(evaluations: int, workers: int = 1) -> tuple[float, float]:
    """(CPU seconds of a whole sandbox lifetime with `evaluations` trivial evaluations after
    one warm-up, wall seconds per timed evaluation)."""
    import resource

    task = load_task("sft_scaling_law")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = 0.0
    with Scorer(ScorerConfig(workers=workers)) as scorer:
        scorer.score(TRIVIAL, task, "validation")
        started = time.perf_counter()
        for _ in range(evaluations):
            scorer.score(TRIVIAL, task, "validation")
        wall = (time.perf_counter() - started) / max(1, evaluations)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), wall


def overhead_cpu(count: int) -> tuple[float, float]:
    """Sandbox CPU ms and wall ms per trivial evaluation (the fixed cost, one worker)."""
    base, _ = sandbox_cpu_seconds(0)
    total, wall = sandbox_cpu_seconds(count)
    return 1000 * (total - base) / count, 1000 * wall


def geometric_mean(values: list[float]) -> float:
    return math.exp(statistics.mean(math.log(v) for v in values))


def report(layers: str, timings: list[Timing], rates: dict[str, tuple[int, float]],
           fixed: dict[str, float], elapsed: float, load: tuple[float, float, float], repeats: int) -> str:
    lines = [
        "# Scorer benchmark: sandboxed vs in-process",
        "",
        (f"Written by `python bench/scorer.py` in {elapsed:.0f} s on {os.cpu_count()} cores "
         f"(load average {load[0]:.2f} at start), Python {platform.python_version()}, "
         f"{WORKERS} workers, BLAS pinned to one thread in both modes."),
        "",
        f"Isolation layers in effect: `{layers}`",
        "",
        "## Throughput (everything submitted at once via Scorer.submit)",
        "",
        "| mode | evaluations | evaluations per second |",
        "|---|---:|---:|",
    ]
    for mode, (count, rate) in rates.items():
        lines.append(f"| {mode} | {count} | {rate:.2f} |")
    lines += [
        "",
        "## Fixed cost of one evaluation (trivial program on sft_scaling_law, one at a time)",
        "",
        (f"isolated {1000 * fixed['isolated']:.1f} ms, in-process {1000 * fixed['in-process']:.1f} ms, "
         f"sandbox overhead {1000 * (fixed['isolated'] - fixed['in-process']):.1f} ms per evaluation; "
         f"the sandbox's own CPU time {fixed['cpu_ms']:.1f} ms per evaluation (fit and prediction children, "
         "from getrusage; robust to load)."),
        "",
        f"## Per seed law (validation split, mean of {repeats} runs each, one at a time)",
        "",
        "| task | seed | status | validation R² | isolated s | in-process s | ratio | identical metrics |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for t in timings:
        lines.append(
            f"| {t.case.task.name} | {t.case.seed} | {t.evaluation.status} | {t.evaluation.metrics.r2:.4f} | "
            f"{statistics.mean(t.isolated):.3f} | {statistics.mean(t.in_process):.3f} | {t.ratio:.2f} | "
            f"{'yes' if t.same_metrics else 'NO'} |"
        )
    iso_mean = statistics.mean(statistics.mean(t.isolated) for t in timings)
    loc_mean = statistics.mean(statistics.mean(t.in_process) for t in timings)
    lines += [
        "",
        (f"Mean seconds per evaluation: isolated {iso_mean:.3f}, in-process {loc_mean:.3f} "
         f"(ratio of means {iso_mean / loc_mean:.2f}; geometric mean of per-law ratios "
         f"{geometric_mean([t.ratio for t in timings]):.2f})."),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per seed law and mode (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="times each law is submitted for throughput")
    parser.add_argument("--task", help="only this task's seed laws")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--overhead-only", action="store_true", help="print the fixed cost per evaluation only")
    parser.add_argument("--count", type=int, default=80, help="trivial evaluations for the fixed cost (default 80)")
    args = parser.parse_args(argv)
    if args.overhead_only:
        load = os.getloadavg()[0]
        cpu, wall = overhead_cpu(args.count)
        print(f"fixed cost per evaluation: sandbox CPU {cpu:.1f} ms, wall {wall:.1f} ms "
              f"({args.count} trivial evaluations on sft_scaling_law, 1 worker, load average {load:.2f})")
        return 0
    load, started = os.getloadavg(), time.perf_counter()
    cases = load_cases(args.task)
    config = ScorerConfig(workers=WORKERS)
    with Scorer(config) as isolated, Scorer(ScorerConfig(workers=WORKERS, isolate=False)) as in_process:
        layers = isolated.sandbox.layers
        print(f"layers: {layers}\n{len(cases)} programs; timing one at a time", flush=True)
        timings = time_cases(cases, isolated, in_process, args.repeats)
        sft = load_task("sft_scaling_law")
        fixed = {"isolated": overhead(isolated, sft, 20), "in-process": overhead(in_process, sft, 20)}
    fixed["cpu_ms"], _ = overhead_cpu(40)
    with Scorer(config) as isolated, Scorer(ScorerConfig(workers=WORKERS, isolate=False)) as in_process:
        print("throughput ...", flush=True)
        rates = {"isolated": throughput(isolated, cases, args.rounds),
                 "in-process (threads, one interpreter)": throughput(in_process, cases, args.rounds)}
    text = report(layers, timings, rates, fixed, time.perf_counter() - started, load, args.repeats)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
