"""Does the law a run returns extrapolate? Before vs after evolve.selection, per data set.

For each data set (a task folder: train.csv, test.csv, task.toml), with its own seeds left
out so every run starts like a data set nobody tuned (issue 13): the plain power-law seed
`c + Σ a_i x_i^(-b_i)` (evolve.propose.seeds.default_seeds) is the only seed, then

    evolve run DIR --iterations 150 --seed 0 --proposer offline --seed-law power_law.py

(through evolve.loop.run_evolution). "before" is what the run returned before this change:
the best distinct law by validation R²; "after" is evolve.selection's choice (the run's
best.py). On a task without a parameter cap the search itself changed (the default cap
from rows per group), so "before" comes from a second run with the old cap of 20.

Test is scored here only to MEASURE the rule; the rule was fixed from principles and
train-only evidence before these figures existed, and nothing here feeds back into it.

    python bench/selection.py DIR [DIR ...]    # appends to bench/results/selection.json
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evolve.config import ArchiveConfig, RunConfig, ScorerConfig  # noqa: E402
from evolve.loop import run_evolution  # noqa: E402
from evolve.propose import grammar  # noqa: E402
from evolve.propose.seeds import default_seeds  # noqa: E402
from evolve.scoring.scorer import Scorer  # noqa: E402
from evolve.selection import distinct_ok  # noqa: E402
from evolve.store.database import Archive  # noqa: E402
from evolve.tasks import load_task  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "selection.json"
WORK = Path("/tmp/evolve-selection")
ITERATIONS = 150


def prepare(source: Path) -> tuple[Path, Path]:
    """A copy of the data set without its seeds, and the plain power-law seed as a file."""
    folder = WORK / "data" / source.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name in ("train.csv", "test.csv", "task.toml"):
        shutil.copy(source / name, folder / name)
    task = load_task(folder)
    seed = WORK / "data" / f"{source.name}_power_law.py"
    seed.write_text(dict(default_seeds(task))["power_law_with_offset"])
    return folder, seed


def run(folder: Path, seed: Path, tag: str) -> Path:
    run_dir = WORK / "runs" / f"{folder.name}-{tag}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config = RunConfig(task=str(folder), iterations=ITERATIONS, seed=0, proposer="offline", seed_laws=(str(seed),),
                       run_dir=str(run_dir), archive=ArchiveConfig(), scorer=ScorerConfig())
    run_evolution(config)
    return run_dir


def measure(source: Path) -> dict:
    folder, seed = prepare(source)
    task = load_task(folder)
    after_dir = run(folder, seed, "after")
    before_dir = after_dir
    if task.param_cap is None:  # the search changed too: the old search had 20 parameters per target
        saved = grammar.default_param_cap
        grammar.default_param_cap = lambda task: grammar.MAX_PARAMS_UNCAPPED
        try:
            before_dir = run(folder, seed, "before")
        finally:
            grammar.default_param_cap = saved
    with Archive.open(after_dir / "archive.db", readonly=True) as archive:
        records = archive.programs(failed=False, order="r2")
        chosen_id = archive.get_meta("selection")["id"]
        after = next(r for r in records if r.id == chosen_id)
        seed_record = next(r for r in records if r.proposer == "seed")
        reason = archive.get_meta("selection")["reason"]
    with Archive.open(before_dir / "archive.db", readonly=True) as archive:
        before = distinct_ok(archive.programs(failed=False, order="r2"))[0]
    out = {"data_set": source.name, "source": str(source), "rows": len(task.train) + len(task.test),
           "groups": len(task.train.group_names()), "features": len(task.features), "param_cap": task.param_cap,
           "validation": [task.validation.column, task.validation.fraction, task.validation.folds], "reason": reason}
    with Scorer(ScorerConfig()) as scorer:  # measurement only: after every choice is made
        for name, record in (("seed", seed_record), ("before", before), ("after", after)):
            test = scorer.score(record.code, task, "test")
            out[name] = {"val_r2": record.r2, "test_r2": test.rank_r2, "n_params": record.n_params}
    return out


def main(argv: list[str]) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for arg in argv:
        source = Path(arg).resolve()
        results[source.name] = measure(source)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        r = results[source.name]
        print(f"{source.name}: seed {r['seed']['test_r2']:.4f}  before {r['before']['test_r2']:.4f} ({r['before']['n_params']}p)  "
              f"after {r['after']['test_r2']:.4f} ({r['after']['n_params']}p)  [{r['reason']}]", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
