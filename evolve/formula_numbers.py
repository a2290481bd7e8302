"""A formula text's numbers, computed in bounded time without sympy: the one evaluator of
formula texts in the trusted parent.

Formula texts come from a process that ran candidate code, so they are never given to
`eval`, and to `sympify` (which executes what it parses) only after this module has
passed them. Two uses share one table of functions:
- `evaluate` computes a text's values on rows with numpy (evolve.scoring.formula_check
  compares them with the program's own predictions: a formula that does not reproduce them
  is not shown);
- `refusal` folds every symbol-free part of a text to a float, so that a part sympy would
  compute without bound (`10**10**9` exactly, `Min(p0, 10**10**9)` compared at any
  precision) is refused before evolve.formula_display gives the text to sympy, and bounds
  the arguments sympy compares pairwise in Max, Min and Piecewise.
`SHOWN_FUNCTIONS`, a part of the same table, is the whitelist formula_display lets sympy read.
"""

from __future__ import annotations

import ast

import numpy as np
from scipy import special

from evolve.program import parse_python

MAX_CHARS = 20_000
MAX_NODES = 4_000
MAX_CONSTANT_EXPONENT = 1000.0  # a law's constant exponents are small; sympy raises numbers to them exactly


class Unsupported(ValueError):
    """A formula this evaluator cannot compute (an unknown function, say): shown unchecked."""


class Unbounded(Exception):
    """A part of a formula text whose exact value sympy could not compute in bounded time."""


def piecewise(*pairs):
    result = None
    for value, condition in reversed(pairs):
        value = np.asarray(value, dtype=float)
        result = value if result is None else np.where(condition, value, result)
    return result


def reduced(function):
    """A sympy n-ary function (Max, And, ...) as a numpy reduction over broadcast arguments."""
    return lambda *args: function.reduce(np.broadcast_arrays(*args))


# the functions sympy prints for what evolve.symbolic traces, by their sympy names
FUNCTIONS = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "cbrt": np.cbrt, "Abs": np.abs, "sign": np.sign,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "tanh": np.tanh, "sinh": np.sinh, "cosh": np.cosh,
    "atan": np.arctan, "asin": np.arcsin, "acos": np.arccos, "asinh": np.arcsinh, "acosh": np.arccosh,
    "atanh": np.arctanh, "atan2": np.arctan2, "erf": special.erf, "erfc": special.erfc, "gamma": special.gamma,
    "loggamma": special.gammaln, "floor": np.floor, "ceiling": np.ceil, "expm1": np.expm1, "log1p": np.log1p,
    "sigmoid": special.expit, "Mod": np.mod, "Heaviside": lambda x, h=0.5: np.heaviside(x, h),
    "Max": reduced(np.maximum), "Min": reduced(np.minimum), "Piecewise": piecewise,
    "Eq": np.equal, "Ne": np.not_equal, "And": reduced(np.logical_and), "Or": reduced(np.logical_or),
    "Not": np.logical_not, "Rational": lambda a, b=1.0: np.divide(a, b), "Float": np.float64, "Integer": np.float64,
}  # fmt: skip
# the part of FUNCTIONS evolve.formula_display lets sympy read (and lambdify compute with numpy)
SHOWN_FUNCTIONS = frozenset({
    "exp", "log", "sqrt", "cbrt", "Abs", "sign", "sin", "cos", "tan", "sinh", "cosh", "tanh", "atan", "asin",
    "acos", "atanh", "Max", "Min", "Piecewise", "Eq", "Ne", "And", "Or", "Not", "Rational", "Float", "Integer",
})  # fmt: skip
assert SHOWN_FUNCTIONS <= set(FUNCTIONS)
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
    reason = refusal(tree, set(names))
    if reason:  # floats would pass it (Min(p0, inf) is p0), but the sympy that shows it never returns
        raise Unsupported(reason)
    with np.errstate(all="ignore"):
        try:
            return np.asarray(walk(tree.body, names), dtype=float)
        except RecursionError:
            raise Unsupported("formula too deep") from None


