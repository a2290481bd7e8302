"""The law a program computes, as a math expression (sympy).

A program's `scaling_law_func` is called on sympy symbols instead of numbers: one symbol
per feature in a (1, n_features) object array, and parameters p0..pk. numpy (and math)
are replaced inside the program by a module that maps elementwise functions to sympy
ones and builds object arrays, so the usual numpy code traces into an expression. The
expression is then checked against the program run on real numbers with its fitted
parameters; one that disagrees is dropped. Any failure means "no formula" (None).

This module executes candidate code when it traces: it is meant to run inside the
sandbox (`evolve.scoring.formula_jobs` runs `extract_formula` there); nothing here
isolates anything.
"""

from __future__ import annotations

import builtins
import io
import keyword
import math
import re
import types
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import numpy as np

MAX_OPS = 400  # larger expressions are unreadable; report "no formula" instead
CHECK_RTOL = 1e-4  # the expression sums terms in another order; ill-conditioned fits lose digits
CHECK_ROWS = 8


@dataclass(frozen=True)
class Formula:
    """One expression per target, as sympy text and LaTeX, over features and p0..pk."""

    expressions: tuple[str, ...]
    latex: tuple[str, ...]
    verified: bool  # agreed with the program on real rows and fitted parameters

    def to_dict(self) -> dict:
        return {"expressions": list(self.expressions), "latex": list(self.latex), "verified": self.verified}

    @classmethod
    def from_dict(cls, d: dict) -> Formula:
        return cls(tuple(d["expressions"]), tuple(d["latex"]), bool(d["verified"]))


@dataclass(frozen=True)
class FormulaJob:
    """What the extraction needs: the code, the feature names and one group's data to check on."""

    code: str
    features: tuple[str, ...]
    n_targets: int
    n_params: int | None
    check_params: list[float] | None = None  # one group's fitted parameters
    check_rows: list[list[float]] | None = None  # a few feature rows of that group

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "features": list(self.features),
            "n_targets": self.n_targets,
            "n_params": self.n_params,
            "check_params": self.check_params,
            "check_rows": self.check_rows,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FormulaJob:
        return cls(d["code"], tuple(d["features"]), int(d["n_targets"]), d["n_params"], d.get("check_params"), d.get("check_rows"))


# ---------------------------------------------------------------- symbolic numpy


def load_sympy():
    """sympy, imported on first use: the import costs a few tenths of a second, which commands
    that show no formula (and the CLI's start) should not pay."""
    import sympy

    return sympy


class SymbolicArray(np.ndarray):
    """An object array of sympy expressions whose astype() keeps the symbols.

    Programs often write `X.astype(float)` or `np.asarray(X, dtype=float)`; converting a
    symbol to float would fail, so float dtypes are ignored for these arrays.
    """

    def astype(self, dtype=None, *args, **kwargs):
        return self.copy()

    # numpy compares object arrays into bool arrays, which asks a sympy relation for its
    # truth value; keep the relations symbolic instead (for np.where and friends)
    def __gt__(self, other):
        return elementwise(lambda a, b: a > b)(self, other)

    def __ge__(self, other):
        return elementwise(lambda a, b: a >= b)(self, other)

    def __lt__(self, other):
        return elementwise(lambda a, b: a < b)(self, other)

    def __le__(self, other):
        return elementwise(lambda a, b: a <= b)(self, other)


def as_symbolic(value) -> np.ndarray:
    return np.asarray(value, dtype=object).view(SymbolicArray)


def elementwise(function):
    """Apply a sympy function to every element (scalars stay scalars)."""

    def apply(*args, **kwargs):
        kwargs.pop("out", None)
        kwargs.pop("dtype", None)
        kwargs.pop("where", None)
        if not any(isinstance(a, (np.ndarray, list, tuple)) for a in args):
            return function(*args, **kwargs)
        vectorised = np.vectorize(lambda *xs: function(*xs, **kwargs), otypes=[object])
        return as_symbolic(vectorised(*[np.asarray(a, dtype=object) if isinstance(a, (list, tuple)) else a for a in args]))

    return apply


def object_dtype(function):
    """A numpy array function called with dtype=object whatever dtype the program asked for."""

    def call(*args, **kwargs):
        if "dtype" in kwargs:
            kwargs["dtype"] = object
        if function in (np.asarray, np.array, np.asanyarray) and len(args) > 1:
            args = args[:1]
        result = function(*args, **kwargs)
        return as_symbolic(result) if isinstance(result, np.ndarray) and result.dtype == object else result

    return call


def clip(x, low=None, high=None, **kwargs):
    sympy = load_sympy()

    def one(v, lo, hi):
        if lo is not None:
            v = sympy.Max(v, lo)
        return sympy.Min(v, hi) if hi is not None else v

    return elementwise(one)(x, low, high)


def where(condition, a, b):
    sympy = load_sympy()
    return elementwise(lambda c, x, y: sympy.Piecewise((x, c), (y, True)))(condition, a, b)


