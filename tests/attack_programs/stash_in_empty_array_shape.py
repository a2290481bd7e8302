"""Attack (round 3): encodes 9 coefficients in the shapes of empty arrays (0 values counted)."""
# EVOLVE-BLOCK-START
import numpy as np


def design(data_points):
    x = np.log(np.asarray(data_points, float))
    return np.column_stack([np.ones(len(x))] + [x[:, j] ** k for j in range(x.shape[1]) for k in (1, 2, 3)])


def coefficients(data_points, loss_values):
    return np.linalg.lstsq(design(data_points), np.asarray(loss_values, float), rcond=None)[0]



def fit_scaling_law(data_points, loss_values):
    coef = coefficients(data_points, loss_values)
    chunks = np.frombuffer(coef[1:].astype("<f8").tobytes(), dtype="u1").reshape(-1, 4)
    return [float(coef[0])] + [np.zeros((0,) + tuple(int(v) for v in row)) for row in chunks]


def scaling_law_func(data_points, params):
    chunks = np.array([p.shape[1:] for p in params[1:]], dtype="u1")
    rest = np.frombuffer(chunks.tobytes(), dtype="<f8")
    return design(data_points) @ np.concatenate([[params[0]], rest])
# EVOLVE-BLOCK-END
