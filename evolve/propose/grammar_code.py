"""The grammar's program text: a law spec rendered as an evolvable program, and read back.

`program_code` writes the spec into the program (`LAW_SPEC = {...}`) next to the numpy code
it means, so the offline search can read a parent back (`spec_from_code`) and mutate it;
`describe_spec` is the one-line math a person reads.
"""

from __future__ import annotations

import ast
import json
import re
import copy
from dataclasses import dataclass

from evolve.program import parse_python
from evolve.propose.grammar import (
    Param,
    TaskContext,
    effdata_params,
    factor_param_names,
    identifier,
    nonlinear_params,
    validate_spec,
    var_code,
    var_name,
)


# ----------------------------------------------------------------------------- code generation


FACTOR_FORMS = {  # kind: (numpy code, the one-line math a person reads)
    "pow": ("{v} ** -{n[0]}", "{v}^-{n[0]}"),
    "isqrt": ("{v} ** -0.5", "{v}^-0.5"),  # fixed exponents cost no parameter: room under tight caps
    "inv": ("1 / {v}", "{v}^-1"),
    "powoff": ("({v} + np.exp({n[1]})) ** -{n[0]}", "({v}+e^{n[1]})^-{n[0]}"),
    "sat": ("1 / (1 + ({v} * np.exp(-{n[1]})) ** {n[0]})", "1/(1+({v}/e^{n[1]})^{n[0]})"),
    "exp": ("_exp(-{n[0]} * {v})", "exp(-{n[0]}*{v})"),
    "log": ("np.log({v})", "log({v})"),
    "logoff": ("np.log({v} + np.exp({n[0]}))", "log({v}+e^{n[0]})"),
}


def factor_expr(kind: str, v: str, names: list[str]) -> str:
    """The factor as numpy code; a plain variable ("lin") is itself."""
    return FACTOR_FORMS[kind][0].format(v=v, n=names) if kind in FACTOR_FORMS else v


def factor_text(kind: str, v: str, names: list[str]) -> str:
    """The factor in the one-line math a person reads (docstrings, explanations)."""
    return FACTOR_FORMS[kind][1].format(v=v, n=names) if kind in FACTOR_FORMS else v


@dataclass(frozen=True)
class RenderedLaw:
    """The pieces of one target's law as code: variables, columns, names and bounds."""

    target: str
    var_lines: list[tuple[str, str]]  # (name, expression)
    columns: list[str]  # one expression per linear coefficient (constant first when present)
    coef_names: list[str]
    nonlinear: list[Param]
    formula: str
    output: str
    loss: str


def render_law(law: dict, ctx: TaskContext, target: str) -> RenderedLaw:
    eff_names = effdata_params(law)
    eff_by_key = {key: name for name, key in eff_names.items()}
    var_lines: dict[str, str] = {}
    columns, texts, coef_names = [], [], []
    if law["const"]:
        columns.append("np.ones(len(X))")
        coef_names.append("c")
    names_iter = iter(factor_param_names(law))
    for t, term in enumerate(law["terms"], start=1):
        exprs, text = [], []
        for fac in term:
            key = json.dumps(fac["var"], sort_keys=True)
            name = var_name(fac["var"], ctx)
            var_lines.setdefault(name, var_code(fac["var"], ctx, eff_by_key.get(key)))
            names, _ = next(names_iter)
            exprs.append(factor_expr(fac["kind"], name, names))
            text.append(factor_text(fac["kind"], name, names))
        columns.append(" * ".join(exprs))
        coef_names.append(f"a{t}")
        texts.append(f"a{t}*" + "*".join(text))
    body = " + ".join((["c"] if law["const"] else []) + texts)
    formula = {"identity": body, "exp": f"exp({body})", "negexp": f"-exp({body})"}[law["output"]]
    return RenderedLaw(target, list(var_lines.items()), columns, coef_names, nonlinear_params(law), formula, law["output"], law["loss"])


def unpack(names: list[str]) -> str:
    """Left side of an unpacking assignment (a lone name needs its trailing comma)."""
    return ", ".join(names) if len(names) > 1 else f"{names[0]},"


def law_function_code(r: RenderedLaw, fname: str) -> str:
    """`predict_<target>(X, p)`: the formula written out with named parameters."""
    names = r.coef_names + [p.name for p in r.nonlinear]
    lines = [f"def {fname}(X, p):", f'    """{r.target} = {r.formula}"""', f"    {unpack(names)} = p"]
    lines += [f"    {name} = {expr}" for name, expr in r.var_lines]
    terms = [f"{coef} * {col}" if col != "np.ones(len(X))" else coef for coef, col in zip(r.coef_names, r.columns)]
    total = " + ".join(terms)
    if r.output == "identity":
        lines.append(f"    return {total}")
    else:
        sign = "-" if r.output == "negexp" else ""
        lines.append(f"    return {sign}_exp({total})")
    return "\n".join(lines)


def design_function_code(r: RenderedLaw, fname: str) -> str:
    """`design_<target>(X, theta)`: one column per linear coefficient, for variable projection."""
    lines = [f"def {fname}(X, theta):"]
    if r.nonlinear:
        lines.append(f"    {unpack([p.name for p in r.nonlinear])} = theta")
    lines += [f"    {name} = {expr}" for name, expr in r.var_lines]
    cols = ",\n        ".join(r.columns)
    lines.append(f"    return np.column_stack([\n        {cols},\n    ])")
    return "\n".join(lines)


