"""Attack: under formula extraction, write a 60 KB result line of its own choosing on the
extraction fork's answer pipe (any inherited pipe fd), marked verified, then exit: the
parent accepts any line up to 256 KB, so `report` must typeset a 60 KB LaTeX formula
that was never checked, and `show` prints "formula:" as checked."""
# EVOLVE-BLOCK-START
import sys

import numpy as np


def forge():
    import json, os, stat
    latex = "+".join(r"\frac{\sqrt{p_{0}^{%d}}}{\left(tokens\right)^{%d}}" % (k, k) for k in range(1300))
    line = json.dumps({"expressions": ["FORGED + " + "p0*" * 15000 + "1"], "latex": [latex[:60000]], "verified": True})
    for fd in range(3, 32):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, (line + "\n").encode())
        except OSError:
            pass
    os._exit(0)


def fit_scaling_law(data_points, loss_values):
    return [float(np.mean(loss_values))]


def scaling_law_func(data_points, params):
    if __name__ != "candidate_program":
        forge()
    return np.full(len(data_points), params[0])
# EVOLVE-BLOCK-END
