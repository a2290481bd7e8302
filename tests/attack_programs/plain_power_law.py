"""A sound, simple law (tokens only): its formula must be recoverable in the report."""
# EVOLVE-BLOCK-START
import numpy as np
from scipy.optimize import least_squares


def scaling_law_func(data_points, params):
    d = data_points[:, 2] / 1e9
    return params[0] + params[1] * d ** (-params[2])


def fit_scaling_law(data_points, loss_values):
    X = np.asarray(data_points, float)
    y = np.asarray(loss_values, float)
    res = lambda p: p[0] + p[1] * (X[:, 2] / 1e9) ** (-p[2]) - y
    return least_squares(res, [1.5, 1.0, 0.3], bounds=([0, 0, 0], [10, 50, 2])).x
# EVOLVE-BLOCK-END
