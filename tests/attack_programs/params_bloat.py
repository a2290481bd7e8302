"""Attack: every fit returns 9,999 random float64 parameters per group (just under
in_sandbox.MAX_PARAMS_REPORTED), so each evaluation carries 42 x 9,999 floats back to the
trusted parent. The law itself predicts a constant (it is an over_cap failure on a capped
task, ok on an uncapped one). Those parameters are (1) kept in the run's FitMemo, whose
bound (MAX_VALUES = 8M) counts predictions only, and (2) written into archive.db as JSON.
"""
# EVOLVE-BLOCK-START
import numpy as np

N = 2_000  # the attack used 9,999; fewer keep the test quick, the cost per row is the same


def fit_scaling_law(data_points, loss_values):
    rng = np.random.default_rng(len(loss_values))
    return np.concatenate([[float(np.mean(loss_values))], rng.random(N - 1)])


def scaling_law_func(data_points, params):
    return np.full(len(np.atleast_2d(data_points)), float(np.asarray(params)[0]))
# EVOLVE-BLOCK-END
