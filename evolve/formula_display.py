"""A traced formula made readable, on the trusted side: its text parsed under a whitelist
(it came from a process that ran candidate code), one group's constants put in, the
numerical guards that never bind dropped, numbers rounded for reading only, and each
step checked to compute what the step before did.

`evolve.symbolic` traces the program (in the sandbox); this module never runs candidate
code, and `evolve.report.formula` uses it for the one formula shown everywhere.
"""

from __future__ import annotations

import ast

import numpy as np

from evolve.program import parse_python
from evolve.formula_numbers import SHOWN_FUNCTIONS, refusal
from evolve.symbolic import WHOLE_BELOW, Formula, feature_symbols, load_sympy, param_symbols, tidy


SAFE_CONSTANTS = frozenset({"E", "pi", "True", "False"})
SAFE_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.Name, ast.Constant, ast.Tuple, ast.Load,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd, ast.Gt, ast.Lt, ast.GtE, ast.LtE,
    ast.BitAnd, ast.BitOr, ast.Invert,
)  # fmt: skip
DISPLAY_DIGITS = (4, 5, 6, 8, 10, 15)
DISPLAY_RTOL = 1e-4  # the rounded formula still computes the full one's values to this
MAX_ROUNDED = 200  # a formula with more numbers than this is shown with every digit


def parse_checked(text: str, features: tuple[str, ...], n_params: int):
    """The sympy expression of a formula text, refused (ValueError) unless it is arithmetic
    on the features, p0..pk, numbers and known functions: the text came from a process that
    ran candidate code, and sympify evaluates what it parses (exactly: a forged `10**10**9`
    would never return, so numbers are bounded first)."""
    sympy = load_sympy()
    names = {**{s.name: s for s in feature_symbols(features)}, **{s.name: s for s in param_symbols(n_params)}}
    if len(text) > 200_000:
        raise ValueError("formula text too long")
    tree = parse_python(text, mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, SAFE_NODES):
            raise ValueError(f"not arithmetic: {type(node).__name__}")
        if isinstance(node, ast.Name) and node.id not in names and node.id not in SHOWN_FUNCTIONS | SAFE_CONSTANTS:
            raise ValueError(f"unknown name {node.id!r}")
        if isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name) or node.func.id not in SHOWN_FUNCTIONS or node.keywords):
            raise ValueError("unknown function")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, bool)):
            raise ValueError("not a number")
    reason = refusal(tree, set(names))
    if reason:
        raise ValueError(reason)
    return sympy.sympify(text, locals=names)


WIDEN_DECADES = (-3.0, -1.0, 1.0, 3.0)  # how far beyond the data a dropped guard is shown never to bind


def widened_rows(rows: np.ndarray) -> np.ndarray:
    """The rows, and copies of them moved beyond the data one feature at a time and all at
    once: a feature never negative on the rows multiplied by 10^k (k in WIDEN_DECADES), any
    other shifted by k/3 spans of it, so a ratio or difference of features (tokens/params − 1) leaves the
    range the rows hold."""
    positive = (rows >= 0).all(axis=0)  # scaled: a share of 0 stays 0, no feature leaves its sign
    span = np.where(positive, 0.0, rows.max(axis=0) - rows.min(axis=0))
    variants = [rows]
    for k in WIDEN_DECADES:
        moved = np.where(positive, rows * 10.0**k, rows + span * k / 3)
        variants.append(moved)
        for j in range(rows.shape[1]):
            one = rows.copy()
            one[:, j] = moved[:, j]
            variants.append(one)
    return np.concatenate(variants)


