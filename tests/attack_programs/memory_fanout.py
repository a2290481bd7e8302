"""Attack: 7 forked processes (plus the candidate's own) each touch 200 MB, every one
under its own RLIMIT_AS; they name themselves __MARK__ and exit after 6 s."""
# EVOLVE-BLOCK-START
import sys

import numpy as np

__UNHOOK__


def fit_scaling_law(data_points, loss_values):
    import ctypes, os, time
    try:
        unhook()
        libc = ctypes.CDLL(None)
        for _ in range(7):
            try:
                if os.fork() == 0:
                    try:
                        libc.prctl(15, b"__MARK__", 0, 0, 0)
                        block = np.ones(25_000_000)  # 200 MB, every page touched
                        time.sleep(6)
                    finally:
                        os._exit(0)
            except OSError:
                break
        libc.prctl(15, b"__MARK__", 0, 0, 0)
        block = np.ones(25_000_000)
        time.sleep(3)
    except BaseException:
        pass
    return [float(np.mean(loss_values))]


def scaling_law_func(data_points, params):
    return np.full(len(data_points), params[0])
# EVOLVE-BLOCK-END
