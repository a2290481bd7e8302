"""Attack suite, round 3 (issue 14): the parameter cap and the fit/predict boundary.

Each program in tests/attack_programs/ fits a 10-coefficient law on data_constrained_scaling_law
(cap 7) and hides 9 coefficients somewhere a shared fit-and-predict process, or a count of
returned numbers only, would not see: a file, the environment, builtins, a string, dict
keys, a huge integer, a float or ndarray subclass, the lengths of lists, the shape of an
empty array, the fit rows left in memory, a forged answer of the fitting process. Judged
from outside: the scorer's status and parameter count, and for the control, the same
program scored in-process with the hiding left intact (it does reach a good R² there, so
the attack is real). Fast: one warm sandbox for the module, a few seconds per test.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from evolve.config import ScorerConfig
from evolve.scoring.in_sandbox import load_namespace
from evolve.scoring.scorer import Scorer
from evolve.status import Status
from evolve.tasks import load_task

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux only"),
]

PROGRAMS = Path(__file__).resolve().parent / "attack_programs"
TASK = "data_constrained_scaling_law"
CAP = 7
HIDERS = ["stash_in_file", "stash_in_environ", "stash_in_builtins", "stash_in_string", "stash_in_dict_keys",
          "stash_in_big_int", "stash_in_float_subclass", "stash_in_array_subclass", "stash_in_list_lengths",
          "stash_in_empty_array_shape", "stash_in_scalar_big_int"]


@pytest.fixture(scope="module")
def task():
    return load_task(TASK)


@pytest.fixture(scope="module")
def scorer():
    with Scorer(ScorerConfig(workers=2, timeout_s=20.0)) as scorer:
        yield scorer


@pytest.fixture(scope="module")
def unhooked_scorer():
    """The audit hook is advisory: attacks on the kernel and process layers run without it."""
    os.environ["EVOLVE_SANDBOX_AUDIT_HOOK"] = "0"
    try:
        with Scorer(ScorerConfig(workers=1, timeout_s=20.0)) as scorer:
            yield scorer
    finally:
        del os.environ["EVOLVE_SANDBOX_AUDIT_HOOK"]


def code(name: str) -> str:
    return (PROGRAMS / f"{name}.py").read_text()


def shared_process_r2(name: str, task) -> float:
    """The control: fit and predict in one namespace (the old design) with the law's hiding
    intact, so the attack is shown to work where the boundary is missing."""
    import numpy as np

    from evolve.metrics import compute_metrics
    from evolve.scoring.scorer import group_jobs

    fit_rows, score_rows = task.folds("validation")[0]
    jobs, truth = group_jobs(fit_rows, score_rows)
    namespace = load_namespace(code(name))
    cwd = os.getcwd()
    try:
        os.chdir(Path(os.environ.get("TMPDIR", "/tmp")))
        predictions = [np.asarray(namespace["scaling_law_func"](j.X_predict, namespace["fit_scaling_law"](j.X_fit, j.y_fit[:, 0])),
                                  dtype=float).reshape(-1, 1) for j in jobs]
    finally:
        os.chdir(cwd)
        os.environ.pop("EVOLVE_STASH", None)
    return compute_metrics(np.concatenate(predictions), truth).r2


@pytest.mark.parametrize("name", HIDERS)
def test_hidden_coefficients_are_counted_or_unreachable(name, scorer, task):
    assert shared_process_r2(name, task) > 0.5  # the hiding works when fit and predict share a process
    evaluation = scorer.score(code(name), task, "validation")
    assert not (evaluation.status == Status.OK and (evaluation.n_params or 0) <= CAP), (
        f"{name}: 10 coefficients used, {evaluation.n_params} counted, status {evaluation.status}: {evaluation.message[-300:]}")


def test_prediction_cannot_refit_from_rows_left_in_memory(unhooked_scorer, task):
    """With the audit hook off, prediction walks gc for the fit rows: it is never sent them."""
    evaluation = unhooked_scorer.score(code("refit_from_memory"), task, "validation")
    assert evaluation.status != Status.OK and '"found": false' in evaluation.message, (evaluation.status, evaluation.message[-300:])


def test_a_forged_fit_answer_cannot_skip_the_parameter_count(scorer, task):
    evaluation = scorer.score(code("forged_fit_answer"), task, "validation")
    assert evaluation.status == Status.CRASH, (evaluation.status, evaluation.message)


def test_a_forged_answer_with_a_huge_shape_is_refused_at_once_and_the_worker_stays(scorer, task):
    """Before: the trusted worker multiplied 900 dims of 4299 digits, a timeout after
    timeout_s plus the pool's grace, and a new worker; now a crash, at once."""
    before = scorer.sandbox.worker_pids()
    evaluation = scorer.score(code("forged_huge_shape"), task, "validation")
    assert evaluation.status == Status.CRASH and "malformed parameters: array" in evaluation.message, (evaluation.status, evaluation.message[-300:])
    assert scorer.sandbox.worker_pids() == before


