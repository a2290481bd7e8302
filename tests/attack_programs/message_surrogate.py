"""Attack: a lone surrogate (and other non-ASCII) in the error message."""
# EVOLVE-BLOCK-START
import numpy as np


def fit_scaling_law(data_points, loss_values):
    raise RuntimeError("bad \udcff byte, R\u00b2 \ud800")


def scaling_law_func(data_points, params):
    return np.ones(len(data_points))
# EVOLVE-BLOCK-END
