"""The one formula a law is shown as: in `archive show`, the report, `best.py` and `Law.sympy`.

What is shown for a program is its law for one group with that group's fitted constants
in: traced from the code in the sandbox (evolve.scoring.formula_jobs), and checked once,
against the program as scoring calls it: the scorer (the run's own warm pool when a run
writes best.py) refits it on the rows its stored parameters came from, which must give
those parameters, and predicts the group's rows from what that fit returned. The traced
formula must reproduce those predictions on a spread of the rows (a program that behaves
otherwise when traced is caught), and the shown one, with the numerical guards that never
bind on the group's rows dropped, on every row; its numbers are rounded for reading to the
fewest digits that still give the full formula's values to 1e-4 (the full-precision
expression is what `Law.sympy` returns). The sympy work runs in a child with a clock
(evolve.report.bounded): the text came from a process that ran candidate code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from evolve.formula_display import DISPLAY_RTOL, fitted_law, rounded, same_values, values_on
from evolve.symbolic import CHECK_ROWS, FormulaJob, latex_of


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
    """One group's law as text: full-precision expressions, and the rounded text and LaTeX shown."""

    group: str
    expressions: tuple  # one per target, every digit of the constants (sympy's text; `Law.sympy` parses it)
    text: tuple[str, ...]
    latex: tuple[str, ...]

    def lines(self, targets: tuple[str, ...]) -> list[str]:
        """`target = formula`, one a target."""
        return [f"{t} = {e}" for t, e in zip(targets, self.text)]

    def to_dict(self) -> dict:
        return {"group": self.group, "expressions": list(self.expressions), "text": list(self.text),
                "latex": list(self.latex), "verified": True}


def stored_case(record, task) -> FormulaCase | None:
    """The case of a stored program: its first group (by name) with numeric stored parameters,
    with all of that group's train rows (the formula is checked on every one of them)."""
    from evolve.report.export import params_source

    if not record.ok or not record.code.strip():
        return None
    _, evaluation = params_source(record)
    for group, params in sorted(evaluation.params.items()):
        rows = task.train.X[task.train.groups == group]
        if params is not None and len(rows):
            return FormulaCase(record.code, group, [float(v) for v in params], rows, evaluation.split)
    return None


def shown_formulas(cases: list[FormulaCase | None], task, scorer_config=None, scorer=None) -> list[ShownFormula | None]:
    """The shown formula of each case (None where it cannot be recovered and checked).

    One check, against the program as scoring calls it: `scorer` (the run's warm pool when a
    run writes best.py; else the session's shared one for `scorer_config`) refits each program
    on the rows its stored parameters were fitted on, which must give those parameters, and
    predicts the group's rows from what the fit returned. One sandboxed child traces every
    program (evolve.scoring.formula_jobs); the traced formula must reproduce those predictions
    on a spread of the rows, and the shown one, guards dropped, on all of them."""
    from evolve.scoring.formula_jobs import formulas_isolated

    distinct = {key(c): c for c in cases if c is not None}  # copies of a program (migrants) are traced once
    expected = scorer_predictions(list(distinct.values()), task, scorer or default_scorer(scorer_config))
    real = [c for k, c in distinct.items() if expected.get(k) is not None]
    jobs = [trace_job(c, task) for c in real]
    checks = [expected[key(c)][spread(c.rows)] for c in real]
    traced = dict(zip((key(c) for c in real), formulas_isolated(jobs, expected=checks))) if jobs else {}
    done = {k: finish_bounded(traced.get(k), c, task.features, expected.get(k)) for k, c in distinct.items()}
    return [None if c is None else done[key(c)] for c in cases]


def finish_bounded(formula, case: FormulaCase, features: tuple[str, ...], expected: np.ndarray | None) -> ShownFormula | None:
    """`shown_texts` in a child with a clock (evolve.report.bounded): the text came from a
    process that ran candidate code, and sympy can take without bound on small texts."""
    if formula is None or not formula.verified or expected is None:
        return None
    from evolve.report.bounded import bounded_json

    reply = bounded_json(lambda: shown_texts(formula, case, features, expected))
    if not (isinstance(reply, list) and len(reply) == 3 and all(isinstance(part, list) for part in reply)
            and all(isinstance(t, str) for part in reply for t in part)):
        return None
    return ShownFormula(case.group, tuple(reply[0]), tuple(reply[1]), tuple(reply[2]))


def trace_job(case: FormulaCase, task) -> FormulaJob:
    """The formula sandbox's job for a case: its program, and the spread of rows its traced
    formula is checked on with the group's constants."""
    return FormulaJob(case.code, task.features, len(task.targets), len(case.params), case.params,
                      case.rows[spread(case.rows)].tolist())


