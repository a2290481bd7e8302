"""A small grammar of scaling laws: a JSON spec per law, its parameters, and its program text.

A law for one target is `y = c + a1*T1 + a2*T2 + ...` (or `exp` of that sum, for
multiplicative laws), where each term T is a product of factors and each factor applies
one building block to one input variable: a power `v^-b` (or with the fixed exponent
1/2 or 1, which costs no parameter), a power with an offset
`(v + e^l)^-b`, a saturation `1/(1 + (v/e^l)^a)`, an exponential `exp(-k v)`, a log, or
the variable itself. Products of logs give quadratic-in-log (U-shaped) terms. Variables
are features, ratios or products of two features, `10^x` of a log-valued feature, or the
effective data of a repeated corpus. The linear coefficients (c, a_i) are solved exactly
for each setting of the nonlinear ones (variable projection), so a law with k exponents
is a k-dimensional search, which is what keeps fitting fast and robust.

The spec is plain JSON (dicts and lists) so it can be written into the generated program
as `LAW_SPEC = {...}` and read back from a parent to be mutated.
"""

from __future__ import annotations

import builtins
import copy
import json
import keyword
import re
from dataclasses import dataclass

import numpy as np

SPEC_VERSION = 1
FACTOR_KINDS = ("pow", "isqrt", "inv", "powoff", "sat", "exp", "log", "logoff", "lin")
VAR_OPS = ("feat", "ratio", "prod", "exp10", "effdata")
OUTPUTS = ("identity", "exp", "negexp")
LOSSES = ("linear", "soft_l1")
POWER_KINDS = ("pow", "isqrt", "inv")  # v^a * v^b is one power of v: at most one per variable in a term

# Which factor kinds make sense on a variable of each sign class.
KINDS_BY_SIGN = {
    "positive": ("pow", "isqrt", "inv", "powoff", "sat", "log", "lin", "exp"),
    "nonneg": ("powoff", "logoff", "lin", "exp"),
    "real": ("lin", "exp"),
}
# Bounds of each nonlinear parameter, in the order the factor uses them.
PARAM_BOUNDS = {
    ("pow", "dec"): [(0.0, 3.0)],
    ("pow", "any"): [(-3.0, 3.0)],
    ("powoff", "dec"): [(0.0, 3.0), (-9.0, 4.0)],
    ("powoff", "any"): [(-3.0, 3.0), (-9.0, 4.0)],
    ("sat", "dec"): [(0.1, 4.0), (-7.0, 7.0)],
    ("sat", "any"): [(0.1, 4.0), (-7.0, 7.0)],
    ("exp", "dec"): [(0.0, 5.0)],
    ("exp", "any"): [(-2.0, 5.0)],  # growth kept gentle: exponentials explode when extrapolated
    ("logoff", "dec"): [(-9.0, 2.0)],
    ("logoff", "any"): [(-9.0, 2.0)],
}
PARAM_LETTERS = {"pow": ("b",), "powoff": ("b", "l"), "sat": ("a", "l"), "exp": ("k",), "logoff": ("l",)}
EFFDATA_BOUNDS = (0.3, 5.0)
WIDE_RANGE = 20.0  # a positive variable whose max/min exceeds this is treated as a scale variable  # log of R*, the repetitions after which repeated data stops helping


class SpecError(ValueError):
    """A spec that does not describe a valid law for the task."""


# ----------------------------------------------------------------------------- task context


@dataclass(frozen=True)
class FeatureInfo:
    """One input column: its identifier in code, sign class and a scale that makes it order one."""

    index: int
    name: str
    ident: str
    sign: str  # positive, nonneg or real
    scale: float


@dataclass(frozen=True)
class TaskContext:
    """What the grammar knows about a task: only feature ranges and signs, never labels."""

    features: tuple[FeatureInfo, ...]
    targets: tuple[str, ...]
    param_cap: int | None
    max_params: int  # per target: the cap's share, or a size limit when there is no cap
    train_X: np.ndarray

    @property
    def n_targets(self) -> int:
        return len(self.targets)


