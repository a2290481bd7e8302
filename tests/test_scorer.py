"""The scorer through the sandbox: split sizes, metrics computed in the parent from the
returned predictions, a good law scores well, and isolated and in-process scoring agree."""

from __future__ import annotations

import numpy as np
import pytest

from evolve.config import ScorerConfig
from evolve.metrics import compute_metrics
from evolve.scoring.scorer import Scorer
from evolve.tasks import load_task, validation_mask

RECTIFIED_LAW = """
import numpy as np
from scipy.optimize import least_squares

def scaling_law_func(data_points, params):
    b, dl, beta, e = params
    d = np.asarray(data_points, dtype=float)[:, 0]
    return e + np.exp(b) / (np.exp(dl) + np.power(d, beta))

def fit_scaling_law(data_points, loss_values):
    y = np.asarray(loss_values, dtype=float)
    best, best_cost = None, np.inf
    for dl in (2.0, 8.0):
        start = np.array([np.log(max(y.max() - y.min(), 1e-3)) + dl, dl, 0.5, 0.8 * y.min()])
        fit = least_squares(lambda p: scaling_law_func(data_points, p) - y, start,
                            bounds=([-20, -20, 0.0, 0.0], [60, 40, 3.0, y.min()]), max_nfev=200)
        if fit.cost < best_cost:
            best, best_cost = fit.x, fit.cost
    return best
"""

GROUP_MEAN = """
import numpy as np

def fit_scaling_law(data_points, loss_values):
    return [float(np.mean(loss_values))]

def scaling_law_func(data_points, params):
    return np.full(len(data_points), params[0])
"""

FIXED_LOG_LAW = """
import numpy as np

def fit_scaling_law(data_points, loss_values):
    return [5.0, -0.25]

def scaling_law_func(data_points, params):
    return params[0] + params[1] * np.log(data_points[:, 0])
"""

RAISES = "def fit_scaling_law(x, y):\n    raise RuntimeError('no fit')\n\ndef scaling_law_func(x, p):\n    return x\n"
DIES = "import os\n\ndef fit_scaling_law(x, y):\n    os._exit(1)\n\ndef scaling_law_func(x, p):\n    return x\n"
TOO_MANY_PARAMS = GROUP_MEAN.replace("return [float(np.mean(loss_values))]", "return [float(np.mean(loss_values))] * 5")


@pytest.fixture(scope="module")
def task():
    return load_task("sft_scaling_law")


@pytest.fixture(scope="module")
def isolated():
    with Scorer(ScorerConfig(workers=2, timeout_s=30.0, memory_mb=1024)) as scorer:
        yield scorer


@pytest.fixture(scope="module")
def in_process():
    with Scorer(ScorerConfig(isolate=False)) as scorer:
        yield scorer


def scored_rows_in_group_order(task, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and targets of the scored rows, grouped in sorted group order, computed here
    independently of the scorer's own job building."""
    _, rows = task.fit_and_score_rows(split)
    order = np.concatenate([np.flatnonzero(rows.groups == g) for g in sorted(set(rows.groups.tolist()))])
    return rows.X[order], rows.y[order]


@pytest.mark.parametrize("split", ["validation", "test", "train"])
def test_each_split_scores_its_rows(isolated, task, split):
    expected_rows = {"validation": int(validation_mask(task.train, task.features, task.validation).sum()), "test": len(task.test), "train": len(task.train)}
    evaluation = isolated.score(GROUP_MEAN, task, split)
    assert evaluation.ok, evaluation.message
    assert evaluation.split == split
    assert evaluation.predictions.shape == (expected_rows[split], 1)
    assert evaluation.n_params == 1


@pytest.mark.parametrize("split", ["validation", "test"])
def test_metrics_are_those_of_the_returned_predictions(isolated, task, split):
    evaluation = isolated.score(FIXED_LOG_LAW, task, split)
    X, truth = scored_rows_in_group_order(task, split)
    expected = 5.0 - 0.25 * np.log(X[:, 0])
    np.testing.assert_allclose(evaluation.predictions[:, 0], expected, rtol=0, atol=1e-12)
    reference = compute_metrics(expected, truth)
    for name in ("r2", "nmse", "nmae", "combined_score"):
        assert abs(getattr(evaluation.metrics, name) - getattr(reference, name)) <= 1e-12


def test_a_good_power_law_scores_well_through_the_sandbox(isolated, task):
    evaluation = isolated.score(RECTIFIED_LAW, task, "validation")
    assert evaluation.ok, evaluation.message
    assert evaluation.metrics.r2 > 0.9
    assert evaluation.n_params == 4


@pytest.mark.parametrize("program", [RECTIFIED_LAW, GROUP_MEAN, FIXED_LOG_LAW, RAISES, TOO_MANY_PARAMS],
                         ids=["rectified", "mean", "fixed", "raises", "over_cap"])
def test_isolated_and_in_process_scoring_agree(isolated, in_process, task, program):
    a = isolated.score(program, task, "validation")
    b = in_process.score(program, task, "validation")
    assert a.status == b.status
    assert a.metrics.to_dict() == b.metrics.to_dict()
    assert a.params == b.params
    if a.predictions is not None or b.predictions is not None:
        assert np.array_equal(a.predictions, b.predictions)


def test_failures_rank_below_every_success(isolated, task):
    for program, status in ((RAISES, "exception"), (DIES, "crash"), (TOO_MANY_PARAMS, "over_cap")):
        evaluation = isolated.score(program, task, "validation")
        assert evaluation.status == status
        assert evaluation.rank_r2 == -1.0
    assert "RuntimeError: no fit" in isolated.score(RAISES, task, "validation").message


def test_submitted_programs_score_like_sequential_ones(isolated, task):
    programs = [GROUP_MEAN, FIXED_LOG_LAW, RAISES, DIES] * 2
    futures = [isolated.submit(p, task, "validation") for p in programs]
    results = [f.result(timeout=60) for f in futures]
    for program, result in zip(programs, results):
        sequential = isolated.score(program, task, "validation")
        assert (result.status, result.metrics.to_dict()) == (sequential.status, sequential.metrics.to_dict())


FAILS_ON_SMALL_FITS = GROUP_MEAN.replace(
    "    return [float(np.mean(loss_values))]",
    "    if len(loss_values) < 120:\n        raise ValueError('too few rows')\n    return [float(np.mean(loss_values))]",
)


def test_validation_with_two_folds_averages_them_and_fails_if_either_fails(isolated):
    task = load_task("data_constrained_scaling_law")
    evaluation = isolated.score(FIXED_LOG_LAW, task, "validation")
    assert evaluation.ok, evaluation.message
    per_fold = []
    for fit_rows, scored in task.folds("validation"):
        per_fold.append(compute_metrics(5.0 - 0.25 * np.log(scored.X[:, 0]), scored.y))
    assert abs(evaluation.metrics.r2 - (1 - np.mean([m.nmse for m in per_fold]))) <= 1e-12
    assert evaluation.predictions.shape == (len(task.folds("validation")[0][1]), 1)  # the first fold's rows
    assert isolated.score(FAILS_ON_SMALL_FITS, task, "test").ok  # fits on all 161 train rows
    failed = isolated.score(FAILS_ON_SMALL_FITS, task, "validation")  # fold 2 fits on fewer than 120
    assert failed.status == "exception" and "too few rows" in failed.message
