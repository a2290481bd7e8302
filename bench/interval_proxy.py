"""Train-only evidence for choosing the interval method: coverage on a pseudo-test cut from train.

The real test split must not choose the method (that would be leakage through the bench
table). So, per task, train is split the way test is split from the whole data: per group,
train's own largest rows along the axis test extends (bench.selection.TEST_AXIS, a share
of train equal to test's share of the data; a seeded random share for domain_mixture,
whose test is not cut along a scale) become a pseudo-test. The rest plays train: the
law (the run's best, program code only) is calibrated on that inner train's folds,
fitted on all of it, and its interval at the pseudo-test rows is checked against their
labels. Candidates differ only in how the calibration folds are cut, how reach is
measured and how a held-out error is scored, so the sandbox refits are run once per task
and fold set and cached (/tmp/evolve-interval-proxy/<task>-<resamples>-v4-<method hash>.pkl, with every
fit's rows so reach can be recomputed); every candidate is then numpy on the cache.

    python bench/interval_proxy.py --runs /work/notes/runs150 [--tasks a,b] [--resamples 30]

writes bench/results/interval_proxy.md. The real test split is never read.

Candidates (round 4; round 3's table is in git history), each a choice of
- folds: 'rule' the task's rolling-origin validation folds; 'steps' one distinct scale at
  a time along the validation column (scale_step_folds below: every fold fits on
  at least two scales, so reach along the scale is never 0 in calibration where test
  extrapolates along it); 'rule+steps' both pooled;
- reach: 'fit' spans of the fold's fit rows (round 3); 'train' spans of the group's train
  rows, the same unit in calibration as at the asked points; 'train×' also along products
  of two positive features (lr·bsz, N·D);
- growth: 'none' d = sqrt(spread² + s²); 'linear' d·(1 + reach), one conformal multiplier
  (round 3's method); 'floored' max(q₀·d, q₁·d·(1 + reach)), q₀ and q₁ each calibrated
  by conformal on its own scores, so the interval is never narrower at small reach than
  the one calibrated without growth;
- noise: s (absolute) or s_r·|ŷ| (relative, for positive targets);
- models (round 5): 'one' the law alone; 'top4' also the disagreement of the run's next four
  distinct laws by validation R² (selection's refused laws left out), each fitted on the same
  rows: m(x) = sqrt(mean_k (ŷ_k(x) − ŷ(x))²) joins the scale, d = sqrt(spread² + s² + m²).
  Why: misspecification the bootstrap of one law cannot see shows as laws that fit train
  alike and part beyond it; where they agree the term adds nothing.

The decision rule, written here before any candidate of this round was measured (on the
pseudo-test or on test): among the candidates whose width grows with reach (growth
'linear' or 'floored'), the smallest pseudo-test error, the mean |coverage − level| over
the eight tasks at levels 0.8 and 0.9; candidates within 0.005 of the smallest count as
tied, and of tied ones the one with the fewest refits (fold set 'rule' < 'steps' <
'rule+steps'), then the simpler (reach 'fit' < 'train' < 'train×', growth 'linear' <
'floored', noise absolute < relative). The nested figure (calibrate on folds 2+, cover
fold 1) is shown for reference only: it is not comparable across fold sets. Limits: the
law was picked by validation on all of train (the pseudo-test rows included), so it fits
the pseudo-test better than a law picked without them would; pseudo-tests are small (12
to 195 points per task), and picking among many candidates on eight small pseudo-tests
overfits them somewhat.

Round 5's rule, written before any 'top4' figure was measured: the models term is adopted
only if the best 'top4' candidate with growth (linear or floored) has a pseudo-test error
below round 4's choice (rule | fit | floored | s) by more than the tie (0.005), with a
nested error not worse by more than the tie; otherwise round 4's choice stands. It costs
four more fits per fold, so it must win clearly.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import pickle
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import evolve  # noqa: E402
from bench.selection import TEST_AXIS  # noqa: E402
from evolve import intervals  # noqa: E402
from evolve.scoring.in_sandbox import GroupJob  # noqa: E402
from evolve.tasks import ValidationRule, column_values, largest_mask, shipped_task_names, validation_mask  # noqa: E402

CACHE = Path(os.environ.get("EVOLVE_INTERVAL_PROXY", "/tmp/evolve-interval-proxy"))
RESULTS = ROOT / "bench" / "results" / "interval_proxy.md"
LEVELS = (0.8, 0.9)
TARGET = (0.80, 0.97)  # at level 0.9, as the real bench


def pseudo_split(task):
    """The inner task: train minus its pseudo-test, with the pseudo-test as its `test`."""
    share = len(task.test) / (len(task.test) + len(task.train))  # a row count, no label
    axis = TEST_AXIS.get(task.name, "")
    if axis:
        pseudo = largest_mask(task.train.groups, column_values(task.train.X, task.features, axis), share)
    else:
        pseudo = validation_mask(task.train, task.features, ValidationRule("", share))
    return dataclasses.replace(task, train=task.train.select(~pseudo), test=task.train.select(pseudo))


STEP_FOLDS = 3  # calibration folds that each hold out one distinct scale (the largest ones of train)


def scale_step_folds(task: Task, n_params: int, steps: int = STEP_FOLDS) -> list:
    """Rolling-origin folds one scale at a time along the task's validation column: fold k
    holds out, per group, the rows at the (k+1)-th largest distinct value of the column and
    fits on the rows below it, so every fold fits on smaller scales and predicts the next
    one, as an interval one step beyond train is asked to. A group joins a fold while its
    fit rows keep at least two distinct values (a fit on one scale cannot show how the law
    moves along it) and more rows than the law has parameters per target. With no column
    (a random validation cut) or no such fold, the task's validation folds."""
    column = task.validation.column
    if not column:
        return task.validation_folds()
    train = task.train
    values = column_values(train.X, task.features, column)
    per_target = n_params // max(1, len(task.targets))
    folds = []
    for k in range(steps):
        fit_mask, held_mask = np.zeros(len(train), dtype=bool), np.zeros(len(train), dtype=bool)
        for g in train.group_names():
            index = np.flatnonzero(train.groups == g)
            distinct = np.unique(values[index])
            if len(distinct) < k + 3:
                continue
            below = index[values[index] < distinct[-1 - k]]
            if len(below) <= per_target:
                continue
            fit_mask[below] = True
            held_mask[index[values[index] == distinct[-1 - k]]] = True
        if held_mask.any():
            folds.append((train.select(fit_mask), train.select(held_mask)))
    return folds or task.validation_folds()