def drop_idle_guards(expression, symbols: list, rows: np.ndarray):
    """`Max(tiny, e)` → `e` (and `Min(huge, e)` → `e`) where the guard cannot bind near the
    data: the numerical safety nets programs add are noise to a reader. Not binding on the
    rows is not enough: `Max(0, tokens/params − 1)` never binds where every run has more
    tokens than parameters, and dropping it made the shown formula compute another law
    (complex numbers, even) for a model trained on fewer tokens than it has parameters. So
    e must clear the guard on the rows moved up to three decades beyond them, one feature
    at a time and all together (`widened_rows`): `Max(1e-12, 8e-12·tokens)` binds only
    below 0.12 tokens and goes; the ratio's guard stays."""
    sympy = load_sympy()
    wide = widened_rows(rows)

    def idle(guard, other, binds) -> bool:
        try:
            with np.errstate(all="ignore"):
                values = sympy.lambdify(symbols, other, "numpy")(*wide.T)
            return bool(np.all(np.isfinite(values)) and np.all(binds(np.broadcast_to(values, (len(wide),)), float(guard))))
        except Exception:  # noqa: BLE001 - keep the guard when it cannot be checked
            return False

    def simplify(node):
        if isinstance(node, (sympy.Max, sympy.Min)) and len(node.args) == 2:
            numbers = [a for a in node.args if a.is_Number]
            if len(numbers) == 1:
                other = next(a for a in node.args if a is not numbers[0])
                binds = (lambda v, g: v > g) if isinstance(node, sympy.Max) else (lambda v, g: v < g)
                if idle(numbers[0], other, binds):
                    return simplify(other)
        if node.args:
            return node.func(*[simplify(a) for a in node.args])
        return node

    return simplify(expression)


def values_on(expression, features: tuple[str, ...], rows: np.ndarray) -> np.ndarray:
    sympy = load_sympy()
    with np.errstate(all="ignore"):
        values = sympy.lambdify(feature_symbols(features), expression, "numpy")(*rows.T)
    return np.broadcast_to(np.asarray(values, dtype=float), (len(rows),))


def same_values(a: np.ndarray, b: np.ndarray, rtol: float, atol: float = 1e-12) -> bool:
    return bool(np.array_equal(np.isfinite(a), np.isfinite(b)) and np.allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=rtol, atol=atol))


SUM_NOISE = 1e-12  # float64 sums carry ~n·eps (2.2e-16) of their largest term; this is ~4500 eps


def rounding_noise(expression, features: tuple[str, ...], rows: np.ndarray) -> float:
    """How much two float64 evaluations of the same sum may differ: a fraction SUM_NOISE of its
    largest term. Terms that cancel (c = 2.57e7 with a·x^-1e-9 = -2.57e7, a log written as a
    power with a vanishing exponent) leave a value of 5 whose last digits are the rounding of
    2.57e7, so a relative tolerance on the value alone would call a harmless rewrite wrong."""
    sympy = load_sympy()
    terms = expression.args if isinstance(expression, sympy.Add) else (expression,)
    largest = 0.0
    with np.errstate(all="ignore"):
        for term in terms:
            values = np.abs(values_on(term, features, rows))
            finite = values[np.isfinite(values)]
            if finite.size:
                largest = max(largest, float(finite.max()))
    return SUM_NOISE * largest


def fitted_law(formula: Formula, features: tuple[str, ...], params: list[float], rows: np.ndarray) -> list | None:
    """The formula with one group's fitted constants in and the guards that never bind on
    its rows dropped; None when the result does not compute what the traced formula does on
    every row (which the sandbox checked against the program itself on a spread of them)."""
    sympy = load_sympy()
    constants = {s: sympy.Float(float(v), 17) for s, v in zip(param_symbols(len(params)), params)}
    laws = []
    for text in formula.expressions:
        full = parse_checked(text, features, len(params)).xreplace(constants)
        tidied = drop_idle_guards(full, feature_symbols(features), rows)
        if not same_values(values_on(full, features, rows), values_on(tidied, features, rows), 1e-9,
                           max(1e-12, rounding_noise(full, features, rows))):
            return None
        laws.append(tidied)
    return laws


FLAT_EXPONENT = 1e-11  # x**e with |e| below this is within 1e-8 of 1 for any positive float x (|log x| < 710)


def without_flat_powers(expression, features: tuple[str, ...], rows: np.ndarray):
    """The expression with powers whose exponent cannot move them off 1 shown as 1
    (`tokens**2.8e-21`, an exponent the fit drove to nothing), when the whole still computes
    its values to DISPLAY_RTOL on the rows moved three decades beyond them (`widened_rows`:
    a base that reaches 0 there, where 0**1e-12 is 0, keeps its power). For reading only,
    as rounding is."""
    sympy = load_sympy()
    flat = expression.replace(lambda node: node.is_Pow and node.exp.is_Float and abs(float(node.exp)) < FLAT_EXPONENT,
                              lambda node: sympy.Integer(1))
    return rewritten_if_same(expression, flat, features, rows)