def identifier(name: str) -> str:
    text = re.sub(r"\W+", "_", name).strip("_").lower() or "x"
    return f"x_{text}" if text[0].isdigit() else text


GENERATED_NAMES = re.compile(r"[a-z]\d*|log_r\d+")  # c, a1, b2, k1, l1, log_r1: the law's parameters
CODE_NAMES = frozenset({"p", "theta", "np"})  # what a law function reads besides its variables (and builtins)


def feature_identifiers(names: tuple[str, ...]) -> list[str]:
    """One distinct identifier per feature for the generated code, never a name the code
    already uses: a column called `C` became `c`, the constant the law unpacks from p, and
    overwrote it (seeds scored R² -2e24); `N (params)` and `N params` were one variable."""
    taken: list[str] = []
    for name in names:
        ident = identifier(name)
        if GENERATED_NAMES.fullmatch(ident) or ident in CODE_NAMES or keyword.iskeyword(ident) or hasattr(builtins, ident):
            ident = f"x_{ident}"
        base, n = ident, 2
        while ident in taken:
            ident, n = f"{base}_{n}", n + 1
        taken.append(ident)
    return taken


def round_scale(value: float) -> float:
    """A scale written with three significant digits so the code stays readable."""
    return float(f"{value:.3g}") if np.isfinite(value) and value > 0 else 1.0


def feature_info(index: int, name: str, column: np.ndarray, ident: str) -> FeatureInfo:
    low = float(np.min(column))
    if low > 0:
        sign, scale = "positive", round_scale(float(np.exp(np.mean(np.log(column)))))
    elif low >= 0:
        sign, scale = "nonneg", round_scale(float(np.max(column))) if np.max(column) > 1 else 1.0
    else:
        sign, scale = "real", 1.0
    return FeatureInfo(index, name, ident, sign, scale)


ROWS_PER_PARAM = 4  # fit rows each fitted parameter needs, for a task without a cap
MAX_PARAMS_UNCAPPED = 20