def default_scorer(scorer_config=None):
    """The session's shared warm pool (outside a run: `archive show`, the report, the API)."""
    from evolve.config import ScorerConfig
    from evolve.warm_scorer import shared_scorer

    return shared_scorer(scorer_config or ScorerConfig(workers=2))


def spread(rows: np.ndarray) -> np.ndarray:
    """Indices of up to CHECK_ROWS rows spread over the group (first, last and between), so a
    guard or a branch that binds only at the extremes is checked on the traced formula too."""
    return np.unique(np.linspace(0, len(rows) - 1, min(CHECK_ROWS, len(rows))).round().astype(int))


def scorer_predictions(cases: list[FormulaCase], task, scorer) -> dict[tuple, np.ndarray | None]:
    """Per case, the (rows, targets) predictions the sandboxed scorer makes for the group's
    rows with the program refitted on the rows its stored parameters were fitted on; None
    where that fails or the refit does not give the stored parameters (to 1e-6)."""
    from concurrent.futures import ThreadPoolExecutor

    def predict(case: FormulaCase) -> np.ndarray | None:
        from evolve.scoring.in_sandbox import GroupJob
        from evolve.status import Status

        fit_rows = task.fit_and_score_rows(case.fit_split)[0] if case.fit_split in ("validation", "test", "train") else task.train
        mask = fit_rows.groups == case.group
        try:
            report = scorer.run(case.code, [GroupJob(case.group, fit_rows.X[mask], fit_rows.y[mask], case.rows)], task)
        except Exception:  # noqa: BLE001 - no check, no formula
            return None
        refit = np.asarray(report.params.get(case.group) or [], dtype=float) if report.status == Status.OK else None
        stored = np.asarray(case.params, dtype=float)
        if refit is None or case.group not in report.predictions or refit.shape != stored.shape \
                or not np.allclose(refit, stored, rtol=1e-6, atol=1e-12):
            return None
        return np.asarray(report.predictions[case.group], dtype=float).reshape(len(case.rows), -1)

    workers = max(1, min(len(cases), int(getattr(scorer.config, "workers", 1) or 1)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="formula-check") as executor:
        return dict(zip((key(c) for c in cases), executor.map(predict, cases)))


def agrees_on_every_row(laws: list, expected: np.ndarray, features: tuple[str, ...], rows: np.ndarray) -> bool:
    """The full-precision formula against the scorer's predictions on every row (to 1e-4)."""
    return all(same_values(values_on(e, features, rows), expected[:, k], DISPLAY_RTOL) for k, e in enumerate(laws))


def key(case: FormulaCase) -> tuple:
    return case.code, case.group, tuple(case.params)


REPARSE_SECONDS = 2.0  # a real law's text parses in milliseconds


def parses_quickly(expressions: list[str], features: tuple[str, ...]) -> bool:
    """Whether the full-precision texts parse again within REPARSE_SECONDS from a cold sympy
    cache. `Law.sympy` parses them in the caller's process (a notebook), where no clock runs:
    only texts shown here to parse quickly leave the bounded child, so that call is bounded too."""
    from sympy.core.cache import clear_cache

    from evolve.formula_display import parse_checked

    clear_cache()
    start = time.monotonic()
    for text in expressions:
        parse_checked(text, features, 0)
    return time.monotonic() - start <= REPARSE_SECONDS


def shown_texts(formula, case: FormulaCase, features: tuple[str, ...], expected: np.ndarray) -> list[list[str]] | None:
    """[full-precision expressions, rounded texts, LaTeX] of the group's law, one per target:
    constants in, guards dropped, checked against the scorer's predictions on every row;
    None when any step fails or disagrees. Runs sympy on the text: `finish_bounded` runs it."""
    try:
        laws = fitted_law(formula, features, case.params, case.rows)
        if laws is None or not agrees_on_every_row(laws, expected, features, case.rows):
            return None
        shown = [rounded(law, features, case.rows) for law in laws]
        expressions = [str(law) for law in laws]
        if not parses_quickly(expressions, features):
            return None
        return [expressions, [str(s) for s in shown], [latex_of(s, features) for s in shown]]
    except Exception:  # noqa: BLE001 - a text the parser refuses, or sympy failing on it: no formula
        return None


def formulas_of_records(records: list, task, scorer_config=None, scorer=None) -> dict[int, ShownFormula | None]:
    """Shown formulas of stored programs by id (one trace per distinct program and group)."""
    cases = [stored_case(r, task) for r in records]
    return {r.id: f for r, f in zip(records, shown_formulas(cases, task, scorer_config, scorer))}
