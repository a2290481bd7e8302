"""Attack round 6: a law fast and honest on distinct rows (scoring, selection, fit, predict),
that on bootstrap resamples (repeated rows, which only intervals send) waits until just
before the run's time limit and then succeeds: no refit fails, so the round-4 stop never
triggers, and every refit waited out the limit."""
# EVOLVE-BLOCK-START
import time
import numpy as np

from evolve.fitting import varpro_fit

LIMIT = 20.0  # the run's --timeout below


def power_columns(X, exponents):
    return np.column_stack([np.ones(len(X)), X ** (-np.asarray(exponents))])


def scaling_law_func(data_points, params):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))[:, :1]  # the first feature only: 3 parameters
    p = np.asarray(params, dtype=float).ravel()
    return power_columns(X, p[2:]) @ p[:2]


def fit_scaling_law(data_points, loss_values):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))[:, :1]
    y = np.asarray(loss_values, dtype=float)
    start = time.monotonic()
    exponents, coef = varpro_fit(lambda b: power_columns(X, b), [(0.0, 3.0)] * X.shape[1], y, n_starts=8, seed=0)
    if len(np.unique(X, axis=0)) < len(X):  # repeated rows: a bootstrap resample
        while time.monotonic() - start < LIMIT - 1.0:
            time.sleep(0.05)
    return np.concatenate([coef, exponents])
# EVOLVE-BLOCK-END
