"""Attack (found by an attack hunt): the fitting process writes its own answer, whose one array
node has a shape of 900 dimensions of 4299 digits each (3.9 MB, under the answer's cap): the
trusted worker multiplied them out before comparing with the one value, busy past the time
limit until the pool replaced it, while the candidate had used no time at all."""
# EVOLVE-BLOCK-START
import json
import os
import sys

import numpy as np

HUGE = int("9" * 4299)


def fit_scaling_law(data_points, loss_values):
    frame = sys._getframe(1)
    while "jobs" not in frame.f_locals:
        frame = frame.f_back
    jobs = frame.f_locals["jobs"]
    params = [[job.group, {"a": "<f8", "shape": [HUGE] * 900, "v": [0.0]}] for job in jobs]
    os.write(3, json.dumps({"status": "ok", "message": "", "api": "fit", "params": params}).encode())
    os._exit(0)


def scaling_law_func(data_points, params):
    return np.ones(len(data_points))

# EVOLVE-BLOCK-END
