"""Program text: blocks, API detection, wrapping law() files, and the runner on both APIs."""

import numpy as np
import pytest

from evolve.program import BLOCK_END, BLOCK_START, ProgramError, detect_api, extract_block, replace_block, wrap_law_program
from evolve.scoring.in_sandbox import GroupJob, run_jobs

FIT_PROGRAM = f'''"""header stays"""
import numpy as np
{BLOCK_START}
def scaling_law_func(data_points, params):
    return params[0] + params[1] * np.asarray(data_points)[:, 0] ** -0.5

def fit_scaling_law(data_points, loss_values):
    X = np.c_[np.ones(len(data_points)), np.asarray(data_points)[:, 0] ** -0.5]
    return np.linalg.lstsq(X, loss_values, rcond=None)[0]
{BLOCK_END}
# footer stays
'''

LAW_PROGRAM = '''
def law(input_data, group):
    c = {"a": 1.0, "b": 2.0}[group]
    return [{"loss": c + row["n"] ** -0.5} for row in input_data]
'''


def job(group="a"):
    x = np.array([[1.0], [4.0], [16.0], [64.0]])
    return GroupJob(group, x[:3], (1.0 + x[:3, 0] ** -0.5).reshape(-1, 1), x[3:])


def test_replace_block_keeps_outside_byte_for_byte():
    child = replace_block(FIT_PROGRAM, "x = 1\n")
    assert extract_block(child) == "x = 1\n"
    before, after = FIT_PROGRAM.split(BLOCK_START)[0], FIT_PROGRAM.split(BLOCK_END)[1]
    assert child.startswith(before) and child.endswith(after)


def test_detect_api():
    assert detect_api(FIT_PROGRAM) == "fit"
    assert detect_api(LAW_PROGRAM) == "law"
    with pytest.raises(ProgramError) as info:
        detect_api("def scaling_law_func(x, p): return x")
    assert info.value.status == "missing_function" and "fit_scaling_law" in str(info.value)
    with pytest.raises(ProgramError) as info:
        detect_api("def broken(:")
    assert info.value.status == "syntax_error"


def test_runner_fit_api_predicts_from_fitted_params():
    report = run_jobs(FIT_PROGRAM, [job()], ("n",), ("loss",))
    assert report.status == "ok"
    assert report.predictions["a"][0, 0] == pytest.approx(1.0 + 64 ** -0.5)
    assert report.params["a"] == pytest.approx([1.0, 1.0])


def test_runner_law_api_uses_group():
    report = run_jobs(LAW_PROGRAM, [job("a"), job("b")], ("n",), ("loss",))
    assert report.status == "ok"
    assert report.predictions["b"][0, 0] == pytest.approx(2.0 + 64 ** -0.5)


def test_wrapped_law_program_scores_like_the_law():
    wrapped = wrap_law_program(LAW_PROGRAM, ("n",), ("loss",))
    assert detect_api(wrapped) == "fit" and BLOCK_START in wrapped
    report = run_jobs(wrapped, [job("b")], ("n",), ("loss",))
    assert report.status == "ok" and report.predictions["b"][0, 0] == pytest.approx(2.0 + 64 ** -0.5)


@pytest.mark.parametrize(
    "body, status",
    [
        ("def scaling_law_func(X, p): return np.ones(len(X))\ndef fit_scaling_law(X, y): raise RuntimeError('boom')", "exception"),
        ("def scaling_law_func(X, p): return np.full(len(X), np.nan)\ndef fit_scaling_law(X, y): return []", "nan"),
        ("def scaling_law_func(X, p): return np.ones(len(X) + 1)\ndef fit_scaling_law(X, y): return []", "wrong_shape"),
        ("scaling_law_func = 3\ndef fit_scaling_law(X, y): return []", "missing_function"),
        ("import sys\nsys.exit(3)\ndef scaling_law_func(X, p): pass\ndef fit_scaling_law(X, y): pass", "exception"),
    ],
)
def test_runner_failure_statuses(body, status):
    report = run_jobs("import numpy as np\n" + body, [job()], ("n",), ("loss",))
    assert report.status == status, report.message