FOLD_SETS = ("rule", "steps")


def _inner_folds(inner, n_params: int, fold_set: str):
    return inner.validation_folds() if fold_set == "rule" else scale_step_folds(inner, n_params)


ALTERNATIVES = 4  # round 5: the run's next distinct laws by validation whose disagreement is measured


def alternative_laws(run, law, inner) -> list:
    """The run's next ALTERNATIVES distinct laws by validation R² (not the law itself, not one
    selection refused), each on the inner task."""
    from evolve.selection import distinct_ok
    from evolve.store.rundir import open_read_only

    with open_read_only(run.path) as archive:
        refused = set((archive.get_meta("selection") or {}).get("refused", []))
    picked = [r for r in distinct_ok(run.records) if r.id != law.id and r.id not in refused][:ALTERNATIVES]
    return [dataclasses.replace(run.law(r.id), task=inner) for r in picked]


def _alternative_predictions(alternatives: list, problems: dict, n_targets: int) -> dict:
    """{group: (k, n, targets)} predictions of the alternative laws that fitted the group."""
    found: dict[str, list] = {g: [] for g in problems}
    for alt in alternatives:
        result = alt._batch([GroupJob(g, X, y, P) for g, (X, y, P) in problems.items()])
        if result is None:
            continue
        for g, (_, _, P) in problems.items():
            values = np.asarray(result[0].get(g, []), dtype=float)
            if values.size == len(P) * n_targets and np.isfinite(values).all():
                found[g].append(values.reshape(len(P), n_targets))
    return {g: np.stack(v) if v else np.zeros((0, len(problems[g][2]), n_targets)) for g, v in found.items()}