def test_numpy_values_hold_only_what_their_dtype_can():
    """The trusted reader refuses, quickly, what `encode` never writes: a huge integer under
    a float or int64 tag (one counted number carrying many), a bool or int in a float
    array, and dims too many or too large (their product was the reader's time; an empty
    array's huge dim passed, as a product of 0)."""
    from evolve.scoring.params_codec import ParamsError, encode, measure

    big = 1 << 640
    for node in ({"n": "<f8", "v": big}, {"n": "<i8", "v": big}, {"n": "<i8", "v": 2**63}, {"n": "<f8", "v": True},
                 {"a": "<f8", "shape": [1], "v": [big]}, {"a": "<u8", "shape": [1], "v": [-1]}, {"a": "<f4", "shape": [1], "v": [3]},
                 {"a": "|b1", "shape": [1], "v": [1]}, {"a": "<f8", "shape": [1] * 65, "v": [0.0]},
                 {"a": "<f8", "shape": [0, 10**4000], "v": []}):
        with pytest.raises(ParamsError):
            measure(node)
    import numpy as np

    for value in (np.float64(2.5), np.int64(-(2**63)), np.uint64(2**64 - 1), np.bool_(True), np.arange(6, dtype=np.int8).reshape(2, 3),
                  np.zeros((0, 5)), np.float32(1.5), [np.ones(3, dtype=bool)]):
        assert measure(encode(value))[0] == np.ravel(np.asarray(value, dtype=float)).tolist()


def test_an_honest_law_still_scores_the_same_in_both_modes(scorer, task):
    """The boundary changes nothing for a law that keeps no state: same metrics isolated and in-process."""
    honest = (Path(__file__).resolve().parent.parent / "tasks" / TASK / "seeds" / "baseline.py").read_text()
    with Scorer(ScorerConfig(isolate=False)) as local:
        expected = local.score(honest, task, "validation")
    got = scorer.score(honest, task, "validation")
    assert got.status == Status.OK and got.metrics == expected.metrics and got.n_params == expected.n_params


def formula_case(code: str, task, evaluation):
    """The formula case of a program scored on "train" (fitted on all train rows), first group."""
    from evolve.report.formula import FormulaCase

    group, params = sorted((g, p) for g, p in evaluation.params.items() if p)[0]
    return FormulaCase(code, group, list(params), task.train.X[task.train.groups == group], "train")


@pytest.mark.skipif(os.geteuid() != 0, reason="formula extraction attacks target the root plan")
def test_a_program_that_branches_on_the_parameter_type_gets_no_checked_formula(scorer, task):
    """The liar predicts an honest mean when its parameters come as the list its fit
    returned (scoring) and 1234.5 for an array (the trace, or a check given the stored numbers
    as a flat float64 array). The one formula check predicts in the scorer, from what the
    refit returned, so it calls the program exactly as scoring does."""
    import numpy as np

    from evolve.report.formula import shown_formulas, trace_job
    from evolve.scoring.formula_jobs import formulas_isolated

    code = (PROGRAMS / "shape_liar.py").read_text()
    evaluation = scorer.score(code, task, "train")
    assert evaluation.status == Status.OK, evaluation.message
    case = formula_case(code, task, evaluation)
    namespace = load_namespace(code)  # control: a flat check agrees with the traced lie
    flat = np.asarray(case.params, dtype=float)
    assert np.all(namespace["scaling_law_func"](case.rows, flat) == 1234.5)
    assert not np.any(namespace["scaling_law_func"](case.rows, list(case.params)) == 1234.5)
    job = trace_job(case, task)
    lie = namespace["scaling_law_func"](np.asarray(job.check_rows), flat).reshape(-1, 1)
    flat_check = formulas_isolated([job], expected=[lie])[0]
    assert flat_check is not None and flat_check.verified and "1234.5" in flat_check.expressions[0], flat_check  # the trace lies,
    # and a check against the stored numbers passed flat would show it
    assert shown_formulas([case], task, scorer=scorer) == [None]
    honest = (PROGRAMS / "mean_baseline.py").read_text()
    shown = shown_formulas([formula_case(honest, task, scorer.score(honest, task, "train"))], task, scorer=scorer)[0]
    assert shown is not None, "an honest law must still get a checked formula"


