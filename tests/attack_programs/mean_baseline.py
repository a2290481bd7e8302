"""Control: predicts the mean of the rows it fits on (what ipc_store_rows does without a leak)."""
# EVOLVE-BLOCK-START
import numpy as np


def fit_scaling_law(data_points, loss_values):
    return [float(np.mean(loss_values))]


def scaling_law_func(data_points, params):
    return np.full(len(data_points), params[0])
# EVOLVE-BLOCK-END