def number(node: ast.Constant) -> float | bool:
    """A literal as a float (True and False as themselves: sympy prints a Piecewise's last
    condition as True); a literal past float range is infinite (never a huge exact integer)."""
    if type(node.value) is bool:
        return node.value
    if type(node.value) not in (int, float):
        raise Unsupported(f"not a number: {type(node.value).__name__}")
    return float(node.value) if abs(node.value) < 1e308 else float("inf")


def elementwise(value, names: dict[str, np.ndarray]):
    """The value, refused when it holds more numbers than a binding: a formula is computed
    row by row, and a text that broadcasts beyond its rows (nested tuple literals made a
    4.4 KB text into 150**4 numbers, 8 GB in the trusted parent: attack round 7) is not one."""
    rows = max((np.size(v) for v in names.values()), default=1)
    if np.size(value) > max(rows, 1):
        raise Unsupported("formula broadcasts beyond its rows")
    return value


def walk(node: ast.AST, names: dict[str, np.ndarray]):
    """The value of a parsed formula node under the name bindings (numpy, elementwise)."""
    if isinstance(node, ast.Constant):
        return number(node)
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
        return elementwise(BINARY[type(node.op)](left, right), names)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = walk(node.operand, names)
        return np.negative(value) if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in COMPARE:
        return COMPARE[type(node.ops[0])](walk(node.left, names), walk(node.comparators[0], names))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords:
        pairs = node.func.id == "Piecewise"  # a (value, condition) pair is the one place a tuple is a formula's
        args = [tuple(walk(item, names) for item in arg.elts) if pairs and isinstance(arg, ast.Tuple) else walk(arg, names)
                for arg in node.args]
        return elementwise(FUNCTIONS[node.func.id](*args), names)
    raise Unsupported(f"unsupported syntax {type(node).__name__}")


COMPARING = frozenset({"Max", "Min", "Piecewise", "And", "Or"})  # sympy compares or rebuilds their arguments pairwise
MAX_ARGUMENTS = 8  # per Max/Min/Piecewise/And/Or, counted as sympy flattens them (Max(Max(a, b), c) is Max(a, b, c))
MAX_COMPARISONS = 256  # Σ arguments² over them: a law's guards are many 2-argument ones
ARITY = {"Float": (1, 1), "Integer": (1, 1), "Rational": (1, 2)}  # Float(2, 10**7) asks sympy for ten million digits
MAX_EXACT_BITS = 100_000  # the largest exact number (numerator and denominator) a symbol-free part may make


def refusal(tree: ast.AST, symbols: set[str]) -> str | None:
    """Why a parsed formula text must not reach sympy (nor be shown), or None: a number it
    would compute without bound (`unbounded_arithmetic`), or comparisons without bound
    (`unbounded_comparisons`). Both parsers of formula texts in the trusted parent ask."""
    return unbounded_arithmetic(tree, symbols) or unbounded_comparisons(tree)


def unbounded_comparisons(tree: ast.AST) -> str | None:
    """Why sympy's Max/Min/Piecewise/And/Or in this text could take without bound, or None.

    sympy compares the arguments of a Max or Min pairwise (with assumptions and factoring)
    whenever it builds one, and the parent rebuilds a formula many times to show it: an
    attack's Max of 40 powers with symbolic exponents, true to its own program, took
    minutes (K=80: still running after seven), growing as K³; an And of 400 conditions in a
    Piecewise took a minute. Nested calls count as the one sympy flattens them into. The
    number constructors take only their number (a precision argument is refused)."""

    def flat_arguments(node: ast.Call, name: str) -> int:
        return sum(flat_arguments(a, name) if isinstance(a, ast.Call) and getattr(a.func, "id", None) == name else 1
                   for a in node.args)

    total = 0
    for node in ast.walk(tree):
        name = getattr(getattr(node, "func", None), "id", None) if isinstance(node, ast.Call) else None
        if name in ARITY and not ARITY[name][0] <= len(node.args) <= ARITY[name][1]:
            return f"{name} with {len(node.args)} arguments"
        if name in COMPARING:
            count = flat_arguments(node, name) if name != "Piecewise" else len(node.args)
            if count > MAX_ARGUMENTS:
                return f"{name} with {count} arguments (at most {MAX_ARGUMENTS})"
            total += len(node.args) ** 2
    return "too many comparisons" if total > MAX_COMPARISONS else None


