"""Score every seed law of every task on validation, test and train; write bench/results/seeds.md.

The table is the reference point for a run: where the published human law and the plain
power-law baseline stand before any evolution. Scoring is in-process (no sandbox), one
program at a time, so the seconds column is the time of one evaluation on one core.

    python bench/seeds.py                     # all tasks, all seeds
    python bench/seeds.py --task sft_scaling_law --seed human
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's evolve, not an older installed copy

from evolve.config import ScorerConfig  # noqa: E402
from evolve.scoring.scorer import Evaluation, Scorer  # noqa: E402
from evolve.tasks import Task, load_task, shipped_task_names  # noqa: E402

SPLITS = ("validation", "test", "train")
RESULTS = ROOT / "bench" / "results" / "seeds.md"

# Test R² published for the human laws (SLDBench paper, arXiv 2507.21184) and reported for
# the plain power-law baseline (the issue); shown beside our numbers.
REFERENCE_TEST_R2 = {
    "human": {
        "data_constrained_scaling_law": 0.911,
        "domain_mixture_scaling_law": 0.671,
        "easy_question_scaling_law": -1.0,
        "lr_bsz_scaling_law": -0.076,
        "moe_scaling_law": 0.703,
        "parallel_scaling_law": 1.000,
        "sft_scaling_law": 0.957,
        "vocab_scaling_law": 0.966,
    },
    "baseline": {
        "data_constrained_scaling_law": 0.914,
        "domain_mixture_scaling_law": 0.986,
        "easy_question_scaling_law": 0.026,
        "lr_bsz_scaling_law": -1.25,
        "moe_scaling_law": -0.22,
        "parallel_scaling_law": 0.99995,
        "sft_scaling_law": 0.960,
        "vocab_scaling_law": 0.968,
    },
}


def seed_paths(task: Task) -> list[Path]:
    return sorted((task.path / "seeds").glob("*.py"))


def score_seed(scorer: Scorer, task: Task, path: Path) -> dict[str, Evaluation]:
    text = path.read_text()
    return {split: scorer.score(text, task, split) for split in SPLITS}


def cell(evaluation: Evaluation) -> str:
    text = f"{evaluation.metrics.r2:.5f}"
    return text if evaluation.ok else f"{text} ({evaluation.status})"


def table_row(task: Task, seed: str, results: dict[str, Evaluation]) -> str:
    reference = REFERENCE_TEST_R2.get(seed, {}).get(task.name)
    ref = "" if reference is None else f"{reference:g}"
    n_params = results["test"].n_params
    seconds = max(e.seconds for e in results.values())
    cells = [task.name, seed, cell(results["validation"]), cell(results["test"]), ref, cell(results["train"])]
    cells += [str(n_params) if n_params is not None else "-", str(task.param_cap or "-"), f"{seconds:.2f}"]
    return "| " + " | ".join(cells) + " |"


def header() -> list[str]:
    names = ["task", "seed", "validation R²", "test R²", "reference test R²", "train R²", "n_params", "cap", "seconds (max split)"]
    return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", action="append", help="task name (repeatable); default: all")
    parser.add_argument("--seed", action="append", help="seed file stem, e.g. human (repeatable); default: all")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args(argv)
    rows = header()
    started = time.perf_counter()
    with Scorer(ScorerConfig(isolate=False)) as scorer:
        for name in args.task or shipped_task_names():
            task = load_task(name)
            for path in seed_paths(task):
                if args.seed and path.stem not in args.seed:
                    continue
                rows.append(table_row(task, path.stem, score_seed(scorer, task, path)))
                print(rows[-1], flush=True)
    intro = [
        "# Seed laws: validation, test and train R²",
        "",
        "Written by `python bench/seeds.py` (in-process scoring, one core). Reference test R²: the",
        "SLDBench paper's number for the human law, the issue's number for the power-law baseline.",
        "Validation R² ranks programs during a run; test R² is extrapolation (reported only);",
        "train R² is in-sample. Seconds: the slowest of the three evaluations.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(intro + rows) + f"\n\nTotal time: {time.perf_counter() - started:.1f} s\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