HELPERS = '''
def _exp(z):
    """exp that cannot overflow: laws stay finite on rows far outside the training range."""
    return np.exp(np.clip(z, -60, 60))


def _fit_law(design, bounds, y, output, loss, size):
    """Variable projection: search the nonlinear parameters, solve the linear ones exactly.

    Multiplicative laws (output exp / negexp) are fitted on log|y|.
    """
    if output != "identity":
        y = np.log(np.maximum(y if output == "exp" else -y, 1e-12))
    theta, coef = varpro_fit(design, bounds, y, n_starts=N_STARTS, seed=0, loss=loss, f_scale=F_SCALE * np.std(y) + 1e-12)
    params = np.concatenate([np.ravel(coef), np.ravel(theta)])
    if params.size != size or not np.all(np.isfinite(params)):
        params = np.nan_to_num(np.resize(params, size))
    return params
'''


def target_ident(target: str, ctx: TaskContext) -> str:
    return identifier(target) if ctx.n_targets > 1 else "law"


def program_code(spec: dict, ctx: TaskContext, explanation: str = "", n_starts: int = 6) -> str:
    """A complete fit-API program for the spec, with the spec embedded for later mutation."""
    validate_spec(spec, ctx)
    rendered = [render_law(law, ctx, target) for law, target in zip(spec["laws"], ctx.targets)]
    idents = [target_ident(t, ctx) for t in ctx.targets]
    sizes = [len(r.coef_names) + len(r.nonlinear) for r in rendered]
    formulas = "\n".join(f"    {r.target} = {r.formula}" for r in rendered)
    param_lines = "\n".join(f"    {r.target}: {', '.join(r.coef_names + [p.name for p in r.nonlinear])}" for r in rendered)
    header = f'''"""A scaling law written by the offline grammar proposer.

{formulas}

Parameters (fitted per group, in this order, {sum(sizes)} in all):
{param_lines}
Linear coefficients (c, a_i) are solved exactly; exponents and offsets are searched.
"""
import numpy as np

from evolve.fitting import varpro_fit

LAW_SPEC = {spec!r}
N_STARTS = {n_starts}
F_SCALE = 0.05  # robust losses treat residuals beyond 5% of the target spread as outliers
SIZES = {sizes}

'''
    funcs = []
    for r, ident in zip(rendered, idents):
        funcs.append(law_function_code(r, f"predict_{ident}"))
        funcs.append(design_function_code(r, f"design_{ident}"))
        bounds = [list(p.bounds) for p in r.nonlinear]
        funcs.append(f"BOUNDS_{ident.upper()} = {bounds}")
    predict_list = ", ".join(f"predict_{i}" for i in idents)
    fit_items = ",\n        ".join(
        f"(design_{i}, BOUNDS_{i.upper()}, {r.output!r}, {r.loss!r})" for i, r in zip(idents, rendered)
    )
    api = f'''

def scaling_law_func(data_points, params):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    flat = np.asarray(params, dtype=float).ravel()
    parts = np.split(flat, np.cumsum(SIZES)[:-1])
    laws = [{predict_list}]
    out = np.column_stack([law(X, p) for law, p in zip(laws, parts)])
    out = np.nan_to_num(out, nan=0.0, posinf=1e6, neginf=-1e6)
    return out[:, 0] if out.shape[1] == 1 else out


def fit_scaling_law(data_points, loss_values):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    Y = np.asarray(loss_values, dtype=float).reshape(len(X), -1)
    plans = [
        {fit_items},
    ]
    parts = []
    for j, (design, bounds, output, loss) in enumerate(plans):
        parts.append(_fit_law(lambda theta, d=design: d(X, theta), bounds, Y[:, j], output, loss, SIZES[j]))
    return np.concatenate(parts)
'''
    block = header + HELPERS + "\n\n" + "\n\n\n".join(funcs) + "\n" + api
    note = f"# {explanation}\n" if explanation else ""
    return f"{note}# EVOLVE-BLOCK-START\n{block}# EVOLVE-BLOCK-END\n"


MAX_SPEC_CHARS = 50_000  # the grammar's largest laws (20 parameters per target, several targets) write a few thousand
SPEC_PATTERN = re.compile(r"^LAW_SPEC\s*=\s*(.+)$", re.MULTILINE)


def literal(text: str):
    """ast.literal_eval of text, parsed under evolve's parse lock (literal_eval parses, and an
    unlocked parse races the loop's other threads on CPython 3.11: see program.parse_python)."""
    return ast.literal_eval(parse_python(text, mode="eval"))


def spec_from_code(code: str) -> dict | None:
    """The LAW_SPEC literal of a generated program, or None when there is none (or it is broken).

    The text may be a model's: one deeper than the parser's recursion limit (3,000 unary
    minus signs stopped an offline run, attack round 6) or longer than any law the grammar
    writes is no spec."""
    match = SPEC_PATTERN.search(code or "")
    if not match:
        return None
    text = match.group(1).strip()
    if len(text) > MAX_SPEC_CHARS:
        return None
    for parse in (literal, json.loads):
        try:
            spec = parse(text)
        except (ValueError, SyntaxError, RecursionError, MemoryError):
            continue
        if isinstance(spec, dict) and "laws" in spec:
            return copy.deepcopy(spec)
    return None


def describe_spec(spec: dict, ctx: TaskContext) -> str:
    """The law in one line, for reports (first target's formula and how many targets)."""
    rendered = [render_law(law, ctx, target) for law, target in zip(spec["laws"], ctx.targets)]
    first = f"{rendered[0].target} = {rendered[0].formula}"
    if len(rendered) > 1:
        first += f"  (and {len(rendered) - 1} more targets of their own form)"
    return first
