# Law exported from run (run), program 6, task sft_scaling_law (fit API).
# Features: sft_data_size; targets: sft_loss.
# Validation R2: 0.994199; test R2: 0.993183.
# Fitted parameters (4 per group) come from the stored test evaluation (fitted on all training rows).
# fit_scaling_law refits them on your data; they are listed in FITTED_PARAMS for reference.

"""Human law: the rectified scaling law for fine-tuning, L(D) = B / (D_l + D^beta) + E.

Source: Lin et al. 2024, "Selecting Large Language Model to Fine-tune via Rectified
Scaling Law": a pre-trained model has already "learned" the equivalent of D_l fine-tuning
examples, so the power law in the fine-tuning data size D is shifted by D_l, which
explains the flat pre-power phase of small-data fine-tuning.
Fitted per (model, dataset) group by variable projection (evolve.fitting.varpro_fit): for
given (ln D_l, beta) the law is linear in B and E, solved by least squares, so only
ln D_l in [-10, 30] and beta in [0.01, 2] are searched, from 8 seeded starts.
Parameters: [B, D_l, beta, E] (4, the task's cap).
"""
# EVOLVE-BLOCK-START
import numpy as np

# --- evolve.fitting, copied in so this file needs only numpy and scipy ---
"""Fitting helpers that candidate programs import: `from evolve.fitting import ...`.

Scaling laws are small nonlinear models fitted on a few dozen to a few thousand rows,
thousands of times per run. The helpers here make those fits robust without making them
slow: every optimizer starts from several seeded points inside the bounds (plus an
optional guess), never raises because an objective returned NaN or infinity (such values
count as a huge loss), and returns the best point found. The same seed gives the same
answer, so a program's score does not depend on luck.

Public names (an offline proposer writes code against exactly these):
- minimize_multistart: bounded L-BFGS-B from many starts, for any scalar objective.
- least_squares_multistart: scipy's trust-region least squares from many starts,
  with robust losses ("linear", "huber", "soft_l1", "cauchy").
- varpro_fit: variable projection; only the nonlinear parameters are searched and the
  linear coefficients are solved exactly for each of them.
- huber, pseudo_huber, robust_objective: robust elementwise losses and a scalar objective.
- log_residuals, fit_log_space: fit relative (log-space) errors, also for negative targets.
"""


from typing import Callable, Sequence

import numpy as np
from scipy.optimize import least_squares, minimize

BIG = 1e30  # the value a non-finite objective counts as
BIG_RESIDUAL = 1e10  # what a non-finite residual is replaced by
UNBOUNDED_SPAN = 10.0  # how far from a finite side starts are drawn when the other side is infinite
ROBUST_LOSSES = ("linear", "huber", "soft_l1", "cauchy")

Bounds = Sequence[tuple[float, float]]


def as_bounds(bounds: Bounds) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds as float arrays; None counts as unbounded on that side."""
    pairs = [(-np.inf if lo is None else lo, np.inf if hi is None else hi) for lo, hi in bounds]
    lower = np.array([p[0] for p in pairs], dtype=float)
    upper = np.array([p[1] for p in pairs], dtype=float)
    if np.any(lower > upper):
        raise ValueError("every lower bound must be at most its upper bound")
    return lower, upper


def sampling_box(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A finite box to draw starts from: infinite sides become UNBOUNDED_SPAN away."""
    low_finite, high_finite = np.isfinite(lower), np.isfinite(upper)
    lo = np.where(low_finite, lower, np.where(high_finite, upper - UNBOUNDED_SPAN, -UNBOUNDED_SPAN))
    hi = np.where(high_finite, upper, np.where(low_finite, lo + UNBOUNDED_SPAN, UNBOUNDED_SPAN))
    return lo, hi


