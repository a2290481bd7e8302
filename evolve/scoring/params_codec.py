"""The one channel from a program's fit to its prediction: the parameters it returned, as data.

Fitting and prediction run in separate processes (see worker.py), so `scaling_law_func`
sees nothing of the fit but what `fit_scaling_law` returned. That value crosses as a JSON
tree of plain data (numbers, numeric arrays and scalars, lists, tuples, dicts with string
keys, strings, None, scipy's OptimizeResult), checked and measured by `measure` on the
trusted side and rebuilt exactly (float64 values round-trip through their repr) by
`decode` in the prediction process. Anything else (an object, a function) cannot cross:
the fit fails with a message saying so.

Because nothing else crosses, the parameter count is a count of what a law uses: every
number (a bare integer as one parameter per 64 bits; a numpy value holds only what its
dtype can), every string (a dict key or a value)
as one per 8 bytes of text, and every None, empty container and empty array (one per
dimension), since any of them can carry a number as well as a float can. What is left
uncounted is the shape of the tree itself (the nesting, list-or-tuple, the dims of a
non-empty array), a few bits per container.
"""

from __future__ import annotations

import json
import math

import numpy as np

MAX_DEPTH = 16
MAX_NODES = 200_000
MAX_DIMS = 64  # numpy's own limit on an array's dimensions
MAX_STRING_BYTES = 256
ENCODED_CAP_BYTES = 16 << 20  # one evaluation's parameters, all groups
NUMERIC_KINDS = "biuf"  # bool, int, unsigned, float arrays


class ParamsError(ValueError):
    """Parameters that cannot cross to prediction (an unsupported type, too deep, too large)."""