def unbounded_arithmetic(tree: ast.AST, symbols: set[str]) -> str | None:
    """Why giving this parsed formula to sympy could compute without bound, or None.

    sympy evaluates number ** number exactly (`10**10**9` has a billion digits) and compares
    the numbers in Min/Max at whatever precision it takes, so a formula text forged by the
    process that traced it can hang the trusted side that parses it. Float arithmetic says
    how large each symbol-free part is in bounded time: every one must be finite, and every
    constant exponent at most MAX_CONSTANT_EXPONENT (a symbolic base raised to 10**9 is as
    expensive once numbers are put in). A number finite in float can still be huge exact:
    `((1 + 2**-1000)**1000)**1000` is 1.0 in float and a billion-bit fraction to sympy, so
    each exact part's size is bounded too (bits add under + − × ÷ and multiply by an
    integer power; a float literal anywhere makes the part a float to sympy as well). A
    symbol-free call of a function not in FUNCTIONS is refused too: sympy prints such parts
    of a traced law as numbers."""

    def value(node: ast.AST) -> tuple[float, int | None] | None:  # None: the part holds a symbol; bits None: a float
        folded = part_value(node)
        if folded is not None and np.isinf(folded[0]):
            raise Unbounded("a number too large")
        if folded is not None and folded[1] is not None and folded[1] > MAX_EXACT_BITS:
            raise Unbounded("an exact number too large")
        return folded

    def part_value(node: ast.AST) -> tuple[float, int | None] | None:
        if isinstance(node, ast.Constant):
            if type(node.value) is int:
                return number(node), max(1, abs(node.value).bit_length()) if abs(node.value) < 1e308 else None
            return (number(node), None) if type(node.value) is float else None
        if isinstance(node, ast.Name):
            return None if node.id in symbols or node.id not in CONSTANTS else (float(CONSTANTS[node.id]), 1)
        children = [value(child) for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr)]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            if children[1] is not None and not abs(children[1][0]) <= MAX_CONSTANT_EXPONENT:
                raise Unbounded("constant exponent too large")
        if isinstance(node, ast.Call):
            children = children[1:]  # the first child is the function's own name
        if any(child is None for child in children):
            return None
        numbers = [c[0] for c in children]
        sizes = [c[1] for c in children]
        exact = None if any(b is None for b in sizes) else sum(sizes)
        try:  # from the children's values: each node is computed once, whatever the depth
            if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
                if isinstance(node.op, ast.Pow) and exact is not None:
                    exact = sizes[0] * max(1, int(np.ceil(abs(numbers[1]))))
                return float(BINARY[type(node.op)](np.float64(numbers[0]), numbers[1])), exact
            if isinstance(node, ast.UnaryOp):
                return -numbers[0], exact
            if isinstance(node, ast.Call):
                function = FUNCTIONS.get(getattr(node.func, "id", None))
                if function is None or node.keywords:
                    raise Unbounded("a number sympy would compute with an unlisted function")
                return float(function(*numbers)), exact
        except (TypeError, ValueError, ZeroDivisionError):
            return float("nan"), exact
        return None

    with np.errstate(all="ignore"):
        try:
            value(tree.body if isinstance(tree, ast.Expression) else tree)
        except Unbounded as reason:
            return str(reason)
        except (OverflowError, RecursionError):  # the text nests too deep
            return "a number too large"
    return None