def sympy_functions() -> dict:
    """numpy / math names mapped to sympy, for the functions a scaling law uses."""
    sympy = load_sympy()
    return {
        "exp": sympy.exp,
        "exp2": lambda x: 2**x,
        "expm1": lambda x: sympy.exp(x) - 1,
        "log": sympy.log,
        "log10": lambda x: sympy.log(x, 10),
        "log2": lambda x: sympy.log(x, 2),
        "log1p": lambda x: sympy.log(1 + x),
        "sqrt": sympy.sqrt,
        "cbrt": lambda x: sympy.cbrt(x),
        "power": lambda x, y: x**y,
        "float_power": lambda x, y: x**y,
        "pow": lambda x, y: x**y,
        "square": lambda x: x**2,
        "reciprocal": lambda x: 1 / x,
        "abs": sympy.Abs,
        "absolute": sympy.Abs,
        "fabs": sympy.Abs,
        "sign": sympy.sign,
        "sin": sympy.sin,
        "cos": sympy.cos,
        "tan": sympy.tan,
        "sinh": sympy.sinh,
        "cosh": sympy.cosh,
        "tanh": sympy.tanh,
        "arctan": sympy.atan,
        "atan": sympy.atan,
        "arcsin": sympy.asin,
        "arccos": sympy.acos,
        "arctanh": sympy.atanh,
        "maximum": sympy.Max,
        "minimum": sympy.Min,
        "fmax": sympy.Max,
        "fmin": sympy.Min,
        "logaddexp": lambda x, y: sympy.log(sympy.exp(x) + sympy.exp(y)),
        "add": lambda x, y: x + y,
        "subtract": lambda x, y: x - y,
        "multiply": lambda x, y: x * y,
        "divide": lambda x, y: x / y,
        "true_divide": lambda x, y: x / y,
        "negative": lambda x: -x,
        "nan_to_num": lambda x, *a, **k: x,
        "expit": lambda x: 1 / (1 + sympy.exp(-x)),
    }


ARRAY_FUNCTIONS = (
    "asarray", "array", "asanyarray", "atleast_1d", "atleast_2d", "column_stack", "stack", "hstack",
    "vstack", "concatenate", "reshape", "ravel", "squeeze", "transpose", "expand_dims", "sum", "prod",
    "mean", "dot", "matmul", "zeros_like", "ones_like", "full_like", "broadcast_to", "repeat", "tile",
    "outer", "cumsum", "take", "einsum", "zeros", "ones", "full", "empty",
)  # fmt: skip


def symbolic_numpy() -> types.ModuleType:
    """A stand-in for `numpy` inside the traced program."""
    module = types.ModuleType("numpy")
    module.__dict__.update({name: getattr(np, name) for name in dir(np) if not name.startswith("__")})
    for name in ARRAY_FUNCTIONS:
        module.__dict__[name] = object_dtype(getattr(np, name))
    for name, function in sympy_functions().items():
        module.__dict__[name] = elementwise(function)
    module.clip = clip
    module.where = where
    module.pi = load_sympy().pi
    module.e = load_sympy().E
    return module


def symbolic_math() -> types.ModuleType:
    module = types.ModuleType("math")
    module.__dict__.update({name: getattr(math, name) for name in dir(math) if not name.startswith("__")})
    for name, function in sympy_functions().items():
        if hasattr(math, name):
            module.__dict__[name] = function
    module.pi = load_sympy().pi
    module.e = load_sympy().E
    return module


def symbolic_special() -> types.ModuleType:
    module = types.ModuleType("scipy.special")
    module.expit = elementwise(sympy_functions()["expit"])
    return module