def start_points(bounds: Bounds, n_starts: int, seed: int, x0: Sequence[float] | None = None) -> np.ndarray:
    """x0 (clipped into the bounds) first, then n_starts points drawn uniformly in the bounds."""
    lower, upper = as_bounds(bounds)
    lo, hi = sampling_box(lower, upper)
    rng = np.random.default_rng(seed)
    draws = lo + rng.random((max(0, n_starts), len(lo))) * (hi - lo)
    if x0 is not None:
        first = np.clip(np.asarray(x0, dtype=float).ravel(), lower, upper)
        draws = np.vstack([first[None, :], draws])
    if len(draws) == 0:
        draws = ((lo + hi) / 2)[None, :]
    return draws


def safe_scalar(objective: Callable[[np.ndarray], float]) -> Callable[[np.ndarray], float]:
    """The objective, returning BIG instead of raising or returning NaN or infinity."""

    def wrapped(x: np.ndarray) -> float:
        try:
            with np.errstate(all="ignore"):
                value = float(objective(x))
        except (ArithmeticError, ValueError, TypeError, np.linalg.LinAlgError):
            return BIG
        return value if np.isfinite(value) else BIG

    return wrapped


def safe_vector(residuals: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """The residual function as a finite flat float array (bad entries become BIG_RESIDUAL)."""
    size: list[int] = []

    def wrapped(x: np.ndarray) -> np.ndarray:
        try:
            with np.errstate(all="ignore"):
                r = np.asarray(residuals(x), dtype=float).ravel()
        except (ArithmeticError, ValueError, TypeError, np.linalg.LinAlgError):
            if not size:
                raise
            return np.full(size[0], BIG_RESIDUAL)
        if not size:
            size.append(r.size)
        return np.where(np.isfinite(r), np.clip(r, -BIG_RESIDUAL, BIG_RESIDUAL), BIG_RESIDUAL)

    return wrapped


def minimize_multistart(
    objective: Callable[[np.ndarray], float],
    bounds: Bounds,
    n_starts: int = 8,
    seed: int = 0,
    x0: Sequence[float] | None = None,
    maxiter: int = 2000,
) -> np.ndarray:
    """The best point of bounded L-BFGS-B runs from x0 and n_starts seeded uniform starts.

    A non-finite or raising objective counts as 1e30, so the search walks away from it
    instead of crashing. Returns the best start itself if no run improves on it.
    """
    lower, upper = as_bounds(bounds)
    f = safe_scalar(objective)
    scipy_bounds = list(zip(np.where(np.isfinite(lower), lower, None), np.where(np.isfinite(upper), upper, None)))
    best_x, best_f = None, np.inf
    for start in start_points(bounds, n_starts, seed, x0):
        value = f(start)
        if value < best_f:
            best_x, best_f = start, value
        try:
            result = minimize(f, start, method="L-BFGS-B", bounds=scipy_bounds, options={"maxiter": maxiter})
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):
            continue
        x = np.clip(result.x, lower, upper)
        value = f(x)
        if value < best_f:
            best_x, best_f = x, value
    return np.asarray(best_x, dtype=float)


def interior(x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """x nudged strictly inside the bounds, which scipy's 'trf' method needs."""
    span = np.where(np.isfinite(upper - lower), upper - lower, 1.0)
    margin = 1e-10 * np.maximum(span, 1e-300)
    inside = np.clip(x, lower + margin, upper - margin)
    return np.where(lower == upper, lower, inside)


def least_squares_multistart(
    residuals: Callable[[np.ndarray], np.ndarray],
    bounds: Bounds,
    n_starts: int = 8,
    seed: int = 0,
    x0: Sequence[float] | None = None,
    loss: str = "linear",
    f_scale: float = 1.0,
    max_nfev: int | None = None,
) -> np.ndarray:
    """The best of scipy.optimize.least_squares ('trf', bounded) runs from many starts.

    loss is one of "linear", "huber", "soft_l1", "cauchy" (scipy's robust losses; f_scale
    is the residual size where robustness sets in). Starts with non-finite residuals are
    skipped, not fatal; "best" is judged by the same robust cost. Returns the best start
    if every run fails.
    """
    if loss not in ROBUST_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(ROBUST_LOSSES)}, not {loss!r}")
    lower, upper = as_bounds(bounds)
    r = safe_vector(residuals)
    starts = start_points(bounds, n_starts, seed, x0)
    best_x, best_cost = starts[0], np.inf
    for start in starts:
        start = interior(start, lower, upper)
        try:
            result = least_squares(
                r, start, bounds=(lower, upper), method="trf", loss=loss, f_scale=f_scale, max_nfev=max_nfev
            )
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):
            continue
        if np.isfinite(result.cost) and result.cost < best_cost:
            best_x, best_cost = result.x, float(result.cost)
    return np.clip(np.asarray(best_x, dtype=float), lower, upper)


