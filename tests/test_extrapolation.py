"""The check of a law beyond the data (evolve.extrapolation): a law that reverses the data's
trend, leaves the target's sign or stops giving finite numbers past the largest train value
is said; a law that keeps the trend, and features that are no scale, are not."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from evolve.config import ScorerConfig
from evolve.extrapolation import extrapolation_warnings, probe_jobs, stored_warnings, warning_lines
from evolve.scoring.scorer import Scorer
from evolve.tasks import create_task_folder, load_task

POWER_LAW = '''
import numpy as np
from scipy.optimize import curve_fit

def fit_scaling_law(data_points, loss_values):
    n = np.asarray(data_points, dtype=float)[:, 0]
    f = lambda n, c, a, b: c + a * n ** (-b)
    return curve_fit(f, n, loss_values, p0=[1.0, 10.0, 0.2], maxfev=20000)[0]

def scaling_law_func(data_points, params):
    c, a, b = params
    return c + a * np.asarray(data_points, dtype=float)[:, 0] ** (-b)
'''

QUADRATIC_IN_LOG = '''
import numpy as np

def fit_scaling_law(data_points, loss_values):
    return np.polyfit(np.log(np.asarray(data_points, dtype=float)[:, 0]), loss_values, 2)

def scaling_law_func(data_points, params):
    return np.polyval(params, np.log(np.asarray(data_points, dtype=float)[:, 0]))
'''

LINEAR = '''
import numpy as np

def fit_scaling_law(data_points, loss_values):
    return np.polyfit(np.asarray(data_points, dtype=float)[:, 0], loss_values, 1)

def scaling_law_func(data_points, params):
    return np.polyval(params, np.asarray(data_points, dtype=float)[:, 0])
'''

NAN_BEYOND = POWER_LAW.replace("    return c + a * np.asarray(data_points, dtype=float)[:, 0] ** (-b)",
                               "    n = np.asarray(data_points, dtype=float)[:, 0]\n    return np.where(n > 3e9, np.nan, c + a * n ** (-b))")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """One feature, loss falling as a power law in model size (values computed)."""
    root = tmp_path_factory.mktemp("beyond")
    with open(root / "runs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["params", "loss"])
        for n in np.geomspace(1e7, 1e9, 12):
            writer.writerow([n, 2.0 + 50 * n ** -0.3])
    return create_task_folder(root / "task", root / "runs.csv", ["params"], ["loss"], test_column="params", test_fraction=0.2)


@pytest.fixture(scope="module")
def scorer():
    with Scorer(ScorerConfig(workers=1)) as scorer:
        yield scorer


def check(code: str, task, scorer) -> list[str]:
    return extrapolation_warnings(lambda jobs: scorer.run(code, jobs, task), task)


def test_a_law_that_keeps_the_trend_is_not_warned_about(task, scorer):
    assert check(POWER_LAW, task, scorer) == []


def test_a_law_that_turns_back_beyond_the_data_is_said(task, scorer):
    said = check(QUADRATIC_IN_LOG, task, scorer)
    assert len(said) == 1 and "loss rises from" in said[0] and "where train falls with params (Spearman -1.00)" in said[0]
    numbers = [float(word) for word in said[0].replace(",", " ").split() if word[:1].isdigit() and "x" not in word]
    low, at_low, high, at_high = numbers[0], numbers[1], numbers[2], numbers[3]
    assert high > low and at_high > at_low > task.train.X[:, 0].max() * 0.999  # beyond the data, rising


def test_a_law_that_leaves_the_target_s_sign_or_gives_no_number_is_said(task, scorer):
    linear = check(LINEAR, task, scorer)
    assert len(linear) == 1 and "a sign no train value has" in linear[0]
    assert "no finite prediction" in check(NAN_BEYOND, task, scorer)[0]


def test_features_that_are_no_scale_are_not_probed():
    mixture = load_task("domain_mixture_scaling_law")  # proportions: 100x of one means nothing
    assert probe_jobs(mixture) == ([], [])
    assert probe_jobs(load_task("easy_question_scaling_law")) == ([], [])  # a logarithm, negative in places


def test_stored_warnings_belong_to_the_checked_program_only():
    class Meta:
        def __init__(self, value):
            self.value = value

        def get_meta(self, key):
            return self.value if key == "extrapolation" else None

    archive = Meta({"program": 7, "warnings": ["group g: loss rises"]})
    assert stored_warnings(archive, 7) == ["group g: loss rises"]
    assert stored_warnings(archive, 8) is None and stored_warnings(Meta(None), 7) is None
    assert warning_lines(["x"])[1] == "  warning: x" and warning_lines([]) == []