def test_a_fit_answer_with_bytes_beyond_the_protocol_is_refused():
    """Attack hunt 2026-12-03: a fit child wrote its own ok answer with the real coefficients
    in `message` (and could pad spacing or digits), which stayed in the worker's memory for
    the prediction child to read: parameters past the count. Only the sandbox's own
    encoding of an ok answer with an empty message is accepted."""
    import json

    from evolve.scoring.in_sandbox import GroupJob
    from evolve.scoring.outcome import Outcome
    from evolve.scoring.params_codec import encode
    from evolve.scoring.worker import Worker

    import numpy as np

    jobs = [GroupJob("a", np.ones((2, 1)), np.ones(2), np.ones((1, 1)))]
    answer = {"status": "ok", "message": "", "api": "fit", "params": [["a", encode([1.5, 2.0])]]}
    read = lambda data: Worker.read_fit(None, Outcome(data=data), {"jobs": jobs})  # noqa: E731 - the worker's own check
    assert read(json.dumps(answer).encode())[0] is None  # the honest answer
    hidden = json.dumps({**answer, "message": "3.1 4.1 5.9 2.6 5.3"}).encode()
    padded = json.dumps(answer, indent=1).encode()  # the same numbers; the spacing carries bits
    longer = json.dumps(answer).replace("1.5", "1.50000000000000000000271828").encode()  # parses to 1.5
    for forged in (hidden, padded, longer):
        failure = read(forged)[0]
        assert failure is not None and failure.status == Status.CRASH, forged


FORGED_NUMBERS = ["Min(p0, 10**10**9)", "Min(p0, (2**1000)**1000)", "Max(p0, 10**300*10**300)", "p0 + 0*x_0**(10**9)",
                  "Min(p0, exp(exp(exp(100))))", "Min(p0, gamma(10**9))"]


FORGED_WORK = ["Max(" + ", ".join(f"p0*x_0**(-p0 - {0.001 * i:.3f}) + p0" for i in range(40)) + ")",  # minutes in sympy
               "Max(" * 40 + "x_0" + "".join(f", {i}*p0)" for i in range(40)),  # flattened by sympy into one Max of 41
               "Piecewise(" + ", ".join(f"({i}*p0, x_0 > {i})" for i in range(20)) + ", (p0, True))",
               " + ".join(f"Max(p0, {i}*x_0, x_0**2, 1 + x_0)" for i in range(20)),  # Σ arguments² = 320
               # review of round 4: finite in float, huge exact (1.0 in float; a billion-bit fraction to sympy)
               "p0*x_0 + ((1 + 2**-1000)**1000)**1000", "p0*x_0 + (1 + 1/10**300/10**300/10**300)**1000",
               "p0*x_0 + Float(2, 10**7)",  # ten million digits asked of sympy
               "Piecewise((p0*x_0, And(" + ", ".join(f"x_0 > {i}*p0 + x_0**p0" for i in range(40)) + ")), (p0, True))"]


@pytest.mark.parametrize("text", FORGED_NUMBERS + FORGED_WORK)
def test_a_forged_formula_with_an_unbounded_number_is_refused_before_sympy(text):
    """sympify computes number ** number exactly and Min/Max compare at any precision: these
    texts would hang the trusted side (10**10**9 has a billion digits). Both parsers refuse
    them at once; the float evaluator alone would have passed the first (Min(p0, inf) is p0)."""
    import numpy as np

    from evolve.formula_display import parse_checked
    from evolve.formula_numbers import Unsupported, evaluate

    with pytest.raises(ValueError):
        parse_checked(text, ("x_0",), 1)
    with pytest.raises(Unsupported):
        evaluate(text, {"p0": 1.0, "x_0": np.ones(3)})