def irls_weights(residual: np.ndarray, loss: str, f_scale: float) -> np.ndarray:
    """Weights that make weighted least squares minimise scipy's robust loss: rho'(z), z = (r/f)^2."""
    z = (residual / f_scale) ** 2
    if loss == "huber":
        return np.where(z <= 1.0, 1.0, 1.0 / np.sqrt(np.maximum(z, 1e-300)))
    if loss == "soft_l1":
        return 1.0 / np.sqrt(1.0 + z)
    if loss == "cauchy":
        return 1.0 / (1.0 + z)
    return np.ones_like(z)


def solve_linear(design: np.ndarray, y: np.ndarray, ridge: float = 0.0, weights: np.ndarray | None = None) -> np.ndarray:
    """Coefficients minimising sum w (y - design @ coef)^2 + ridge |coef|^2, per column of y.

    y is (n, t) and weights (n, t) or None. Without ridge the columns are equilibrated
    first (x^-b columns can differ by 1e20 in size), which changes nothing but the
    conditioning; the ridge penalty acts on the raw columns, so scale them when using it.
    """
    if weights is None:
        if ridge > 0:
            k = design.shape[1]
            return np.linalg.solve(design.T @ design + ridge * np.eye(k), design.T @ y)
        norms = np.linalg.norm(design, axis=0)
        norms = np.where(norms > 0, norms, 1.0)
        return np.linalg.lstsq(design / norms, y, rcond=None)[0] / norms[:, None]
    coef = np.empty((design.shape[1], y.shape[1]))
    for j in range(y.shape[1]):
        root = np.sqrt(weights[:, j])[:, None]
        coef[:, j] = solve_linear(design * root, y[:, j : j + 1] * root, ridge)[:, 0]
    return coef


def projected_coef(design: np.ndarray, y: np.ndarray, ridge: float, loss: str, f_scale: float, irls_steps: int = 4) -> np.ndarray:
    """Linear coefficients for one design: least squares, then a few IRLS steps for robust losses."""
    coef = solve_linear(design, y, ridge)
    for _ in range(irls_steps if loss != "linear" else 0):
        coef = solve_linear(design, y, ridge, irls_weights(y - design @ coef, loss, f_scale))
    return coef


