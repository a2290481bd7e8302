"""Does the law a run returns extrapolate? Before vs after evolve.selection, per data set.

For each data set (a task folder: train.csv, test.csv, task.toml), with its own seeds left
out so every run starts like a data set nobody tuned (issue 13): the plain power-law seed
`c + Σ a_i x_i^(-b_i)` (evolve.propose.seeds.default_seeds) is the only seed, then

    evolve run DIR --iterations 150 --seed 0 --proposer offline --seed-law power_law.py

(through evolve.loop.run_evolution). "before" is what the run returned before this change:
the best distinct law by validation R²; "after" is evolve.selection's choice (the run's
best.py). Both come from the same run: the search did not change.

Test is scored here only to MEASURE the rule; the rule was fixed from principles and
train-only evidence before these figures existed, and nothing here feeds back into it.

    python bench/selection.py DIR [DIR ...]    # appends to bench/results/selection.json
    python bench/selection.py --reuse DIR ...   # choose again from the stored runs
    python bench/selection.py --rules TASK ...  # hand-set vs automatic validation rule, train only

`--rules` compares a shipped task's hand-set validation rule with `auto_validation_rule`
on train alone (nested): per group, train's own largest rows along the axis test is cut by
(a fraction of train equal to test's share of the data) become a pseudo-test; each rule
cuts its validation from the rest; the laws of the task's "after" run (its 30 best distinct,
plus the seed) are ranked by each rule, and a rule is judged by the pseudo-test R² of the
law evolve.selection picks under it and by the Spearman correlation of validation and
pseudo-test R² over the pool. The real test split is not read.
"""

from __future__ import annotations

import json
import os
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
from evolve.selection import choose, distinct_ok  # noqa: E402
from evolve.store.database import Archive  # noqa: E402
from evolve.tasks import auto_validation_rule, column_values, largest_mask, load_task  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "selection.json"
RULES = ROOT / "bench" / "results" / "validation_rules.json"
# The axis each shipped task's test split extends (from the task descriptions and the test
# rows' features, never their labels); domain_mixture's test is not cut along a scale.
TEST_AXIS = {
    "data_constrained_scaling_law": "params*tokens",
    "easy_question_scaling_law": "log_flops",
    "lr_bsz_scaling_law": "data_size*non_embedding_param_size",
    "moe_scaling_law": "dense_parameter_count",
    "parallel_scaling_law": "parallel_size",
    "sft_scaling_law": "sft_data_size",
    "vocab_scaling_law": "vocab_size",
}
POOL = 30
WORK = Path(os.environ.get("EVOLVE_SELECTION_WORK", "/tmp/evolve-selection"))  # runs and data copies (kept)
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
    seed.write_text(next(code for name, code in default_seeds(task) if name.startswith("power_law_with_offset")))
    return folder, seed


def run(folder: Path, seed: Path, tag: str, reuse: bool) -> Path:
    run_dir = WORK / "runs" / f"{folder.name}-{tag}"
    if reuse and (run_dir / "archive.db").exists():
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config = RunConfig(task=str(folder), iterations=ITERATIONS, seed=0, proposer="offline", seed_laws=(str(seed),),
                       run_dir=str(run_dir), archive=ArchiveConfig(), scorer=ScorerConfig())
    run_evolution(config)
    return run_dir


def measure(source: Path, reuse: bool = False) -> dict:
    """Run (or, with reuse, read the stored runs), choose with evolve.selection as the loop
    does, then score seed, before and after on test."""
    folder, seed = prepare(source) if not (reuse and (WORK / "data" / source.name).exists()) else (WORK / "data" / source.name, WORK / "data" / f"{source.name}_power_law.py")
    task = load_task(folder)
    # The search did not change (the default cap is read by selection only): one run, and
    # before/after are two choices from the same archive.
    after_dir = before_dir = run(folder, seed, "after" if task.param_cap is not None else "before", reuse)
    with Archive.open(before_dir / "archive.db", readonly=True) as archive:
        before = distinct_ok(archive.programs(failed=False, order="r2"))[0]
    out = {"data_set": source.name, "source": str(source), "rows": len(task.train) + len(task.test),
           "groups": len(task.train.group_names()), "features": len(task.features), "param_cap": task.param_cap,
           "default_cap": grammar.default_param_cap(task) if task.param_cap is None else None,
           "validation": [task.validation.column, task.validation.fraction, task.validation.folds]}
    with Scorer(ScorerConfig()) as scorer:
        with Archive.open(after_dir / "archive.db", readonly=True) as archive:
            records = archive.programs(failed=False, order="r2")
        choice = choose(records, task, scorer.run)  # as Evolution.score_top_on_test does: train only
        seed_record = next(r for r in records if r.proposer == "seed")
        out["reason"] = choice.reason
        for name, record in (("seed", seed_record), ("before", before), ("after", choice.record)):  # measurement only
            test = scorer.score(record.code, task, "test")
            out[name] = {"val_r2": record.r2, "test_r2": test.rank_r2, "n_params": record.n_params}
    return out