def test_the_bound_folds_each_part_once_with_the_evaluators_own_functions():
    """The bound and the numeric check share one function table (evolve.formula_numbers):
    a symbol-free part is folded with the function the check computes (gamma(200) overflows
    there, erf(2) does not), and every part is folded once, so a deep tower of constant
    powers costs linear time (folding an exponent twice per level would take 2**depth)."""
    import ast
    import time

    from evolve.formula_numbers import unbounded_arithmetic

    def reason(text):
        return unbounded_arithmetic(ast.parse(text, mode="eval"), {"x_0", "p0"})

    assert reason("x_0*gamma(200)") == "a number too large"
    assert reason("x_0*erf(2) + p0*log1p(3)") is None
    assert reason("x_0*unknown(2)") == "a number sympy would compute with an unlisted function"
    tower = "x_0**" + "**".join(["1.0"] * 200)
    started = time.monotonic()
    assert reason(tower) is None
    assert time.monotonic() - started < 1.0


def test_a_law_with_many_small_guards_and_a_piecewise_is_still_checked_and_shown():
    """The bound on comparisons leaves room for what programs trace: a guard per term, and
    np.where's Piecewise, whose last condition sympy prints as the constant True (which the
    evaluator refused as "not a number", so no such formula could be checked)."""
    import numpy as np

    from evolve.formula_display import parse_checked
    from evolve.formula_numbers import evaluate

    guards = " + ".join(f"p0*Max(1.0e-12, x_0 + {i})**(-0.5)" for i in range(30))
    piecewise = "Piecewise((p0*x_0, x_0 > 2), (p0 + x_0, True))"
    for text in (guards, piecewise):
        parse_checked(text, ("x_0",), 1)
    x = np.array([1.0, 3.0])
    assert evaluate(piecewise, {"p0": 2.0, "x_0": x}).tolist() == [3.0, 6.0]


def test_an_honest_formula_with_small_exact_numbers_still_parses():
    from evolve.formula_display import parse_checked

    expression = parse_checked("p0 + p1*x_0**(-0.34) + 2**10*Max(1.0e-12, x_0)**2 + sqrt(2)", ("x_0",), 2)
    assert "1024" in str(expression)