def rewritten_if_same(expression, rewritten, features: tuple[str, ...], rows: np.ndarray, expand: bool = False):
    """The rewritten expression (expanded first when asked) when it computes the original's
    values to DISPLAY_RTOL on the rows moved three decades beyond them (`widened_rows`), else
    the original: the one check every display rewrite of a law's powers passes."""
    if rewritten == expression:
        return expression
    try:
        if expand:
            rewritten = load_sympy().expand(rewritten, power_base=False, power_exp=False, log=False, multinomial=False)
        wide = widened_rows(rows)
        return rewritten if same_values(values_on(expression, features, wide), values_on(rewritten, features, wide), DISPLAY_RTOL) else expression
    except Exception:  # noqa: BLE001 - shown as it is
        return expression


NEAR_LOG = 1e-6  # v**e with 0 < |e| below this is 1 + e*log(v) to within (e*log v)**2 / 2: a log written as a power


def powers_as_logs(expression, features: tuple[str, ...], rows: np.ndarray):
    """The expression with each power of a vanishing exponent read as the log it is:
    a*v**e = a + a*e*log(v) to second order, so a huge coefficient beside a constant that
    cancels it (the offline grammar's `4.09e9/x**6.985e-11 - 4.09e9`) is shown as the
    `-0.286*log(x)` it computes, the constants summed. Kept only when the whole still
    computes its values to DISPLAY_RTOL on the rows moved three decades beyond them
    (`widened_rows`). For reading only, as rounding is."""
    sympy = load_sympy()
    logged = expression.replace(lambda node: node.is_Pow and node.exp.is_Float and 0 < abs(float(node.exp)) < NEAR_LOG,
                                lambda node: 1 + node.exp * sympy.log(node.base))
    return rewritten_if_same(expression, logged, features, rows, expand=True)


def rounded(expression, features: tuple[str, ...], rows: np.ndarray):
    """The expression with each number shown to the fewest significant digits (at least 4)
    for which the whole still computes its values on the rows to DISPLAY_RTOL; a number the
    law is sensitive to (an exponent inside exp) keeps more. Rounding for reading only."""
    sympy = load_sympy()
    expression = powers_as_logs(without_flat_powers(expression, features, rows), features, rows)
    numbers = sorted(expression.atoms(sympy.Float), key=lambda f: -abs(float(f)))
    if not numbers or len(numbers) > MAX_ROUNDED:  # each number tried costs evaluations of the whole: many are shown in full
        return tidy(expression)
    slots = [sympy.Dummy() for _ in numbers]
    with np.errstate(all="ignore"):
        function = sympy.lambdify(feature_symbols(features) + slots, expression.xreplace(dict(zip(numbers, slots))), "numpy")

        def values(constants: list[float]) -> np.ndarray:
            return np.broadcast_to(np.asarray(function(*rows.T, *constants), dtype=float), (len(rows),))

        full = values([float(n) for n in numbers])
        shown = [float(n) for n in numbers]
        texts = [str(float(n)) for n in numbers]
        for k, number in enumerate(numbers):
            for digits in DISPLAY_DIGITS:
                trial = shown.copy()
                trial[k] = float(f"{float(number):.{digits}g}")
                try:
                    agrees = same_values(full, values(trial), DISPLAY_RTOL)
                except Exception:  # noqa: BLE001 - keep the number as it is
                    break
                if agrees:
                    shown, texts[k] = trial, f"{float(number):.{digits}g}"
                    break
    return tidy(expression.xreplace({n: shown_number(t) for n, t in zip(numbers, texts)}))


def shown_number(text: str):
    """The sympy number that prints as `text` (a rounded decimal): a whole number as an exact
    Integer, since a Float of the text's few significant digits is binary and `tidy` would
    print its binary value (3.8e+04 at 2 digits is 38016); otherwise a Float of those digits."""
    sympy = load_sympy()
    value = float(text)
    if value.is_integer() and abs(value) < WHOLE_BELOW:
        return sympy.Integer(int(value))
    return sympy.Float(text, max(1, len(text.lstrip("-").replace(".", "").split("e")[0].lstrip("0")) or 1))
