"""Attack: fit a 10-coefficient polynomial, return 1 parameter, keep the other 9 in a
module global that scaling_law_func reads (the cap counts only what is returned)."""
# EVOLVE-BLOCK-START
import numpy as np

_HIDDEN = {}


def fit_scaling_law(data_points, loss_values):
    x = np.log(np.asarray(data_points, float))
    design = np.column_stack([np.ones(len(x))] + [x[:, j] ** k for j in range(x.shape[1]) for k in (1, 2, 3)])
    coef = np.linalg.lstsq(design, np.asarray(loss_values, float), rcond=None)[0]
    _HIDDEN["coef"] = coef
    return [float(coef[0])]


def scaling_law_func(data_points, params):
    x = np.log(np.asarray(data_points, float))
    design = np.column_stack([np.ones(len(x))] + [x[:, j] ** k for j in range(x.shape[1]) for k in (1, 2, 3)])
    coef = _HIDDEN["coef"].copy()
    coef[0] = params[0]
    return design @ coef
# EVOLVE-BLOCK-END
