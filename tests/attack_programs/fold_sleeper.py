"""Attack: sleep just under timeout_s (__SLEEP__ s) in every fit: each fold stays under
its own deadline, the candidate as a whole does not."""
# EVOLVE-BLOCK-START
import time

import numpy as np


def fit_scaling_law(data_points, loss_values):
    time.sleep(__SLEEP__)
    return [float(np.mean(loss_values))]


def scaling_law_func(data_points, params):
    return np.full(len(data_points), params[0])
# EVOLVE-BLOCK-END