def encode(value: object, depth: int = 0) -> object:
    """A JSON-able tree of `value`; raises ParamsError naming what cannot be passed."""
    if depth > MAX_DEPTH:
        raise ParamsError(f"fitted parameters are nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return check_string(value) if isinstance(value, str) else value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in NUMERIC_KINDS:
            raise ParamsError(f"fitted parameters hold an array of dtype {value.dtype} (numbers only)")
        return {"a": value.dtype.str, "shape": list(value.shape), "v": value.ravel().tolist()}
    if isinstance(value, np.generic):
        if value.dtype.kind not in NUMERIC_KINDS:
            raise ParamsError(f"fitted parameters hold a numpy {value.dtype} (numbers only)")
        return {"n": value.dtype.str, "v": value.item()}
    if type(value) in (int, float):
        return value
    if type(value) is list:
        return [encode(item, depth + 1) for item in value]
    if type(value) is tuple:
        return {"t": [encode(item, depth + 1) for item in value]}
    if type(value) is dict or is_optimize_result(value):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise ParamsError("fitted parameters hold a dict with a non-string key")
            items.append([check_string(key), encode(item, depth + 1)])
        return {"o" if is_optimize_result(value) else "d": items}
    raise ParamsError(f"fitted parameters of type {type(value).__name__} cannot be passed to scaling_law_func "
                      "(numbers, numeric arrays, lists, tuples, dicts and strings only)")


def is_optimize_result(value: object) -> bool:
    return type(value).__name__ == "OptimizeResult" and type(value).__module__.startswith("scipy.optimize")


def check_string(text: str) -> str:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_STRING_BYTES:
        raise ParamsError(f"fitted parameters hold a string longer than {MAX_STRING_BYTES} bytes")
    return text


def dumps(params_by_group: list[tuple[str, object]]) -> bytes:
    """Every group's encoded parameters; raises ParamsError when too large."""
    data = json.dumps([[group, encode(params)] for group, params in params_by_group]).encode("utf-8", "surrogatepass")
    if len(data) > ENCODED_CAP_BYTES:
        raise ParamsError(f"fitted parameters take more than {ENCODED_CAP_BYTES >> 20} MB")
    return data


# --------------------------------------------------------------------------- trusted side


def measure(tree: object) -> tuple[list[float], int]:
    """The numbers of an encoded tree in order, and how many parameters its strings count as.

    Trusted code on untrusted data: every node is checked (types, tags, shapes, depth,
    size); raises ParamsError on anything `encode` would not have produced."""
    numbers: list[float] = []
    text_weight = 0
    nodes = 0
    pending: list[tuple[object, int]] = [(tree, 0)]
    while pending:
        node, depth = pending.pop()
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_DEPTH + 1:
            raise ParamsError("fitted parameters are too large or too deep")
        if node is None:
            text_weight += 1  # a None (or a list of them) can count as well as a number can
            continue
        if isinstance(node, bool) or type(node) in (int, float):
            numbers.append(float(node))
            text_weight += int_weight(node) - 1 if type(node) is int else 0
        elif isinstance(node, str):
            text_weight += string_weight(node)
        elif isinstance(node, list):
            text_weight += 0 if node else 1
            pending.extend((item, depth + 1) for item in reversed(node))
        elif isinstance(node, dict):
            numbers_here, pairs = tagged(node)
            numbers.extend(numbers_here)
            if not numbers_here and not pairs:  # an empty array (its dims), tuple or dict
                text_weight += max(1, len(node.get("shape", ())))
            for key, item in reversed(pairs):
                text_weight += 0 if key is None else string_weight(key)
                pending.append((item, depth + 1))
        else:
            raise ParamsError("malformed parameters")
    return numbers, text_weight


def int_weight(value: int) -> int:
    """An integer counts as one parameter per 64 bits: a huge one can pack many floats."""
    return max(1, math.ceil(abs(value).bit_length() / 64))


def string_weight(text: str) -> int:
    """A string counts as one parameter per 8 bytes (what a float64 holds)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_STRING_BYTES:
        raise ParamsError("malformed parameters: string too long")
    return max(1, math.ceil(size / 8))


def tagged(node: dict) -> tuple[list[float], list[tuple[str | None, object]]]:
    """The numbers held directly by a tagged node, and its (key, child) pairs."""
    if set(node) == {"a", "shape", "v"}:
        dtype, shape, values = check_dtype(node["a"]), node["shape"], node["v"]
        # dims bounded before their product: a product of huge integers is the trusted side's time
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS or not isinstance(values, list)
                or not all(type(d) is int and 0 <= d <= MAX_NODES for d in shape)):
            raise ParamsError("malformed parameters: array")
        if math.prod(shape) != len(values) or not fits_dtype(values, dtype):
            raise ParamsError("malformed parameters: array values")
        return [float(v) for v in values], []
    if set(node) == {"n", "v"}:
        if not fits_dtype([node["v"]], check_dtype(node["n"])):
            raise ParamsError("malformed parameters: scalar")
        return [float(node["v"])], []
    if set(node) == {"t"} and isinstance(node["t"], list):
        return [], [(None, item) for item in node["t"]]
    if len(node) == 1 and next(iter(node)) in ("d", "o") and isinstance(next(iter(node.values())), list):
        pairs = []
        for pair in next(iter(node.values())):
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise ParamsError("malformed parameters: dict")
            pairs.append((pair[0], pair[1]))
        return [], pairs
    raise ParamsError("malformed parameters: unknown node")


def check_dtype(text: object) -> np.dtype:
    """The numeric dtype a tag names; ParamsError for any other tag."""
    try:
        dtype = np.dtype(text) if isinstance(text, str) and len(text) <= 8 else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in NUMERIC_KINDS:
        raise ParamsError("malformed parameters: dtype")
    return dtype


def fits_dtype(values: list, dtype: np.dtype) -> bool:
    """Whether every value is what `encode` writes for a numpy value of `dtype`: a float for
    a float dtype, a bool for bool, an int within the integer dtype's range. A huge integer
    under a float or int64 tag (a forged `item()`, or an answer written by hand) would
    carry many floats' worth of bits as one counted parameter."""
    if dtype.kind == "f":
        return all(type(v) is float for v in values)
    if dtype.kind == "b":
        return all(type(v) is bool for v in values)
    info = np.iinfo(dtype)
    return all(type(v) is int and info.min <= v <= info.max for v in values)


def measured_params(trees: list[object]) -> tuple[list[list[float]], list[int]]:
    """Per group: its numbers and its counted size (numbers plus string weight)."""
    flats, counted = [], []
    for tree in trees:
        numbers, weight = measure(tree)
        flats.append(numbers)
        counted.append(len(numbers) + weight)
    return flats, counted


# --------------------------------------------------------------------------- prediction side


def decode(node: object) -> object:
    """The value `encode` was given (a copy): arrays with their dtype and shape, tuples, dicts."""
    if node is None or isinstance(node, (bool, str)) or type(node) in (int, float):
        return node
    if isinstance(node, list):
        return [decode(item) for item in node]
    if "a" in node:
        return np.array(node["v"], dtype=np.dtype(node["a"])).reshape(node["shape"])
    if "n" in node:
        return np.dtype(node["n"]).type(node["v"])
    if "t" in node:
        return tuple(decode(item) for item in node["t"])
    if "o" in node:
        from scipy.optimize import OptimizeResult

        return OptimizeResult({key: decode(item) for key, item in node["o"]})
    return {key: decode(item) for key, item in node["d"]}