def varpro_fit(
    design: Callable[[np.ndarray], np.ndarray],
    nonlinear_bounds: Bounds,
    y: np.ndarray,
    n_starts: int = 8,
    seed: int = 0,
    ridge: float = 0.0,
    loss: str = "linear",
    f_scale: float = 1.0,
    x0: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Variable projection: search only the nonlinear parameters, solve the linear ones.

    design(theta) returns the (n, k) basis columns for nonlinear parameters theta (for
    y = c + a x^-b: theta = [b], columns [1, x^-b]). For every theta the coefficients are
    the (ridge, or robustly reweighted for a robust loss) least-squares solution, and theta
    is chosen by least_squares_multistart on the remaining residual. Returns (theta, coef):
    coef has shape (k,) for y of shape (n,); for y of shape (n, t) every column gets its own
    coefficients, coef (k, t), with theta shared by all columns.
    """
    y = np.asarray(y, dtype=float)
    Y = y[:, None] if y.ndim == 1 else y

    def coefficients(theta: np.ndarray) -> np.ndarray:
        return projected_coef(np.asarray(design(theta), dtype=float), Y, ridge, loss, f_scale)

    def residual(theta: np.ndarray) -> np.ndarray:
        basis = np.asarray(design(theta), dtype=float)
        return (Y - basis @ projected_coef(basis, Y, ridge, loss, f_scale)).ravel()

    if len(nonlinear_bounds) == 0:
        theta = np.zeros(0)
    else:
        theta = least_squares_multistart(residual, nonlinear_bounds, n_starts, seed, x0, loss, f_scale)
    coef = coefficients(theta)
    return theta, (coef[:, 0] if y.ndim == 1 else coef)


def huber(r: np.ndarray, delta: float = 1.0) -> np.ndarray:
    """Huber loss per element: r^2/2 inside |r| <= delta, linear (slope delta) outside."""
    a = np.abs(np.asarray(r, dtype=float))
    return np.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta))


def pseudo_huber(r: np.ndarray, delta: float = 1.0) -> np.ndarray:
    """Smooth Huber loss per element: delta^2 (sqrt(1 + (r/delta)^2) - 1); quadratic near 0, linear far."""
    r = np.asarray(r, dtype=float)
    return delta**2 * (np.sqrt(1.0 + (r / delta) ** 2) - 1.0)


def robust_objective(
    residual_fn: Callable[[np.ndarray], np.ndarray], kind: str = "pseudo_huber", delta: float = 1.0
) -> Callable[[np.ndarray], float]:
    """A scalar objective for minimize_multistart: the mean robust loss of residual_fn(params).

    kind is "pseudo_huber", "huber" or "squared"; delta is the residual size where the loss
    turns linear (pick it near the noise level of the targets). Non-finite values give 1e30.
    """
    losses = {"pseudo_huber": pseudo_huber, "huber": huber, "squared": lambda r, d: 0.5 * np.asarray(r) ** 2}
    if kind not in losses:
        raise ValueError(f"kind must be one of {', '.join(losses)}, not {kind!r}")
    elementwise = losses[kind]

    def objective(params: np.ndarray) -> float:
        return float(np.mean(elementwise(residual_fn(params), delta)))

    return safe_scalar(objective)


def log_residuals(pred: np.ndarray, y: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """log|pred| - log|y| with pred read in the sign of y: relative errors for positive or negative targets.

    For y > 0 this is log(pred) - log(y); for y < 0 (e.g. a negative Brier score or a
    unigram-normalised loss) it is log(-pred) - log(-y). A prediction of the wrong sign (or
    within floor*|y| of zero) does not give NaN: log continues linearly below floor*|y|
    (tangent to it), so the residual stays finite and smooth and pushes the prediction
    back. y must be nonzero.
    """
    pred = np.asarray(pred, dtype=float)
    y = np.asarray(y, dtype=float)
    if np.any(y == 0):
        raise ValueError("log_residuals needs nonzero targets")
    magnitude = np.abs(y)
    same_sign = np.sign(y) * pred
    knee = floor * magnitude
    with np.errstate(all="ignore"):
        above = np.log(np.maximum(same_sign, knee))
    below = np.log(knee) + (same_sign - knee) / knee
    return np.where(same_sign >= knee, above, below) - np.log(magnitude)


def fit_log_space(
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    bounds: Bounds,
    n_starts: int = 8,
    seed: int = 0,
    x0: Sequence[float] | None = None,
    loss: str = "linear",
    f_scale: float = 1.0,
) -> np.ndarray:
    """Parameters minimising log_residuals(predict(X, params), y): relative error, all signs.

    Use it when targets span orders of magnitude or when relative error is what matters;
    a target's sign is taken from the data, so negative targets work unchanged.
    """
    return least_squares_multistart(
        lambda p: log_residuals(predict(X, p), y), bounds, n_starts, seed, x0, loss, f_scale
    )
# --- end of evolve.fitting ---

LOG_DL_BOUNDS = (-10.0, 30.0)
BETA_BOUNDS = (0.01, 2.0)


def rectified_term(D, d_l, beta):
    """1 / (D_l + D^beta): the data term with the pre-learned data size added."""
    return 1.0 / (d_l + D**beta)


def scaling_law_func(data_points, params):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    b, d_l, beta, e = np.asarray(params, dtype=float).ravel()
    return b * rectified_term(X[:, 0], d_l, beta) + e


def fit_scaling_law(data_points, loss_values):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    y = np.asarray(loss_values, dtype=float)

    def design(theta):
        log_dl, beta = theta
        return np.column_stack([rectified_term(X[:, 0], np.exp(log_dl), beta), np.ones(len(X))])

    (log_dl, beta), (b, e) = varpro_fit(design, [LOG_DL_BOUNDS, BETA_BOUNDS], y, n_starts=8, seed=0)
    return np.array([b, np.exp(log_dl), beta, e])
# EVOLVE-BLOCK-END


FITTED_PARAMS = {
    "('MBZUAI/LaMini-GPT-124M', 'flan')": [569.8687143924166, 170.0932992424951, 0.45952422968916323, 1.111003880409306],
    "('MBZUAI/LaMini-GPT-124M', 'gigaword')": [10320.925220246912, 4872.29010074551, 0.8100134327726307, 0.9569918055147086],
    "('MBZUAI/LaMini-GPT-124M', 'wikiword')": [26.31835178662717, 8.31441988807956, 0.1868281412588962, 0.2414872070035647],
    "('MBZUAI/LaMini-GPT-774M', 'flan')": [287.69880781430635, 60.11106513790578, 0.2888074098894954, -0.9351737270172151],
    "('MBZUAI/LaMini-GPT-774M', 'gigaword')": [5908.968573163189, 3112.7336484884563, 0.7805148697529746, 0.8366991428498046],
    "('MBZUAI/LaMini-GPT-774M', 'wikiword')": [10.830059940125835, 5.360527952485727, 0.19689940683327484, 0.8227489812684156],
    "('cerebras/Cerebras-GPT-1.3B', 'flan')": [33.318312463867706, 17.347459835766216, 0.27594546313268736, 1.2454597271453605],
    "('cerebras/Cerebras-GPT-1.3B', 'gigaword')": [115.63953722994623, 11.750619599262665, 0.11990736008268313, -5.727217902871896],
    "('cerebras/Cerebras-GPT-1.3B', 'wikiword')": [58017580.57534282, 6339.112601510702, 0.04623564399439971, -9148.085289702758],
    "('cerebras/Cerebras-GPT-256M', 'flan')": [2521724187003.8564, 3038583.3024213417, 0.14125789767322064, -829897.3456929226],
    "('cerebras/Cerebras-GPT-256M', 'gigaword')": [402.8291190762113, 165.6294605924584, 0.4779915853480442, 0.6027839255482866],
    "('cerebras/Cerebras-GPT-256M', 'wikiword')": [16.45936250725717, 3.8072279276818515, 0.15811925697961252, 0.3540010204499302],
    "('facebook/bart-base', 'flan')": [108.11966046955935, 17.963520112706014, 0.2249568746415601, -0.9518702168658963],
    "('facebook/bart-base', 'gigaword')": [4207.719756446013, 1613.4860036652929, 0.7450936764157711, 0.828339133060863],
    "('facebook/bart-base', 'wikiword')": [166.61690327211477, 71.51918261346518, 0.545260705269616, 1.4163053791026827],
    "('facebook/bart-large', 'flan')": [3955647525.485096, 26029.046114786073, 0.026602956027017448, -151960.41150912695],
    "('facebook/bart-large', 'gigaword')": [3040.1907160512524, 1178.8842082390122, 0.7326251075184668, 0.7580584060254464],
    "('facebook/bart-large', 'wikiword')": [2.620840287795873, 4.539992976277728e-05, 0.11520750888187856, 0.7814782877054198],
    "('facebook/opt-1.3b', 'flan')": [18.122463360874438, 6.642469207489305, 0.16008495887493895, 0.42536677490424085],
    "('facebook/opt-1.3b', 'gigaword')": [565.9673743347427, 287.28408223487713, 0.5849662406907147, 0.919892246708143],
    "('facebook/opt-1.3b', 'wikiword')": [4.4497970799521225, 1.4642859168310247, 0.09448291101450972, 0.44742854998514414],
    "('facebook/opt-350m', 'flan')": [24051567318852.844, 8369600.662360945, 0.13249406325801608, -2873677.7128503476],
    "('facebook/opt-350m', 'gigaword')": [1374.546816865846, 583.7067997675798, 0.6503126055062147, 0.8540969568103082],
    "('facebook/opt-350m', 'wikiword')": [4.260658543888989, 4.539992987879086e-05, 0.03532618414548795, -1.1260306786097567],
    "('facebook/opt-6.7b', 'flan')": [3.3265006593362267, 2.3742519900057832, 0.10380941070484972, 1.2057342942053406],
    "('facebook/opt-6.7b', 'gigaword')": [322.32745198122706, 1306.9635877350856, 0.676638212257854, 1.746921709811117],
    "('facebook/opt-6.7b', 'wikiword')": [7.170392631169106, 8.87443527750775, 0.2787964738957745, 1.153325207819192],
    "('google/mt5-base', 'flan')": [30.640703170551348, 11.655700104591483, 0.2669571530283753, 1.2613578731698454],
    "('google/mt5-base', 'gigaword')": [28.36812501598021, 17.4596860504612, 0.23629242249515497, 1.5151601158949424],
    "('google/mt5-base', 'wikiword')": [49.634891641085346, 19.213495741107508, 0.32869724071890655, 0.8158892695172437],
    "('google/mt5-large', 'flan')": [32.14752104724201, 20.441387708722907, 0.31913471756660244, 1.3517389367011756],
    "('google/mt5-large', 'gigaword')": [155.3199379502281, 117.80984462357539, 0.40266507442511934, 1.6054896557988951],
    "('google/mt5-large', 'wikiword')": [11.138923185212589, 3.0421955949741877, 0.18532724545874654, 0.6201544068992715],
    "('gpt2', 'flan')": [864.1085025133191, 262.8967943252857, 0.5009322473428863, 1.2388594493690646],
    "('gpt2', 'gigaword')": [3580.7599284295543, 1593.6543957079546, 0.7310390885084669, 0.8967659686823783],
    "('gpt2', 'wikiword')": [44.51354242529991, 23.156961948095304, 0.3357241864430206, 1.1536972849450666],
    "('t5-base', 'flan')": [187908809327.84338, 481095.2990238744, 0.073317566536587, -390581.5939535448],
    "('t5-base', 'gigaword')": [1.895518691700566, 0.056288606714712516, 0.17193582715930422, 0.4220684052778465],
    "('t5-base', 'wikiword')": [13.121274054800528, 10.090429326508552, 0.221466352471542, 0.7751306051858545],
    "('t5-small', 'flan')": [130787602664.23154, 306756.6945904204, 0.05714939134012387, -426351.2594342498],
    "('t5-small', 'gigaword')": [8.989189377586467, 7.9099535139506285, 0.34028142473973955, 0.6211776989795036],
    "('t5-small', 'wikiword')": [16.829111507878533, 6.902329650877971, 0.15991618893749068, 0.27576847003031085],
}
