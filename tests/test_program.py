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
