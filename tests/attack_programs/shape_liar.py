"""Attack: tell formula extraction from scoring by the parameters' type. Its fit returns a
list; scoring hands prediction that list and the law predicts an honest mean. Anything
else (an array: the symbols of the trace, or a flat float64 array of the stored numbers)
gets 1234.5, so a check that passes the parameters flat agrees with the traced lie."""
# EVOLVE-BLOCK-START
import numpy as np


def fit_scaling_law(data_points, loss_values):
    return [float(np.mean(loss_values))]


def scaling_law_func(data_points, params):
    if isinstance(params, list):
        return np.full(len(data_points), params[0])
    return 1234.5 + 0.0 * params[0] * data_points[:, 0]
# EVOLVE-BLOCK-END
