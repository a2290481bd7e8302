"""Attack (round 3): the fitting process writes its own answer on the result pipe, claiming
the parameter-free `law` API, so that no fitted parameter is counted, then exits."""
# EVOLVE-BLOCK-START
import json
import os

import numpy as np


def fit_scaling_law(data_points, loss_values):
    os.write(3, json.dumps({"status": "ok", "message": "", "api": "law", "params": []}).encode())
    os._exit(0)


def scaling_law_func(data_points, params):
    return np.full(len(data_points), 2.5)
# EVOLVE-BLOCK-END
