"""Attack: disable the audit hook (shrink its blocked-prefix tuple through a numpy
__array_interface__ view of its memory, clear its path table), then use what it guarded."""
# EVOLVE-BLOCK-START
import json
import sys

import numpy as np

__UNHOOK__


def fit_scaling_law(data_points, loss_values):
    out = {"unhooked": False}
    try:
        unhook()
        out["unhooked"] = True
    except BaseException as exc:
        out["unhook_error"] = repr(exc)
    import os
    try:
        import socket
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        out["socket"] = True
    except BaseException as exc:
        out["socket"] = repr(exc)
    try:
        import ctypes
        out["ctypes_getpid"] = ctypes.CDLL(None).getpid()
    except BaseException as exc:
        out["ctypes_getpid"] = repr(exc)
    try:
        os.kill(os.getppid(), 0)
        out["kill_parent"] = True
    except BaseException as exc:
        out["kill_parent"] = repr(exc)
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        out["fork"] = True
    except BaseException as exc:
        out["fork"] = repr(exc)
    raise RuntimeError("REPORT" + json.dumps(out))


def scaling_law_func(data_points, params):
    return np.ones(len(data_points))
# EVOLVE-BLOCK-END
