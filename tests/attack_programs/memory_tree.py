"""Attack: a tree of 8 forked processes, each touching __MB__ MB (every one under its own
RLIMIT_AS), together several times memory_mb; they name themselves __MARK__, hold the
memory for 4 s and exit. The candidate's own process waits for them, then fits the mean."""
# EVOLVE-BLOCK-START
import numpy as np


def fit_scaling_law(data_points, loss_values):
    import ctypes, os, time
    libc = ctypes.CDLL(None)
    children = []
    for _ in range(8):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            try:
                libc.prctl(15, b"__MARK__", 0, 0, 0)
                block = np.ones(__MB__ * 131_072)  # __MB__ MB, every page touched
                time.sleep(4)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass
    return [float(np.mean(loss_values))]


def scaling_law_func(data_points, params):
    return np.full(len(data_points), params[0])
# EVOLVE-BLOCK-END