def _fits(law, inner, folds, resamples: int, reference: dict, alternatives: list = ()) -> list[dict]:
    """Per fold and group: the fit's rows, the asked rows, the group's reference rows, the
    Fitted and the alternative laws' predictions there."""
    n_targets = len(inner.targets)
    found = []
    for k, (fit_rows, held_rows) in enumerate(folds):
        problems = intervals.fold_problems(fit_rows, held_rows)
        alts = _alternative_predictions(list(alternatives), problems, n_targets)
        for g, fitted in intervals.fit_many(problems, law._batch, resamples, n_targets, law.scorer_config.workers).items():
            found.append({"fold": k, "group": g, "X_fit": problems[g][0], "P": problems[g][2], "X_ref": reference[g],
                          "fitted": fitted, "actual": held_rows.y[held_rows.groups == g].reshape(-1, n_targets),
                          "alternatives": alts[g]})
    return found


def collect(task_name: str, runs: Path, resamples: int) -> dict:
    """The refits every candidate needs, on the inner task (cached)."""
    # v4: with the alternative laws' predictions (round 5); the method's source is in the key, since
    # the cache holds Fitted objects (their spread computed): two versions must never share one
    method = hashlib.sha256(Path(intervals.__file__).read_bytes()).hexdigest()[:10]
    path = CACHE / f"{task_name}-{resamples}-v4-{method}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    started = time.perf_counter()
    run = evolve.open_run(runs / task_name)
    law = run.best
    inner = pseudo_split(law.task)
    inner_law = dataclasses.replace(law, task=inner)
    alternatives = alternative_laws(run, law, inner)
    reference = {g: inner.train.X[inner.train.groups == g] for g in inner.train.group_names()}
    held = {name: _fits(inner_law, inner, _inner_folds(inner, law.record.n_params or 0, name), resamples, reference,
                        alternatives if name == "rule" else ())
            for name in FOLD_SETS}
    pseudo = _fits(inner_law, inner, [(inner.train, inner.test)], resamples, reference, alternatives)
    data = {"task": task_name, "program": law.id, "held": held, "target": pseudo,
            "alternatives": [a.id for a in alternatives],
            "folds": {name: len({h["fold"] for h in held[name]}) for name in FOLD_SETS},
            "seconds": time.perf_counter() - started, "load": os.getloadavg()[0]}
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data))
    return data


# ---------------------------------------------------------------- candidates (numpy on the cache)

def _noise(f, relative: bool):
    """s per target, or s_r·|ŷ| for a positive target when `relative`."""
    if not relative or f.noise_relative is None:
        return np.broadcast_to(f.noise[None, :], f.center.shape)
    rel = np.isfinite(f.noise_relative)[None, :]
    return np.where(rel, np.nan_to_num(f.noise_relative)[None, :] * np.abs(f.center), f.noise[None, :])


def _reach(h: dict, how: str) -> np.ndarray:
    if how == "fit":
        return intervals.extrapolation_reach(h["X_fit"], h["P"])
    return intervals.extrapolation_reach(h["X_fit"], h["P"], h["X_ref"], products=how == "train×")


