"""Formula bomb (attack hunt 2026-12-04): under tracing, forge a formula that passes the
parent's float check (Min(p0, inf) is p0) but makes sympify compute 10**(10**9) exactly."""
# EVOLVE-BLOCK-START
import json
import os

import numpy as np


def fit_scaling_law(data_points, loss_values):
    return [float(np.mean(loss_values))]


def scaling_law_func(data_points, params):
    X = np.asarray(data_points)
    if X.dtype == object:  # traced on sympy symbols: only formula extraction does that
        os.write(3, json.dumps({"expressions": ["Min(p0, 10**10**9)"], "latex": ["p_0"]}).encode())
        os._exit(0)
    return np.full(len(X), float(params[0]))
# EVOLVE-BLOCK-END
