"""Published law: Chinchilla Approach 3 (Hoffmann et al. 2022, "Training Compute-Optimal Large
Language Models", eq. 2; refit by Besiroglu et al. 2024): L(N, D) = E + A / N^alpha + B / D^beta,
with D = C / (6 N) tokens from the task's features (flops C, params N). Only the form is taken;
E, A, B, alpha, beta are refit per group on train (variable projection). 5 parameters.
"""
# EVOLVE-BLOCK-START
import numpy as np

from evolve.fitting import varpro_fit


def basis(X, exponents):
    c, n = X[:, 0], X[:, 1]
    d = c / (6.0 * n)
    a, b = exponents
    return np.column_stack([np.ones(len(X)), n ** (-a), d ** (-b)])


def scaling_law_func(data_points, params):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    p = np.asarray(params, dtype=float).ravel()
    return basis(X, p[3:5]) @ p[:3]


def fit_scaling_law(data_points, loss_values):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    y = np.asarray(loss_values, dtype=float)
    exponents, coef = varpro_fit(lambda b: basis(X, b), [(0.0, 2.0), (0.0, 2.0)], y, n_starts=8, seed=0)
    return np.concatenate([coef, exponents])
# EVOLVE-BLOCK-END
