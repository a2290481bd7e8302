"""What a worker loads before it serves: the modules candidates may import, already imported
and warmed up, so each forked child starts with them in memory and no child ever needs to
read them from disk (its file system is an empty scratch folder)."""

from __future__ import annotations

import gc
import importlib
import sys
import warnings

from evolve.scoring.in_sandbox import run_jobs
from evolve.scoring.isolation import OPTIONAL_MODULES, REQUIRED_MODULES


def preload() -> list[str]:
    """Import everything a candidate may use, so it never needs the filesystem; return the
    optional modules that are missing."""
    for name in REQUIRED_MODULES:
        importlib.import_module(name)
    missing = []
    for name in OPTIONAL_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - another engineer's module may be half written
            print(f"optional module {name} not loaded: {type(exc).__name__}: {exc}", file=sys.stderr)
            missing.append(name)
    warm_up()
    gc.collect()
    gc.freeze()  # children then never write to the worker's objects' GC headers: fewer copy-on-write pages
    return missing


def warm_up() -> None:
    """Call the usual fitters once: several import submodules lazily on first use, which
    would fail inside the empty chroot."""
    import numpy as np
    import scipy.optimize as so
    import scipy.stats

    x = np.linspace(1.0, 10.0, 12)
    y = 2.0 * x**-0.5 + 1.0

    def law(x, a, b, c):
        return a * x**-b + c

    def loss(p):
        return float(np.sum((law(x, *p) - y) ** 2))

    calls = [
        lambda: so.curve_fit(law, x, y, p0=[1, 0.5, 1], maxfev=200),
        lambda: so.curve_fit(law, x, y, p0=[1, 0.5, 1], bounds=([0, 0, 0], [10, 2, 5]), max_nfev=50),
        lambda: so.least_squares(lambda p: law(x, *p) - y, [1, 0.5, 1], loss="soft_l1", max_nfev=20),
        lambda: so.least_squares(lambda p: law(x, *p) - y, [1, 0.5, 1], method="lm", max_nfev=20),
        lambda: so.least_squares(lambda p: law(x, *p) - y, [1, 0.5, 1], method="dogbox",
                                 bounds=([0, 0, 0], [10, 2, 5]), max_nfev=20),
        *[lambda m=m: so.minimize(loss, [1, 0.5, 1], method=m, options={"maxiter": 5})
          for m in ("Nelder-Mead", "Powell", "CG", "BFGS", "L-BFGS-B", "TNC", "SLSQP", "trust-constr", "COBYLA")],
        lambda: so.differential_evolution(loss, [(0, 10), (0, 2), (0, 5)], maxiter=2, popsize=4, seed=0),
        lambda: so.dual_annealing(loss, [(0, 10), (0, 2), (0, 5)], maxiter=2, seed=0),
        lambda: so.basinhopping(loss, [1, 0.5, 1], niter=1, seed=0),
        lambda: so.nnls(np.eye(3), np.ones(3)),
        lambda: so.lsq_linear(np.eye(3), np.ones(3)),
        lambda: so.brentq(lambda t: t - 1.0, 0.0, 2.0),
        lambda: so.root(lambda t: t - 1.0, [0.0]),
        lambda: np.polynomial.Polynomial.fit(x, y, 2),
        lambda: scipy.stats.linregress(x, y),
        traceback_warm_up,
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for call in calls:
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - a warm-up call that fails only costs its lazy import
                print(f"warm-up call failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def traceback_warm_up() -> None:
    import numpy as np

    from evolve.scoring.in_sandbox import GroupJob

    program = "def fit_scaling_law(x, y):\n    return 1 / 0\n\ndef scaling_law_func(x, p):\n    return x\n"
    job = GroupJob("g", np.ones((2, 1)), np.ones((2, 1)), np.ones((1, 1)))
    run_jobs(program, [job], ("x",), ("y",))


FORMULA_WARM_UP_PROGRAM = """import math
import numpy as np

def scaling_law_func(data_points, params):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    a, b, c, d = params
    n = np.maximum(X[:, 0], 1.0) / 1e9
    core = a * np.power(n, -b) + np.exp(-c) * np.log(n + 1) + np.sqrt(np.abs(d)) * np.tanh(X[:, 1])
    return np.where(X[:, 1] > 2, core, np.clip(core, 0, None)) + math.log10(2) * np.minimum(d, 1)
"""


def preload_formulas() -> None:
    """For a formula worker: extract one built-in formula, since sympy imports much lazily
    (functions, printers, lambdify) and those imports would fail inside the empty chroot."""
    from evolve.symbolic import FormulaJob, extract_formula

    job = FormulaJob(FORMULA_WARM_UP_PROGRAM, ("n", "k"), 1, 4, [0.5, 0.2, 1.0, 0.3], [[1e9, 1.0], [2e9, 4.0]])
    if extract_formula(job) is None:
        print("formula warm-up failed", file=sys.stderr)
    gc.collect()
    gc.freeze()