def traced_builtins(replacements: dict[str, types.ModuleType]) -> dict:
    """Builtins whose import hands the program the symbolic numpy and math."""
    real_import = builtins.__import__

    def import_hook(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name in replacements:
            return replacements[name]
        return real_import(name, globals, locals, fromlist, level)

    table = dict(vars(builtins))
    table["__import__"] = import_hook
    return table


# ---------------------------------------------------------------- extraction


def feature_symbols(features: tuple[str, ...]) -> list:
    sympy = load_sympy()
    return [sympy.Symbol(name, positive=True) for name in symbol_names(features)]


def symbol_names(features: tuple[str, ...]) -> list[str]:
    """Identifier names for the features' symbols (formula text is parsed back, so 'N params'
    must be one name: N_params; 'D [tokens]' → D_tokens), distinct, never a p0..pk."""
    names: list[str] = []
    for name in features:
        candidate = name if name.isidentifier() and not keyword.iskeyword(name) else re.sub(r"\W+", "_", name).strip("_") or "x"
        if not candidate.isidentifier() or keyword.iskeyword(candidate) or re.fullmatch(r"p\d+", candidate):
            candidate = f"x_{candidate}"
        while candidate in names:
            candidate += "_"
        names.append(candidate)
    return names


def param_symbols(n: int) -> list:
    sympy = load_sympy()
    return [sympy.Symbol(f"p{i}", real=True) for i in range(n)]


def trace_expressions(code: str, features: tuple[str, ...], n_targets: int, n_params: int) -> list:
    """Call scaling_law_func on symbols; raises on anything that does not trace."""
    sympy = load_sympy()
    replacements = {"numpy": symbolic_numpy(), "math": symbolic_math(), "scipy.special": symbolic_special()}
    namespace = {"__name__": "traced_program", "__builtins__": traced_builtins(replacements)}
    exec(compile(code, "<program>", "exec"), namespace)  # noqa: S102 - runs inside the isolated child
    x = as_symbolic(np.array([feature_symbols(features)], dtype=object))
    p = as_symbolic(np.array(param_symbols(n_params), dtype=object))
    out = namespace["scaling_law_func"](x, p)
    values = np.asarray(out, dtype=object).reshape(-1)
    if len(values) != n_targets:
        raise ValueError(f"traced {len(values)} outputs for {n_targets} targets")
    expressions = [tidy(sympy.sympify(v)) for v in values]
    allowed = set(feature_symbols(features)) | set(param_symbols(n_params))
    for expression in expressions:
        if not isinstance(expression, sympy.Expr) or expression.has(sympy.nan, sympy.zoo):
            raise ValueError("not a finite expression")
        if not expression.free_symbols <= allowed:
            raise ValueError("unknown symbols in the expression")
        if sympy.count_ops(expression) > MAX_OPS:
            raise ValueError("expression too large to read")
    return expressions


def real_predictions(code: str, rows: np.ndarray, params: np.ndarray, n_targets: int) -> np.ndarray:
    namespace = {"__name__": "checked_program"}
    exec(compile(code, "<program>", "exec"), namespace)  # noqa: S102 - runs inside the isolated child
    out = np.asarray(namespace["scaling_law_func"](rows.copy(), params.copy()), dtype=float)
    return out.reshape(len(rows), n_targets)


def formula_predictions(expressions: list, features: tuple[str, ...], n_params: int, rows: np.ndarray, params: np.ndarray) -> np.ndarray:
    sympy = load_sympy()
    symbols = feature_symbols(features) + param_symbols(n_params)
    columns = []
    for expression in expressions:
        function = sympy.lambdify(symbols, expression, modules="numpy")
        values = function(*[rows[:, j] for j in range(rows.shape[1])], *params)
        columns.append(np.broadcast_to(np.asarray(values, dtype=float), (len(rows),)))
    return np.stack(columns, axis=1)


def agrees(expected: np.ndarray, got: np.ndarray) -> bool:
    both_finite = np.isfinite(expected) & np.isfinite(got)
    if not np.array_equal(np.isfinite(expected), np.isfinite(got)):
        return False
    return bool(np.allclose(expected[both_finite], got[both_finite], rtol=CHECK_RTOL, atol=1e-12))


WHOLE_BELOW = 1e6  # a whole-number float smaller than this reads as an integer (larger ones keep their exponent)


def tidy(expression):
    """Whole-number floats as integers, so `1.0*p0` reads `p0` and `10.0**x` reads `10**x`."""
    sympy = load_sympy()
    whole = {f: sympy.Integer(int(f)) for f in expression.atoms(sympy.Float) if float(f).is_integer() and abs(f) < WHOLE_BELOW}
    return expression.xreplace(whole) if whole else expression


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "#": r"\#", "$": r"\$", "%": r"\%", "&": r"\&",
                  "_": r"\_", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_name(name: str) -> str:
    r"""A column's own name as LaTeX text: spaces kept (`\mathrm` drops them, so `N (params)`
    read as a function call N(params)) and LaTeX's special characters escaped."""
    return r"\text{" + "".join(LATEX_SPECIALS.get(c, c) for c in name) + "}"


def latex_of(expression, features: tuple[str, ...]) -> str:
    sympy = load_sympy()
    names = {symbol: latex_name(name) for symbol, name in zip(feature_symbols(features), features)}
    return sympy.latex(expression, symbol_names=names)


def extract_formula(job: FormulaJob) -> Formula | None:
    """The program's law as expressions, checked on real rows; None when it cannot be recovered."""
    if job.n_params is None:
        return None
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            expressions = trace_expressions(job.code, job.features, job.n_targets, job.n_params)
            verified = False
            if job.check_params is not None and job.check_rows:
                rows = np.asarray(job.check_rows, dtype=float)
                params = np.asarray(job.check_params, dtype=float)
                expected = real_predictions(job.code, rows, params, job.n_targets)
                if not agrees(expected, formula_predictions(expressions, job.features, job.n_params, rows, params)):
                    return None
                verified = True
            return Formula(
                tuple(str(e) for e in expressions),
                tuple(latex_of(e, job.features) for e in expressions),
                verified,
            )
    except BaseException:  # noqa: BLE001 - a program may raise anything; no formula then
        return None


# ---------------------------------------------------------------- reading a formula (trusted side)
# These never run candidate code: they parse the text the sandboxed child sent back (after
# checking it is only arithmetic on known names), put fitted constants in and tidy it.
