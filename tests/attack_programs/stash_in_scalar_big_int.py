"""Attack (found by an attack hunt): the 10 coefficients packed into one 640-bit integer that a
numpy float64 subclass hands to the encoder as its `item()`, so the fit answer carries them
as one scalar node {"n": "<f8", "v": <int>}; prediction reads the raw node from its caller."""
# EVOLVE-BLOCK-START
import sys

import numpy as np


def design(data_points):
    x = np.log(np.asarray(data_points, float))
    return np.column_stack([np.ones(len(x))] + [x[:, j] ** k for j in range(x.shape[1]) for k in (1, 2, 3)])


class Packed(np.float64):
    def item(self):
        return self.big


def fit_scaling_law(data_points, loss_values):
    coef = np.linalg.lstsq(design(data_points), np.asarray(loss_values, float), rcond=None)[0]
    packed = Packed(1.0)
    packed.big = int.from_bytes(coef.astype("<f8").tobytes(), "little")
    return packed


def unpack(big):
    return np.frombuffer(int(big).to_bytes(80, "little"), dtype="<f8")


def scaling_law_func(data_points, params):
    if hasattr(params, "big"):  # fit and predict in one process: the object itself
        return design(data_points) @ unpack(params.big)
    frame = sys._getframe(1)  # the prediction phase: the undecoded tree
    tree = frame.f_locals["trees"][frame.f_locals["index"]]
    return design(data_points) @ unpack(tree["v"])
# EVOLVE-BLOCK-END
