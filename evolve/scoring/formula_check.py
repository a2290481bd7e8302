"""Evaluate an extracted formula numerically in the trusted parent, without sympy.

The formula text comes from a process that ran candidate code, so it is never given to
`sympify` or `eval` (both execute Python). It is parsed with `ast` and walked with a
whitelist: numbers, the feature and parameter names, + - * / ** and unary minus,
comparisons, `&`/`|`, tuples (for Piecewise) and the functions sympy prints for the
operations evolve.symbolic traces. The values are compared with the predictions the
program itself made, in a separate prediction process, on the same rows and fitted
parameters: a formula that does not reproduce them is not shown.
"""

from __future__ import annotations

import ast

import numpy as np
from scipy import special

from evolve.program import parse_python
from evolve.symbolic import symbol_names, unbounded_arithmetic

MAX_CHARS = 20_000
MAX_NODES = 4_000


class Unsupported(ValueError):
    """A formula this evaluator cannot compute (an unknown function, say): shown unchecked."""


def piecewise(*pairs):
    result = None
    for value, condition in reversed(pairs):
        value = np.asarray(value, dtype=float)
        result = value if result is None else np.where(condition, value, result)
    return result


FUNCTIONS = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "Abs": np.abs, "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "tanh": np.tanh, "sinh": np.sinh, "cosh": np.cosh, "atan": np.arctan, "asin": np.arcsin, "acos": np.arccos,
    "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh, "erf": special.erf, "erfc": special.erfc,
    "gamma": special.gamma, "loggamma": special.gammaln, "sign": np.sign, "floor": np.floor, "ceiling": np.ceil,
    "Max": lambda *a: np.maximum.reduce(np.broadcast_arrays(*a)), "Min": lambda *a: np.minimum.reduce(np.broadcast_arrays(*a)),
    "Piecewise": piecewise, "Heaviside": lambda x, h=0.5: np.heaviside(x, h), "expm1": np.expm1, "log1p": np.log1p,
    "atan2": np.arctan2, "sigmoid": special.expit, "Mod": np.mod,
}
CONSTANTS = {"pi": np.pi, "E": np.e, "True": True, "False": False}
BINARY = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide, ast.Pow: np.power,
          ast.BitAnd: np.logical_and, ast.BitOr: np.logical_or, ast.Mod: np.mod}
COMPARE = {ast.Gt: np.greater, ast.GtE: np.greater_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
           ast.Eq: np.equal, ast.NotEq: np.not_equal}


def evaluate(text: str, names: dict[str, np.ndarray]) -> np.ndarray:
    """The formula's values for the given name bindings; Unsupported when it cannot be computed."""
    if not isinstance(text, str) or len(text) > MAX_CHARS:
        raise Unsupported("formula too long")
    try:
        tree = parse_python(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise Unsupported("formula does not parse") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise Unsupported("formula too large")
    reason = unbounded_arithmetic(tree, set(names))
    if reason:  # floats would pass it (Min(p0, inf) is p0), but the sympy that shows it never returns
        raise Unsupported(reason)
    with np.errstate(all="ignore"):
        try:
            return np.asarray(walk(tree.body, names), dtype=float)
        except RecursionError:
            raise Unsupported("formula too deep") from None


def walk(node: ast.AST, names: dict[str, np.ndarray]):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value) if abs(node.value) < 1e308 else float("inf")
    if isinstance(node, ast.Name):
        if node.id in names:
            return names[node.id]
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise Unsupported(f"unknown name {node.id[:40]!r}")
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = walk(node.left, names), walk(node.right, names)
        if isinstance(node.op, ast.Pow):
            left = np.asarray(left, dtype=float)  # integer powers of integers must not overflow silently
        return BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = walk(node.operand, names)
        return np.negative(value) if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in COMPARE:
        return COMPARE[type(node.ops[0])](walk(node.left, names), walk(node.comparators[0], names))
    if isinstance(node, ast.Tuple):
        return tuple(walk(item, names) for item in node.elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords:
        return FUNCTIONS[node.func.id](*[walk(arg, names) for arg in node.args])
    raise Unsupported(f"unsupported syntax {type(node).__name__}")


def formula_values(expressions: list[str], features: tuple[str, ...], rows: np.ndarray, params: list[float]) -> np.ndarray:
    """(rows, targets) values of the expressions, features by name and p0..pk for parameters."""
    names = {f"p{i}": float(value) for i, value in enumerate(params)}
    for j, name in enumerate(symbol_names(features)):  # the names evolve.symbolic gives the features' symbols
        names[name] = rows[:, j]
    columns = [np.broadcast_to(evaluate(text, names), (len(rows),)) for text in expressions]
    return np.stack(columns, axis=1)
