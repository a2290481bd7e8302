"""Attack: return NaN and infinite parameters (predictions stay finite)."""
# EVOLVE-BLOCK-START
import numpy as np


def fit_scaling_law(data_points, loss_values):
    return [float(np.mean(loss_values)), float("nan"), float("inf"), -float("inf")]


def scaling_law_func(data_points, params):
    return np.full(len(data_points), params[0])
# EVOLVE-BLOCK-END