def spearman(a, b) -> float:
    import numpy as np

    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 2 else float("nan")


def compare_rules(name: str) -> dict:
    """Hand-set vs automatic validation rule on a pseudo-test cut from train (train only)."""
    import dataclasses

    from evolve.selection import choose

    task = load_task(name)
    axis = TEST_AXIS[name]
    share = len(task.test) / (len(task.test) + len(task.train))  # how much test holds out: a row count, no label
    pseudo = largest_mask(task.train.groups, column_values(task.train.X, task.features, axis), share)
    inner = dataclasses.replace(task, train=task.train.select(~pseudo), test=task.train.select(pseudo))
    rules = {"hand": task.validation, "auto": auto_validation_rule(inner.train, task.features, axis, share)}
    with Archive.open(WORK / "runs" / f"{name}-after" / "archive.db", readonly=True) as archive:
        pool = distinct_ok(archive.programs(failed=False, order="r2"))
    pool = pool[:POOL] + [r for r in pool[POOL:] if r.proposer == "seed"]
    out = {"axis": axis, "share": share, "pool": len(pool)}
    with Scorer(ScorerConfig()) as scorer:
        pseudo_test = [scorer.score(r.code, inner, "test").rank_r2 for r in pool]
        for label, rule in rules.items():
            ruled = dataclasses.replace(inner, validation=rule)
            records = [dataclasses.replace(r, validation=scorer.score(r.code, ruled, "validation")) for r in pool]
            val = [r.r2 for r in records]
            choice = choose([r for r in records if r.ok], ruled, scorer.run)
            picked = next(i for i, r in enumerate(records) if r.id == choice.record.id)
            top = max(range(len(val)), key=lambda i: val[i])
            out[label] = {"rule": [rule.column, round(rule.fraction, 3), rule.folds], "spearman": spearman(val, pseudo_test),
                          "top1_pseudo_test_r2": pseudo_test[top], "chosen_pseudo_test_r2": pseudo_test[picked]}
    return out


def main_rules(names: list[str]) -> None:
    results = json.loads(RULES.read_text()) if RULES.exists() else {}
    for name in names:
        results[name] = compare_rules(name)
        RULES.write_text(json.dumps(results, indent=1) + "\n")
        r = results[name]
        print(name, {k: r[k] for k in ("hand", "auto")}, flush=True)


def table() -> str:
    """The before/after table of bench/results/selection.json as markdown."""
    results = json.loads(RESULTS.read_text())
    lines = ["| data set | rows | groups | cap | seed test R² | before test R² (params) | after test R² (params) | after − seed | after − before |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        s, b, a = r["seed"], r["before"], r["after"]
        lines.append(f"| {name} | {r['rows']} | {r['groups']} | {r['param_cap'] or 'none'} | {s['test_r2']:.4f} | {b['test_r2']:.4f} ({b['n_params']}) | "
                     f"{a['test_r2']:.4f} ({a['n_params']}) | {a['test_r2'] - s['test_r2']:+.4f} | {a['test_r2'] - b['test_r2']:+.4f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--table":
        return print(table())
    if argv and argv[0] == "--rules":
        return main_rules(argv[1:])
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    reuse = bool(argv) and argv[0] == "--reuse"  # re-choose from the stored runs (selection changed, search did not)
    for arg in argv[1:] if reuse else argv:
        source = Path(arg).resolve()
        results[source.name] = measure(source, reuse)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        r = results[source.name]
        print(f"{source.name}: seed {r['seed']['test_r2']:.4f}  before {r['before']['test_r2']:.4f} ({r['before']['n_params']}p)  "
              f"after {r['after']['test_r2']:.4f} ({r['after']['n_params']}p)  [{r['reason']}]", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
