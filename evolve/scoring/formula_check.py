"""Check an extracted formula numerically in the trusted parent, without sympy.

The formula text comes from a process that ran candidate code, so it is computed by
evolve.formula_numbers (an `ast` whitelist, never sympify or eval) on the rows and fitted
parameters the program itself predicted, in a separate prediction process: a formula that
does not reproduce those predictions is not shown.
"""

from __future__ import annotations

import numpy as np

from evolve.formula_numbers import evaluate
from evolve.symbolic import symbol_names


def formula_values(expressions: list[str], features: tuple[str, ...], rows: np.ndarray, params: list[float]) -> np.ndarray:
    """(rows, targets) values of the expressions, features by name and p0..pk for parameters."""
    names = {f"p{i}": float(value) for i, value in enumerate(params)}
    for j, name in enumerate(symbol_names(features)):  # the names evolve.symbolic gives the features' symbols
        names[name] = rows[:, j]
    columns = [np.broadcast_to(evaluate(text, names), (len(rows),)) for text in expressions]
    return np.stack(columns, axis=1)
