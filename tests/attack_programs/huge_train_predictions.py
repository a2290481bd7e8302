"""Attack: a sound law on validation and test, but +-1e308 on the rows it was fitted on
(the report's in-sample fit and parity plot)."""
# EVOLVE-BLOCK-START
import numpy as np

_SEEN = {}


def fit_scaling_law(data_points, loss_values):
    _SEEN["fit"] = np.asarray(data_points, float).copy()
    y = np.asarray(loss_values, float)
    return [float(np.mean(y))]


def scaling_law_func(data_points, params):
    X = np.asarray(data_points, float)
    fit = _SEEN.get("fit")
    if fit is not None and X.shape == fit.shape and np.array_equal(X, fit):
        return np.where(np.arange(len(X)) % 2 == 0, 1e308, -1e308)
    return np.full(len(X), params[0])
# EVOLVE-BLOCK-END