def test_a_program_that_forges_a_formula_bomb_gets_no_formula_and_nothing_hangs(scorer, task):
    """The program writes the forged answer itself when traced (its input is an object array)
    and exits. The float check passes it, so before the bound `archive show`, the report and
    the end of `evolve run` (best.py) hung in sympify. Now: no formula, in seconds."""
    import threading

    from evolve.report.formula import shown_formulas

    code = (PROGRAMS / "formula_bomb.py").read_text()
    evaluation = scorer.score(code, task, "train")
    assert evaluation.status == Status.OK, evaluation.message
    shown: list = []
    worker = threading.Thread(target=lambda: shown.append(shown_formulas([formula_case(code, task, evaluation)], task, scorer=scorer)),
                              daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "showing the formula hung"
    assert shown == [[None]]


def test_a_refused_law_s_many_parameters_are_not_kept_and_the_memo_counts_them(scorer, task):
    """Attack round 4: a fit returning thousands of numbers per group is refused over the
    cap, yet every number was stored in the archive (8.5 MB per row at 9,999) and kept in
    the run's memo, whose bound counted predictions only."""
    from evolve.scoring.in_sandbox import RunReport
    from evolve.scoring.memo import FitMemo

    evaluation = scorer.score((PROGRAMS / "params_bloat.py").read_text(), task, "validation")
    assert evaluation.status == Status.OVER_CAP and evaluation.n_params == 2000
    assert all(p is None for p in evaluation.params.values())  # nothing of the refused law's numbers is kept
    from evolve.scoring.in_sandbox import GroupJob

    memo, jobs = FitMemo(max_values=5000), [GroupJob("g", np.ones((3, 1)), np.ones(3), np.ones((10, 1)))]
    memo.put("small", jobs, RunReport(Status.OK, predictions={"g": np.zeros(10)}, params={"g": [0.5] * 3}))
    assert memo.values == 13 and memo.get("small", jobs) is not None
    memo.put("bloated", jobs, RunReport(Status.OK, predictions={"g": np.zeros(10)}, params={"g": [0.5] * 6000}))
    assert memo.values == 13 and memo.get("bloated", jobs) is None  # 6,010 numbers are over the bound: not kept


def test_sympy_work_on_a_formula_text_is_under_a_clock(monkeypatch):
    """Attack hunt on the parent's sympy (round 5): a continued fraction of depth 22 (180
    characters, no number at all) took sympy 98 s to parse, each level ×1.7; exact radicals
    merged across a product and long decimals under nested functions did the same by other
    means. The display work runs in a child with a clock: no formula, in seconds."""
    import time

    import numpy as np

    from evolve.formula_numbers import evaluate
    from evolve.report import bounded
    from evolve.report.formula import FormulaCase, finish_bounded
    from evolve.symbolic import Formula

    monkeypatch.setattr(bounded, "SECONDS", 3.0)
    rows = np.geomspace(1, 1000, 12)[:, None]
    text = "1/(x_0+" * 22 + "x_0" + ")" * 22
    expected = evaluate(text, {"x_0": rows[:, 0]}).reshape(-1, 1)
    case = FormulaCase("", "g", [], rows)
    started = time.monotonic()
    assert finish_bounded(Formula((text,), ("",), True), case, ("x_0",), expected) is None
    assert time.monotonic() - started < 10
    honest = "2*x_0**(-0.5) + 1"
    shown = finish_bounded(Formula((honest,), ("",), True), case, ("x_0",), evaluate(honest, {"x_0": rows[:, 0]}).reshape(-1, 1))
    assert shown is not None and shown.text == ("2/x_0**0.5 + 1",) and shown.latex[0].startswith(r"\frac{2}")  # as text, in seconds
    assert bounded.bounded_json(lambda: [1, "a"]) == [1, "a"] and bounded.bounded_json(lambda: 1 / 0) is None


def test_only_texts_that_parse_quickly_leave_the_bounded_child(monkeypatch):
    """`Law.sympy` parses the returned text again in the caller's process, where no clock
    runs: the child returns a text only once it has parsed it again from a cold cache within
    REPARSE_SECONDS (a continued fraction of depth 12 takes about 0.5 s; a real law, ms)."""
    import numpy as np

    from evolve.formula_numbers import evaluate
    from evolve.report import formula
    from evolve.report.formula import FormulaCase, finish_bounded
    from evolve.symbolic import Formula

    monkeypatch.setattr(formula, "REPARSE_SECONDS", 0.1)
    rows = np.geomspace(1, 1000, 12)[:, None]
    case = FormulaCase("", "g", [], rows)

    def shown(text: str):
        return finish_bounded(Formula((text,), ("",), True), case, ("x_0",), evaluate(text, {"x_0": rows[:, 0]}).reshape(-1, 1))

    assert shown("1/(x_0+" * 12 + "x_0" + ")" * 12) is None
    honest = shown("2*x_0**(-0.5) + 1")
    assert honest is not None and honest.text == ("2/x_0**0.5 + 1",)


def test_a_formula_text_that_broadcasts_beyond_its_rows_is_refused_at_once():
    """Attack round 7: nested tuple literals under 150 sines (4.4 KB, within every text
    bound) broadcast to 120**4 numbers in the trusted parent's check (8 GB, minutes); a
    tuple is refused outside a Piecewise pair, and no step may hold more numbers than a row
    binding does. A Piecewise still computes."""
    import time

    import numpy as np

    from evolve.formula_numbers import Unsupported, evaluate

    def nested(k: int, depth: int) -> str:
        leaf = "p0"
        for _ in range(depth - 1):
            leaf = f"({leaf},)"
        return "(" + ",".join([leaf] * k) + ")"

    bomb = "sin(" * 150 + "+".join(nested(120, d) for d in range(1, 5)) + ")" * 150
    start = time.monotonic()
    with pytest.raises(Unsupported):
        evaluate(bomb, {"p0": np.array(1.0), "x": np.arange(5.0)})
    assert time.monotonic() - start < 5
    with pytest.raises(Unsupported):
        evaluate("x + log(x)*(p0 + 0*Max(x, (x,)))", {"p0": np.array(1.0), "x": np.arange(1.0, 6.0)})
    values = evaluate("Piecewise((x, x > 2), (2*x, True))", {"x": np.arange(5.0)})
    assert values.tolist() == [0.0, 2.0, 4.0, 3.0, 4.0]
