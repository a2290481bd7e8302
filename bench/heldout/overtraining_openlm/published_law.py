"""Published law: Gadre et al. 2024, "Language models scale reliably with over-training and on
downstream tasks", eq. 4: L(C, M) = E + (a M^eta + b M^-eta) C^-eta, the Chinchilla form with
alpha = beta = eta rewritten in compute C = 6ND and token multiplier M = D/N = C / (6 N^2).
Only the form is taken; E, a, b, eta are refit per group on train (variable projection). 4 parameters.
"""
# EVOLVE-BLOCK-START
import numpy as np

from evolve.fitting import varpro_fit


def basis(X, exponents):
    c, n = X[:, 0], X[:, 1]
    m = c / (6.0 * n * n)
    (eta,) = exponents
    return np.column_stack([np.ones(len(X)), m ** eta * c ** (-eta), m ** (-eta) * c ** (-eta)])


def scaling_law_func(data_points, params):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    p = np.asarray(params, dtype=float).ravel()
    return basis(X, p[3:4]) @ p[:3]


def fit_scaling_law(data_points, loss_values):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    y = np.asarray(loss_values, dtype=float)
    exponents, coef = varpro_fit(lambda b: basis(X, b), [(0.0, 1.0)], y, n_starts=8, seed=0)
    return np.concatenate([coef, exponents])
# EVOLVE-BLOCK-END