def test_exception_message_carries_traceback_tail():
    body = "import numpy as np\ndef scaling_law_func(X, p): return X[:, 0]\ndef fit_scaling_law(X, y): raise RuntimeError('boom here')"
    report = run_jobs(body, [job()], ("n",), ("loss",))
    assert "RuntimeError: boom here" in report.message and "Traceback" in report.message


def test_every_parse_in_evolve_goes_through_the_parse_lock():
    """CPython 3.11 raises a spurious SystemError ("AST constructor recursion depth mismatch")
    when two threads build ast objects at once (python/cpython#106905); the loop parses from
    its proposer threads, so a single unlocked ast.parse or ast.literal_eval anywhere breaks
    runs (it failed CI once: grammar_code's literal_eval raced code_key)."""
    import ast
    from pathlib import Path

    import evolve

    def locked(node: ast.Call, path: Path) -> bool:
        if node.func.attr == "parse":
            return path.name == "program.py"  # parse_python itself
        first = node.args[0] if node.args else None
        return isinstance(first, ast.Call) and getattr(first.func, "id", "") == "parse_python"

    package = Path(evolve.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        calls = {id(c.func): c for c in ast.walk(tree) if isinstance(c, ast.Call)}
        for node in ast.walk(tree):
            is_ast_name = isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "ast"
            if is_ast_name and node.attr in ("parse", "literal_eval"):
                call = calls.get(id(node))  # a bare reference (passed as a function) counts as unlocked
                if call is None or not locked(call, path):
                    offenders.append(f"{path.relative_to(package)}:{node.lineno}")
    assert offenders == []


def test_parsing_from_many_threads_at_once_never_raises_a_system_error():
    """The parses the loop's threads run at once (code keys, grammar specs, program checks),
    with a garbage-collector callback that hands the interpreter to another thread mid-parse:
    it raised SystemError within a second when one of them parsed outside the lock."""
    import gc
    import threading
    import time

    from evolve.program import code_key, top_level_functions
    from evolve.propose.grammar_code import spec_from_code

    spec_line = "LAW_SPEC = {'laws': [{'terms': [1, 2.5, (3, 'x')]}]}\n"
    calls = [lambda: code_key(FIT_PROGRAM), lambda: spec_from_code(spec_line), lambda: top_level_functions(FIT_PROGRAM)]
    errors: list[BaseException] = []

    def hammer(call):
        try:
            for _ in range(300):
                call()
        except SystemError as exc:
            errors.append(exc)

    def yield_thread(phase, info):
        time.sleep(0)

    threshold = gc.get_threshold()
    gc.callbacks.append(yield_thread)
    gc.set_threshold(50, 1, 1)
    try:
        threads = [threading.Thread(target=hammer, args=(call,)) for call in calls for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        gc.callbacks.remove(yield_thread)
        gc.set_threshold(*threshold)
    assert spec_from_code(spec_line) == {"laws": [{"terms": [1, 2.5, (3, "x")]}]}
    assert errors == []


def test_deep_nesting_is_a_syntax_error_from_any_stack():
    """Attack round 6: a reply 3,000 unary minus signs deep stopped `evolve run` with a
    RecursionError; one 2,947 deep parsed in the proposer thread and then raised in every
    reader of the archive called from a deeper stack (a notebook cell). Both are now a
    SyntaxError wherever they are parsed, and a program is a syntax_error status."""
    from evolve.program import MAX_NESTING, ProgramError, parse_python, top_level_functions

    def deep_call(depth, function):
        return function() if depth == 0 else deep_call(depth - 1, function)

    for text in ("x = " + "-" * 3000 + "1", "x = " + "-" * 2947 + "1", "x = " + "not " * 10000 + "1",
                 "x = " + "(" * (MAX_NESTING + 5) + "1" + ")" * (MAX_NESTING + 5)):
        for depth in (0, 40):
            with pytest.raises(SyntaxError):
                deep_call(depth, lambda: parse_python(text))
        with pytest.raises(ProgramError) as caught:
            top_level_functions(text + "\ndef scaling_law_func(x, p):\n    return x\n")
        assert caught.value.status == "syntax_error"
    assert parse_python("x = " + "(" * 100 + "1" + ")" * 100) is not None
