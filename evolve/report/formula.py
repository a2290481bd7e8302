"""The one formula a law is shown as: in `archive show`, the report, `best.py` and `Law.sympy`.

What is shown for a program is its law for one group with that group's fitted constants
in: traced from the code in the sandbox (evolve.scoring.formula_jobs) and checked there
against the program itself on a spread of the group's rows; then against the scorer's own
predictions on all of them (the program fitted there as for the stored parameters: a
program that behaves otherwise when traced is caught); and, here, with the numerical
guards that never bind on the group's rows dropped (checked to compute the same values on
every row), and its numbers rounded for reading to the fewest digits that still give the
full formula's values to 1e-4 (the full-precision expression is what `Law.sympy` returns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evolve.symbolic import CHECK_ROWS, DISPLAY_RTOL, FormulaJob, fitted_law, latex_of, rounded, same_values, values_on


@dataclass(frozen=True)
class FormulaCase:
    """What one shown formula is made from: a program, one group's constants and rows."""

    code: str
    group: str
    params: list[float]
    rows: np.ndarray  # the group's train feature rows
    fit_split: str = "test"  # where the constants were fitted: "test" (all train rows) or "validation" (without the held-out rows)


@dataclass(frozen=True)
class ShownFormula:
    """One group's law: full-precision sympy expressions, and the rounded text and LaTeX shown."""

    group: str
    expressions: tuple  # sympy, one per target, every digit of the constants
    text: tuple[str, ...]
    latex: tuple[str, ...]

    def lines(self, targets: tuple[str, ...]) -> list[str]:
        """`target = formula`, one a target."""
        return [f"{t} = {e}" for t, e in zip(targets, self.text)]

    def to_dict(self) -> dict:
        return {"group": self.group, "expressions": [str(e) for e in self.expressions], "text": list(self.text),
                "latex": list(self.latex), "verified": True}


def check_rows(rows: np.ndarray) -> np.ndarray:
    """Up to CHECK_ROWS rows spread over the group (first, last and between), so a guard or a
    branch that binds only at the extremes is checked too."""
    index = np.unique(np.linspace(0, len(rows) - 1, min(CHECK_ROWS, len(rows))).round().astype(int))
    return rows[index]


def stored_case(record, task) -> FormulaCase | None:
    """The case of a stored program: its first group (by name) with numeric stored parameters."""
    from evolve.report.export import params_source

    if not record.ok or not record.code.strip():
        return None
    _, evaluation = params_source(record)
    for group, params in sorted(evaluation.params.items()):
        rows = task.train.X[task.train.groups == group]
        if params is not None and len(rows):
            return FormulaCase(record.code, group, [float(v) for v in params], rows, evaluation.split)
    return None


def shown_formulas(cases: list[FormulaCase | None], task, scorer_config=None) -> list[ShownFormula | None]:
    """The shown formula of each case (None where it cannot be recovered and checked); one
    sandboxed child traces them all, then each is checked against the scorer's own
    predictions of the program (a program that behaves otherwise under tracing is caught)."""
    from evolve.scoring.formula_jobs import formulas_isolated, with_fit_rows

    distinct = {key(c): c for c in cases if c is not None}  # copies of a program (migrants) are traced once
    real = list(distinct.values())
    jobs = [with_fit_rows(FormulaJob(c.code, task.features, len(task.targets), len(c.params), c.params,
                                     check_rows(c.rows).tolist()), task, c.fit_split, c.group) for c in real]
    traced = dict(zip((key(c) for c in real), formulas_isolated(jobs))) if jobs else {}
    done = {k: finish(traced.get(k), c, task.features) for k, c in distinct.items()}
    for k, c in distinct.items():
        if done[k] is not None and not agrees_with_scorer(done[k], c, task, scorer_config):
            done[k] = None
    return [None if c is None else done[key(c)] for c in cases]


def agrees_with_scorer(shown: ShownFormula, case: FormulaCase, task, scorer_config=None) -> bool:
    """The full-precision formula against what the sandboxed scorer predicts for the group's
    rows, the program fitted on them as for the stored parameters (to 1e-4)."""
    from evolve.warm_scorer import shared_scorer
    from evolve.config import ScorerConfig
    from evolve.scoring.in_sandbox import GroupJob
    from evolve.status import Status

    fit_rows = task.fit_and_score_rows(case.fit_split)[0] if case.fit_split == "validation" else task.train
    mask = fit_rows.groups == case.group
    try:
        job = GroupJob(case.group, fit_rows.X[mask], fit_rows.y[mask], case.rows)
        report = shared_scorer(scorer_config or ScorerConfig(workers=2)).run(case.code, [job], task)
    except Exception:  # noqa: BLE001 - no check, no formula
        return False
    if report.status != Status.OK or case.group not in report.predictions:
        return False
    expected = np.asarray(report.predictions[case.group], dtype=float).reshape(len(case.rows), -1)
    return all(same_values(values_on(e, task.features, case.rows), expected[:, k], DISPLAY_RTOL) for k, e in enumerate(shown.expressions))


def key(case: FormulaCase) -> tuple:
    return case.code, case.group, tuple(case.params)


def finish(formula, case: FormulaCase, features: tuple[str, ...]) -> ShownFormula | None:
    if formula is None or not formula.verified:
        return None
    try:
        laws = fitted_law(formula, features, case.params, case.rows)
        if laws is None:
            return None
        shown = [rounded(law, features, case.rows) for law in laws]
    except Exception:  # noqa: BLE001 - a text the parser refuses, or sympy failing on it: no formula
        return None
    return ShownFormula(case.group, tuple(laws), tuple(str(s) for s in shown), tuple(latex_of(s, features) for s in shown))


def formulas_of_records(records: list, task, scorer_config=None) -> dict[int, ShownFormula | None]:
    """Shown formulas of stored programs by id (one trace per distinct program and group)."""
    cases = [stored_case(r, task) for r in records]
    return {r.id: f for r, f in zip(records, shown_formulas(cases, task, scorer_config))}
