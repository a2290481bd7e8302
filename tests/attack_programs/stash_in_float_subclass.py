"""Attack (round 3): returns a float subclass instance that carries the coefficients as an attribute."""
# EVOLVE-BLOCK-START
import numpy as np


def design(data_points):
    x = np.log(np.asarray(data_points, float))
    return np.column_stack([np.ones(len(x))] + [x[:, j] ** k for j in range(x.shape[1]) for k in (1, 2, 3)])


def coefficients(data_points, loss_values):
    return np.linalg.lstsq(design(data_points), np.asarray(loss_values, float), rcond=None)[0]



class Carrier(float):
    pass


def fit_scaling_law(data_points, loss_values):
    coef = coefficients(data_points, loss_values)
    value = Carrier(coef[0])
    value.rest = coef
    return [value]


def scaling_law_func(data_points, params):
    return design(data_points) @ params[0].rest
# EVOLVE-BLOCK-END