@dataclasses.dataclass(frozen=True)
class Candidate:
    folds: str  # rule, steps, rule+steps
    reach: str  # fit, train, train×
    growth: str  # none, linear, floored
    relative: bool
    models: str = "one"  # one, top4 (round 5)

    @property
    def name(self) -> str:
        noise = "s_r·ŷ" if self.relative else "s"
        models = " | top4" if self.models != "one" else ""
        return f"{self.folds} | {self.reach if self.growth != 'none' else '-'} | {self.growth} | {noise}{models}"

    @property
    def grows(self) -> bool:
        return self.growth != "none"

    def order(self) -> tuple:  # the rule's tie-break: fewer refits, then simpler
        return (("rule", "steps", "rule+steps").index(self.folds), ("fit", "train", "train×").index(self.reach),
                ("none", "linear", "floored").index(self.growth), self.relative, self.models != "one")

    def parts(self, h: dict):
        """|error|, base scale d and growth factor (1 + reach) of one fit's asked rows."""
        f = h["fitted"]
        variance = f.spread**2 + _noise(f, self.relative) ** 2
        if self.models != "one":
            variance = variance + disagreement(f.center, h["alternatives"]) ** 2
        d = np.maximum(np.sqrt(variance), 1e-12 * np.maximum(np.abs(f.center), 1e-300))
        growth = 1.0 + _reach(h, self.reach)[:, None] if self.growth != "none" else np.ones((len(d), 1))
        return np.abs(h["actual"] - f.center), d, growth

    def coverage(self, calibrate: list, check: list, level: float) -> float:
        """Fraction of `check` errors inside the interval calibrated by split conformal on `calibrate`."""
        if not calibrate or not check:
            return float("nan")
        cal = [self.parts(h) for h in calibrate]
        q1, _ = intervals.conformal_multiplier(np.concatenate([e / (d * g) for e, d, g in cal]), level)
        q0, _ = intervals.conformal_multiplier(np.concatenate([e / d for e, d, _ in cal]), level)
        inside = []
        for e, d, g in (self.parts(h) for h in check):
            half = q1[None, :] * d * g
            if self.growth == "floored":
                half = np.maximum(half, q0[None, :] * d)
            inside.append(e <= half)
        return float(np.mean(np.concatenate(inside)))


def candidates() -> list[Candidate]:
    found = []
    for folds in ("rule", "steps", "rule+steps"):
        for relative in (False, True):
            found.append(Candidate(folds, "fit", "none", relative))
            for reach in ("fit", "train", "train×"):
                for growth in ("linear", "floored"):
                    found.append(Candidate(folds, reach, growth, relative))
    found.append(Candidate("rule", "fit", "none", False, "top4"))  # round 5: the task's folds only (where alternatives are fitted)
    for growth in ("linear", "floored"):
        found.append(Candidate("rule", "fit", growth, False, "top4"))
    return found


def disagreement(center: np.ndarray, alternatives: np.ndarray) -> np.ndarray:
    """m(x) = sqrt(mean_k (ŷ_k − ŷ)²) of the alternative laws around the law's prediction (0 with none)."""
    if len(alternatives) == 0:
        return np.zeros_like(center)
    return np.sqrt(np.mean((alternatives - center[None]) ** 2, axis=0))


def _held(d: dict, folds: str) -> list:
    return d["held"]["rule"] + d["held"]["steps"] if folds == "rule+steps" else d["held"][folds]


def evaluate(datas: list[dict]) -> list[dict]:
    """Every candidate: pseudo-test coverage per task and level, and the nested check
    (calibrate on folds 2+, cover fold 1's held-out rows) where the fold set has two."""
    rows = []
    for c in candidates():
        row = {"candidate": c, "pseudo": {}, "nested": {}}
        for d in datas:
            held = _held(d, c.folds)
            row["pseudo"][d["task"]] = {lv: c.coverage(held, d["target"], lv) for lv in LEVELS}
            if c.folds != "rule+steps" and d["folds"][c.folds] >= 2:
                deeper, first = [h for h in held if h["fold"] >= 1], [h for h in held if h["fold"] == 0]
                row["nested"][d["task"]] = {lv: c.coverage(deeper, first, lv) for lv in LEVELS}
        row["pseudo_error"] = mean_error(row["pseudo"])
        row["nested_error"] = mean_error(row["nested"])
        row["within"] = sum(1 for cov in row["pseudo"].values() if TARGET[0] <= cov[0.9] <= TARGET[1])
        rows.append(row)
    return rows


TIE = 0.005


