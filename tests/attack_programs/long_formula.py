"""Attack: a law whose recovered formula is a ~60 KB line (2500 tiny terms)."""
# EVOLVE-BLOCK-START
import numpy as np


def fit_scaling_law(data_points, loss_values):
    return [float(np.mean(loss_values))]


def scaling_law_func(data_points, params):
    d = data_points[:, 2] / 1e9
    out = params[0] + 0 * d
    for k in range(1, 2500):
        out = out + d ** (k * 1e-7) * 1e-30
    return out
# EVOLVE-BLOCK-END
