"""Where the end of a run goes: search vs selection re-fits, test scoring and best.py.

One offline run (`run_evolution`, the grammar proposer, no key), its phases timed by
wrapping the functions the loop calls, and every sandbox start and every sandboxed fit
counted by kind. Prints one table (markdown) and, with --json, the raw figures.

    python bench/end_of_run.py                       # sft, 20 iterations, 2 workers (~2-4 min on 2 busy cores)
    python bench/end_of_run.py --task sft_scaling_law --iterations 40 --workers 2

Wall times depend on the machine's load: the script prints the load before and after. The
counts (pool starts, fits) and the CPU seconds of the whole process tree (this process, the
pools' workers and every child they forked) do not, or much less. `--checkout` measures
another checkout the same way (an A/B against main).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sft_scaling_law")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the evolve checkout to measure (A/B against another)")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


ARGS = arguments()
sys.path.insert(0, str(ARGS.checkout.resolve()))  # that checkout's evolve, not an installed copy

import evolve.loop as loop  # noqa: E402
import evolve.report.formula as formula  # noqa: E402
import evolve.scoring.formula_jobs as formula_jobs  # noqa: E402
from evolve.config import RunConfig, ScorerConfig  # noqa: E402
from evolve.scoring import pool, scorer  # noqa: E402

try:
    import evolve.run_end as end  # noqa: E402 - the end of a run in its own module (after this change)
except ImportError:
    end = None

SECONDS: dict[str, float] = collections.defaultdict(float)
COUNTS: collections.Counter = collections.Counter()


def timed(owner, name: str, label: str) -> None:
    """Wrap owner.name so its wall time adds to SECONDS[label]."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            SECONDS[label] += time.perf_counter() - started

    setattr(owner, name, wrapper)


def counted(owner, name: str, label) -> None:
    """Wrap owner.name so each call adds one to COUNTS[label(args)]."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        COUNTS[label(*args, **kwargs)] += 1
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def instrument() -> None:
    cpu_mark(loop.Evolution, "run_batches", "search start", "search end")
    timed(loop.Evolution, "add_seeds", "seeding")
    timed(loop.Evolution, "run_batches", "search")
    ending = end or loop  # before this change the loop held them itself
    timed(ending, "choose", "selection re-fits")
    if end is not None:
        timed(end, "score_top_on_test", "selection + test scoring")
    else:
        timed(loop.Evolution, "score_top_on_test", "selection + test scoring")
    timed(ending, "write_best_program", "best.py")
    timed(formula_jobs, "formulas_isolated", "best.py: trace (and, before, its own refit check) in the formula sandbox")
    for name in ("agrees_with_scorer", "scorer_predictions"):  # the check in the scoring sandbox, before / now
        if hasattr(formula, name):
            timed(formula, name, f"best.py: {name}")
    counted(pool.Sandbox, "__init__", lambda self, config=None, plan="auto", kind="score": f"sandbox pools started ({kind})")
    counted(pool.Sandbox, "run", lambda *a, **k: "sandboxed fits (score kind)")
    counted(pool.Sandbox, "extract", lambda *a, **k: "formula jobs")
    try:
        from evolve.scoring.memo import FitMemo
    except ImportError:
        FitMemo = None
    if FitMemo is not None:
        original = FitMemo.get

        def get(self, *args):
            found = original(self, *args)
            COUNTS["fits answered from the memo"] += found is not None
            return found

        FitMemo.get = get
    counted(scorer.Scorer, "score", lambda self, text, task, split="validation": f"evaluations ({split})")


CPU: dict[str, float] = {}  # CPU seconds of this process and every descendant, at phase boundaries


def tree_cpu() -> float:
    """CPU seconds used so far by this process and all its descendants (live ones from /proc,
    reaped ones through their parents' children times): load-independent, unlike wall time."""
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)], stats[int(entry.name)] = int(fields[1]), fields
    tick = os.sysconf("SC_CLK_TCK")
    for pid, fields in stats.items():
        ancestor = parents.get(pid)
        while ancestor and ancestor != os.getpid():
            ancestor = parents.get(ancestor)
        if ancestor == os.getpid():
            total += sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def cpu_mark(owner, name: str, before: str, after: str) -> None:
    """Record tree_cpu() when owner.name starts and ends."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        CPU[before] = tree_cpu()
        try:
            return original(*args, **kwargs)
        finally:
            CPU[after] = tree_cpu()

    setattr(owner, name, wrapper)


def uptime() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().split(" ")[0]
    return "?"


def main() -> None:
    args = ARGS
    instrument()
    load_before = uptime()
    with tempfile.TemporaryDirectory(prefix="evolve-end-of-run-") as tmp:
        config = RunConfig(task=args.task, iterations=args.iterations, seed=args.seed, proposer="offline",
                           run_dir=Path(tmp) / "run", scorer=ScorerConfig(workers=args.workers))
        started = time.perf_counter()
        summary = loop.run_evolution(config)
        total = time.perf_counter() - started
        CPU["run end"] = tree_cpu()
        has_formula = "with its fitted constants (checked" in (summary.run_dir / "best.py").read_text() if summary.best else False
    figures = {"task": args.task, "iterations": args.iterations, "workers": args.workers, "total_s": total,
               "load_before": load_before, "load_after": uptime(), "best.py has a checked formula": has_formula,
               "seconds": dict(SECONDS), "counts": dict(COUNTS), "cpu_marks": dict(CPU),
               "search_cpu_s": CPU["search end"] - CPU["search start"], "end_cpu_s": CPU["run end"] - CPU["search end"]}
    end = total - SECONDS["search"] - SECONDS["seeding"]
    print(f"{args.task}, {args.iterations} iterations, {args.workers} workers; load {load_before} -> {figures['load_after']}")
    print("| phase | seconds |\n|---|---|")
    print(f"| whole run | {total:.1f} |")
    for label, seconds in SECONDS.items():
        print(f"| {label} | {seconds:.1f} |")
    print(f"| end of run (whole run - seeding - search) | {end:.1f} |")
    print(f"| CPU seconds, search (all processes) | {figures['search_cpu_s']:.1f} |")
    print(f"| CPU seconds, end of run (all processes) | {figures['end_cpu_s']:.1f} |")
    print("| count | n |\n|---|---|")
    for label, n in sorted(COUNTS.items()):
        print(f"| {label} | {n} |")
    print(f"best.py formula checked and shown: {has_formula}")
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