def chosen(rows: list[dict]) -> dict:
    """The decision rules of the module docstring: round 4's among single-law candidates,
    then round 5's (the models term only if it wins by more than the tie)."""
    growing = [r for r in rows if r["candidate"].grows and r["candidate"].models == "one"]
    best = min(r["pseudo_error"] for r in growing)
    round4 = min((r for r in growing if r["pseudo_error"] <= best + TIE), key=lambda r: r["candidate"].order())
    multi = [r for r in rows if r["candidate"].grows and r["candidate"].models != "one"]
    if not multi:
        return round4
    challenger = min(multi, key=lambda r: (r["pseudo_error"], r["candidate"].order()))
    nested_ok = not (challenger["nested_error"] > round4["nested_error"] + TIE)
    return challenger if challenger["pseudo_error"] < round4["pseudo_error"] - TIE and nested_ok else round4


def mean_error(by_task: dict) -> float:
    errors = [abs(c - lv) for levels in by_task.values() for lv, c in levels.items() if c == c]
    return float(np.mean(errors)) if errors else float("nan")


def write(rows: list[dict], datas: list[dict], args) -> None:
    tasks = [d["task"] for d in datas]
    short = {t: t.replace("_scaling_law", "") for t in tasks}
    pick = chosen(rows)
    lines = ["# Interval method on a pseudo-test cut from train (train only)", "",
             f"`python bench/interval_proxy.py --runs {args.runs} --resamples {args.resamples}`", "",
             "Per task: train's largest rows along the axis test extends (test's share of the rows) are a pseudo-test;",
             "the run's best law is calibrated on the rest's folds and fitted on all of the rest. Cells: pseudo-test",
             f"coverage at levels {' / '.join(str(lv) for lv in LEVELS)}. 'error': mean |coverage − level| over tasks and",
             "levels; 'nested': the same, calibrating on folds 2+ and covering fold 1 (reference only).",
             "Candidate = folds | reach | growth | noise (the module docstring defines each). Decision rule (written",
             "before measuring): among growing candidates (growth linear or floored), the smallest error; within",
             f"{TIE} of it, the fewest refits, then the simplest. Rows sorted by error.", "",
             "| candidate | " + " | ".join(short[t] for t in tasks) + " | within 80–97% at 0.9 | error | nested error |",
             "|---|" + "---|" * len(tasks) + "---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["pseudo_error"], r["candidate"].order())):
        cells = [" / ".join(f"{r['pseudo'][t][lv]:.2f}" for lv in LEVELS) for t in tasks]
        mark = " **(chosen)**" if r is pick else ""
        lines.append(f"| {r['candidate'].name}{mark} | " + " | ".join(cells) + f" | {r['within']}/{len(tasks)} | {r['pseudo_error']:.3f} | {r['nested_error']:.3f} |")
    lines += ["", f"Chosen by the rule: **{pick['candidate'].name}** (error {pick['pseudo_error']:.3f}, {pick['within']}/{len(tasks)} tasks within 80–97% at 0.9)."]
    reach = []
    for d in datas:
        parts = []
        for name in FOLD_SETS:
            fit = max(float(_reach(h, "fit").max()) for h in d["held"][name])
            train = max(float(_reach(h, "train×").max()) for h in d["held"][name])
            parts.append(f"{name} {fit:.2f}/{train:.2f}")
        target = float(np.median(np.concatenate([_reach(h, "train×") for h in d["target"]])))
        reach.append(f"{short[d['task']]}: {', '.join(parts)}; pseudo-test median {target:.2f}")
    lines += ["", "Largest reach among calibration rows, reach 'fit' / 'train×' (0: the growth term is not judged there),",
              "and the pseudo-test's median reach ('train×'):", ""] + [f"- {r}" for r in reach]
    sizes = ", ".join(f"{short[d['task']]} {sum(h['actual'].size for h in d['target'])} (folds rule {d['folds']['rule']}, steps {d['folds']['steps']}; {d['seconds']:.0f} s)" for d in datas)
    lines += ["", f"Pseudo-test points (seconds to refit at one-minute load ~{np.mean([d['load'] for d in datas]):.1f} on 2 cores): {sizes}."]
    RESULTS.write_text("\n".join(lines) + "\n" + READING)


READING = """
## How to read this

- Round 6 (2026-12-04, second session, the same runs' laws): the refits' spread. A new user's interval at 4× beyond
  their data grew with the resamples ([−20, 24], [−869, 873], [−1141, 1145] at 10, 30, 60): two of 30 refits diverged
  (−51 and −6 where the others said 2.1) and owned the standard deviation. Measured here, for the whole table:
  the standard deviation (rounds 1–5: the chosen candidate's error 0.110), the interquartile range in standard
  deviations (0.075; domain_mixture 0.45 / 0.51 → 0.68 / 0.82, the others within 0.02) and the standard deviation
  of the refits within 5 robust standard deviations of their median (0.081), each measured from its own worktree and
  cache. The interquartile range is used; the
  same candidate is chosen under each. This table is of it.
- Round 5 (2026-12-04, on new 150-iteration runs that return the same laws as round 4's): the disagreement of the
  run's next four distinct laws ('top4') was measured as a further scale. It loses by the rule written before it was
  measured (error 0.160 against 0.110; nested 0.066-0.070 against 0.088 is better, but the rule asks for both) and is
  not adopted. Where it fails: moe, covered at 0.30 / 0.31 with it and 1.00 / 1.00 without. moe's inner validation fold
  fits on one model size, where the alternative laws part widely, so the calibrated multiplier is small; at the
  pseudo-test they agree, and the small multiplier times a small disagreement gives a narrow interval. The term is not
  exchangeable between validation and the asked points, which is the assumption split conformal rests on. Round 4's
  figures here differ from round 4's own table (0.110 against 0.106 for the chosen method, domain_mixture 0.45 / 0.51
  against 0.51 / 0.69) on the same laws: they are measured with the code of 2026-12-04, and which later change
  moved them was not traced (the replicate bootstrap alters moe alone); the same method is chosen either way, tied
  with no growth at all as before.

- The rule picked the round-3 method (task folds, reach in spans of the fit rows, linear growth, absolute noise)
  with the floor added. On this pseudo-test the floored interval has the same coverage as no growth at all on every
  task (to two decimals), while linear growth alone lost 0.06–0.07 on lr_bsz at both levels: where validation
  extrapolated further than the pseudo-test, the floor is what binds.
- What the task's folds cannot judge here: with them, moe and parallel are covered 100% by every candidate. Their
  inner validation folds fit on one model size / one parallel size (reach 'fit' is 0 there), so the held-out errors
  are large and every interval is wide.
- The one-scale-at-a-time folds fit on two scales or more and show what the task's folds hide on moe: calibrated
  one size step out (fit on sizes 1–3, predict 4; fit on 1–2, predict 3), the pseudo-test (size 5 from sizes 1–4)
  is covered at only 0.30–0.54 by every candidate: on moe the law's error one step beyond train is larger than at
  the steps inside it, which no scale or growth term measured on train corrects. That is most of why those folds
  lose on error (moe's error is about 0.4 with them, 0.15 with the task's folds, which over-cover).
- Reach along products of features ('train×') is barely judged: lr_bsz's pseudo-test points are mostly not beyond
  the inner train's N·D (median reach 0), and it moves lr_bsz by at most 0.05.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(shipped_task_names()))
    parser.add_argument("--runs", default="bench/runs150")
    parser.add_argument("--resamples", type=int, default=30)
    args = parser.parse_args()
    datas = []
    for task in args.tasks.split(","):
        datas.append(collect(task, Path(args.runs), args.resamples))
        print(task, f"{datas[-1]['seconds']:.0f}s load {datas[-1]['load']:.1f}", flush=True)
    rows = evaluate(datas)
    write(rows, datas, args)
    pick = chosen(rows)
    for r in sorted(rows, key=lambda r: r["pseudo_error"]):
        print(f"{r['candidate'].name:45s} within {r['within']} error {r['pseudo_error']:.3f} nested {r['nested_error']:.3f}{'  <- chosen' if r is pick else ''}")


if __name__ == "__main__":
    main()