def default_param_cap(task) -> int:
    """Parameters per target a law of an uncapped task may have before it is suspect, from
    rows per group (train alone).

    A law fitted per group is hard to tell from noise with more parameters than a quarter
    of the rows it is fitted on: an uncapped search finds laws whose coefficients cancel
    and that fit the held-out rows by luck (issue 13). evolve.selection prefers laws within
    this unless a larger one beats them by two standard errors. (As a hard cap on the
    search it also blocked good laws: bench/results/selection.md.) The rows
    counted are the smallest group's fit rows in the last validation fold (what ranking
    fits on); never fewer than the plain power law needs (2 per feature + 1), never over 20.
    """
    fit_rows = task.validation_folds()[-1][0]
    sizes = [int(np.sum(fit_rows.groups == g)) for g in fit_rows.group_names()] or [len(task.train)]
    floor = 2 * len(task.features) + 1
    return int(max(floor, min(MAX_PARAMS_UNCAPPED, min(sizes) // ROWS_PER_PARAM)))


def task_context(task, max_params_uncapped: int | None = None) -> TaskContext:
    """Context from a Task (features, targets, cap, train feature values); an uncapped task's
    search gets 20 parameters per target (`default_param_cap` is not a hard limit on the
    search: evolve.selection reads it as a warning sign, outweighed by strong evidence)."""
    X = np.asarray(task.train.X, dtype=float)
    idents = feature_identifiers(tuple(task.features))
    infos = tuple(feature_info(i, name, X[:, i], ident) for i, (name, ident) in enumerate(zip(task.features, idents)))
    n_targets = len(task.targets)
    cap = task.param_cap
    per_target = cap // n_targets if cap is not None else (max_params_uncapped or MAX_PARAMS_UNCAPPED)
    return TaskContext(infos, tuple(task.targets), cap, per_target, X)


# ----------------------------------------------------------------------------- variables


def var_sign(var: dict, ctx: TaskContext) -> str:
    op, args = var["op"], var["args"]
    if op == "feat":
        return ctx.features[args[0]].sign
    return "positive"


def allowed_kinds(var: dict, ctx: TaskContext) -> tuple[str, ...]:
    """Factor kinds for a variable: by sign, and for positive variables spanning decades
    only scale-free blocks (powers, saturations, logs), which extrapolate sanely in log x."""
    sign = var_sign(var, ctx)
    if sign != "positive":
        return KINDS_BY_SIGN[sign]
    values = var_raw_values(var, ctx.train_X)
    if np.max(values) > WIDE_RANGE * np.min(values):
        return ("pow", "isqrt", "inv", "powoff", "sat", "log")
    return KINDS_BY_SIGN[sign]


def var_raw_values(var: dict, X: np.ndarray) -> np.ndarray:
    """The unscaled variable on rows X (effective data with R* = e^1, only to pick a scale).
    Overflow or a zero divisor gives inf or nan here, which the callers handle; numpy's
    warning about it would reach the user's terminal from trusted code, so it is silenced."""
    with np.errstate(all="ignore"):
        return raw_values(var, X)


def raw_values(var: dict, X: np.ndarray) -> np.ndarray:
    op, args = var["op"], var["args"]
    if op == "feat":
        return X[:, args[0]]
    if op == "ratio":
        return X[:, args[0]] / X[:, args[1]]
    if op == "prod":
        return X[:, args[0]] * X[:, args[1]]
    if op == "exp10":
        return 10.0 ** X[:, args[0]]
    d, u = X[:, args[0]], X[:, args[1]]
    return u * (1 + np.e * (1 - np.exp(-np.maximum(d / u - 1, 0) / np.e)))


def var_scale(var: dict, ctx: TaskContext) -> float:
    if var["op"] == "feat":
        return ctx.features[var["args"][0]].scale
    if var["op"] == "effdata":
        return ctx.features[var["args"][1]].scale
    values = var_raw_values(var, ctx.train_X)
    return round_scale(float(np.exp(np.mean(np.log(np.maximum(values, 1e-300))))))


def var_name(var: dict, ctx: TaskContext) -> str:
    names = [ctx.features[i].ident for i in var["args"]]
    op = var["op"]
    if op == "feat":
        return names[0]
    if op == "ratio":
        return f"{names[0]}_per_{names[1]}"
    if op == "prod":
        return f"{names[0]}_times_{names[1]}"
    if op == "exp10":
        return f"ten_to_{names[0]}"
    return f"{names[1]}_repeated_to_{names[0]}"  # the effective data of a repeated corpus, in units of its second feature


def var_has_param(var: dict) -> bool:
    return var["op"] == "effdata"


def var_code(var: dict, ctx: TaskContext, param: str | None) -> str:
    """One line defining the variable from X (clipped positive where powers and logs apply)."""
    col = [f"X[:, {i}]" for i in var["args"]]
    scale = var_scale(var, ctx)
    op = var["op"]
    if op == "feat":
        info = ctx.features[var["args"][0]]
        raw = col[0] if scale == 1.0 else f"{col[0]} / {scale:g}"
        return f"np.maximum({raw}, 1e-12)" if info.sign == "positive" else raw
    if op == "ratio":
        return f"np.maximum({col[0]} / {col[1]} / {scale:g}, 1e-12)"
    if op == "prod":
        return f"np.maximum({col[0]} * {col[1]} / {scale:g}, 1e-12)"
    if op == "exp10":
        return f"10.0 ** np.clip({col[0]}, -30, 30) / {scale:g}"
    repeats = f"np.maximum({col[0]} / {col[1]} - 1, 0)"
    return f"np.maximum({col[1]} / {scale:g} * (1 + np.exp({param}) * (1 - np.exp(-{repeats} * np.exp(-{param})))), 1e-12)"


def var_describe(var: dict, ctx: TaskContext) -> str:
    names = [ctx.features[i].name for i in var["args"]]
    op = var["op"]
    if op == "feat":
        return names[0]
    if op == "ratio":
        return f"{names[0]}/{names[1]}"
    if op == "prod":
        return f"{names[0]}*{names[1]}"
    if op == "exp10":
        return f"10^{names[0]}"
    return f"{names[1]} repeated up to {names[0]}, repeats decaying (effective data)"


def candidate_vars(ctx: TaskContext) -> list[tuple[dict, float]]:
    """Every variable the grammar may use on this task, with a prior weight (plain features first)."""
    found: list[tuple[dict, float]] = []
    positive = [f.index for f in ctx.features if f.sign == "positive"]
    for f in ctx.features:
        found.append(({"op": "feat", "args": [f.index]}, 3.0))
        if f.sign == "real":
            found.append(({"op": "exp10", "args": [f.index]}, 1.5))
    for i in positive:
        for j in positive:
            if i < j:
                found.append(({"op": "prod", "args": [i, j]}, 0.4))
            if i != j:
                found.append(({"op": "ratio", "args": [i, j]}, 0.4))
                found.append(({"op": "effdata", "args": [i, j]}, 0.25))
    return found


# ----------------------------------------------------------------------------- specs


def factor(kind: str, var: dict, sign: str = "dec", tie: int | None = None) -> dict:
    return {"kind": kind, "var": var, "sign": sign, "tie": tie}


def feat(index: int) -> dict:
    return {"op": "feat", "args": [index]}


def new_law(terms: list[list[dict]], const: bool = True, output: str = "identity", loss: str = "linear") -> dict:
    return {"const": const, "output": output, "loss": loss, "terms": terms}


def new_spec(laws: list[dict]) -> dict:
    return {"version": SPEC_VERSION, "laws": laws}


def factor_param_count(fac: dict) -> int:
    return len(PARAM_BOUNDS.get((fac["kind"], fac["sign"]), []))


def law_param_count(law: dict) -> int:
    """Linear coefficients plus the distinct nonlinear parameters (tied factors share theirs)."""
    linear = int(law["const"]) + len(law["terms"])
    return linear + len(nonlinear_params(law))


def spec_param_count(spec: dict) -> int:
    return sum(law_param_count(law) for law in spec["laws"])


def within_cap(spec: dict, ctx: TaskContext) -> bool:
    counts = [law_param_count(law) for law in spec["laws"]]
    if ctx.param_cap is not None:
        return sum(counts) <= ctx.param_cap
    return all(c <= ctx.max_params for c in counts)


def validate_spec(spec: dict, ctx: TaskContext) -> None:
    """Raise SpecError unless the spec is a well-formed law for this task within its cap.

    A spec is read back from a program's text, which a model may have written: every part
    is checked for its type before it is used (a `"laws": [0]` stopped an offline run with
    an AttributeError, attack round 6), so nothing but SpecError comes out of here."""
    if not isinstance(spec, dict) or spec.get("version") != SPEC_VERSION:
        raise SpecError("not a law spec of this version")
    laws = spec.get("laws")
    if not isinstance(laws, list) or len(laws) != ctx.n_targets:
        raise SpecError(f"expected {ctx.n_targets} laws, one per target")
    for law in laws:
        validate_law(law, ctx)
    if not within_cap(spec, ctx):
        raise SpecError(f"{spec_param_count(spec)} parameters exceed the cap")


def validate_law(law: dict, ctx: TaskContext) -> None:
    if not isinstance(law, dict):
        raise SpecError("a law is a JSON object")
    if law.get("output") not in OUTPUTS or law.get("loss") not in LOSSES or not isinstance(law.get("const"), bool):
        raise SpecError("bad output, loss or const")
    terms = law.get("terms")
    if not isinstance(terms, list) or not terms:
        raise SpecError("a law needs at least one term")
    for term in terms:
        if not isinstance(term, list) or not term:
            raise SpecError("a term needs at least one factor")
        for fac in term:
            if not isinstance(fac, dict):
                raise SpecError("a factor is a JSON object")
            validate_factor(fac, ctx)
        powered = [json.dumps(f["var"], sort_keys=True) for f in term if f["kind"] in POWER_KINDS]
        if len(powered) != len(set(powered)):
            raise SpecError("a term multiplies two powers of one variable (one power says the same)")


def validate_factor(fac: dict, ctx: TaskContext) -> None:
    var = fac.get("var", {})
    if not isinstance(var, dict) or not isinstance(var.get("op"), str) or var["op"] not in VAR_OPS:
        raise SpecError("unknown variable op")
    args = var.get("args", [])
    expected = 1 if var["op"] in ("feat", "exp10") else 2
    if not isinstance(args, list) or len(args) != expected \
            or not all(type(a) is int and 0 <= a < len(ctx.features) for a in args):
        raise SpecError("bad variable arguments")
    if var["op"] == "exp10" and ctx.features[args[0]].sign != "real":
        raise SpecError("10^x applies only to log-valued (real) features")
    if var["op"] in ("ratio", "prod", "effdata") and any(ctx.features[a].sign != "positive" for a in args):
        raise SpecError("ratios and products need positive features")
    if not isinstance(fac.get("kind"), str) or fac["kind"] not in allowed_kinds(var, ctx):
        raise SpecError(f"the factor does not apply to variable {var_describe(var, ctx)}")
    if not isinstance(fac.get("sign"), str) or fac["sign"] not in ("dec", "any"):
        raise SpecError("sign must be dec or any")
    if fac.get("tie") is not None and not (type(fac["tie"]) is int and abs(fac["tie"]) < 1 << 31):
        raise SpecError("tie must be an integer label or null")


def factor_key(fac: dict) -> str:
    return json.dumps(fac, sort_keys=True)


def term_key(term: list[dict]) -> str:
    return json.dumps(sorted(factor_key(f) for f in term))


def canonical(spec: dict) -> str:
    """A key that is equal for equal laws (term order does not matter)."""
    laws = []
    for law in spec["laws"]:
        terms = sorted(term_key(t) for t in law["terms"])
        laws.append(json.dumps({**law, "terms": terms}, sort_keys=True))
    return "|".join(laws)


def canonical_order(spec: dict) -> dict:
    """A copy with terms and factors in one fixed order, so equal laws get equal code (the
    loop then scores a law once, however a mutation happened to order its terms)."""
    spec = copy.deepcopy(spec)
    for law in spec["laws"]:
        law["terms"] = sorted(
            (sorted(term, key=factor_key) for term in law["terms"]), key=term_key
        )
    return spec


# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    name: str
    bounds: tuple[float, float]


def nonlinear_params(law: dict) -> list[Param]:
    """The law's nonlinear parameters in order: effective-data decays, then factor parameters."""
    params: list[Param] = []
    for name in effdata_params(law):
        params.append(Param(name, EFFDATA_BOUNDS))
    for names, bounds in factor_param_names(law):
        for name, bound in zip(names, bounds):
            if name not in {p.name for p in params}:
                params.append(Param(name, bound))
    return params


def effdata_params(law: dict) -> dict[str, str]:
    """Parameter name of each effective-data variable (keyed by its JSON), shared by all its uses."""
    names: dict[str, str] = {}
    for term in law["terms"]:
        for fac in term:
            if var_has_param(fac["var"]):
                key = json.dumps(fac["var"], sort_keys=True)
                names.setdefault(key, f"log_r{len(names) + 1}")
    return {name: key for key, name in names.items()}


def factor_param_names(law: dict) -> list[tuple[list[str], list[tuple[float, float]]]]:
    """Names and bounds of each factor's parameters, in term order; tied factors reuse names."""
    out = []
    counters: dict[str, int] = {}
    tied: dict[tuple, list[str]] = {}
    for term in law["terms"]:
        for fac in term:
            bounds = PARAM_BOUNDS.get((fac["kind"], fac["sign"]), [])
            key = (fac["kind"], fac["sign"], fac["tie"])
            if fac["tie"] is not None and key in tied:
                out.append((tied[key], bounds))
                continue
            names = []
            for letter in PARAM_LETTERS.get(fac["kind"], ()):
                counters[letter] = counters.get(letter, 0) + 1
                names.append(f"{letter}{counters[letter]}")
            if fac["tie"] is not None:
                tied[key] = names
            out.append((names, bounds))
    return out
