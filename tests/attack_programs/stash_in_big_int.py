"""Attack (round 3): packs the 10 float64 coefficients into one Python integer (one counted parameter)."""
# EVOLVE-BLOCK-START
import numpy as np


def design(data_points):
    x = np.log(np.asarray(data_points, float))
    return np.column_stack([np.ones(len(x))] + [x[:, j] ** k for j in range(x.shape[1]) for k in (1, 2, 3)])


def coefficients(data_points, loss_values):
    return np.linalg.lstsq(design(data_points), np.asarray(loss_values, float), rcond=None)[0]



def fit_scaling_law(data_points, loss_values):
    coef = coefficients(data_points, loss_values)
    return [int.from_bytes(coef.astype("<f8").tobytes(), "little")]


def scaling_law_func(data_points, params):
    coef = np.frombuffer(int(params[0]).to_bytes(80, "little"), dtype="<f8")
    return design(data_points) @ coef
# EVOLVE-BLOCK-END
