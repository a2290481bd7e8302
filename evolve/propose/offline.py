"""The offline proposer: a seeded search over the law grammar, with no language model.

It reads the parent's `LAW_SPEC` back from its code and applies one mutation (add, drop
or replace a term, multiply a term by a factor, change a building block or a variable
transform, tie or untie exponents, change the output or the loss) or a crossover with an
inspiration. A parent with no spec (a human seed, an LLM program) is answered with a
fresh law from task-aware templates, or from the specs found among the inspirations.
Every random choice comes from the request's seed, so a fixed seed gives the same child.
"""

from __future__ import annotations

import copy
import random
import time

import numpy as np

from evolve.propose.base import Proposal, ProposalRequest
from evolve.propose.grammar import OUTPUTS, SpecError, TaskContext, allowed_kinds, candidate_vars, canonical, canonical_order, factor, factor_param_count, feat, law_param_count, new_law, new_spec, task_context, term_key, validate_spec, var_describe, var_sign, within_cap
from evolve.propose.grammar_code import describe_spec, program_code, spec_from_code
from evolve.propose.seed_kinds import is_generic_seed
from evolve.tasks import Task

MAX_TERMS = 8
ATTEMPTS = 40
PARENT = -1  # `one_try`: the child was built from the request's parent


# ----------------------------------------------------------------------------- random pieces


def random_var(ctx: TaskContext, rng: random.Random) -> dict:
    pairs = candidate_vars(ctx)
    return copy.deepcopy(rng.choices([v for v, _ in pairs], weights=[w for _, w in pairs])[0])


def random_factor(ctx: TaskContext, rng: random.Random, var: dict | None = None) -> dict:
    var = var or random_var(ctx, rng)
    kinds = allowed_kinds(var, ctx)
    weights = {"pow": 4, "isqrt": 1, "inv": 1, "powoff": 2, "sat": 1, "exp": 1, "log": 2, "logoff": 2, "lin": 2}
    kind = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
    return factor(kind, var, "dec" if rng.random() < 0.7 else "any")


def random_term(ctx: TaskContext, rng: random.Random) -> list[dict]:
    """One factor mostly; sometimes a product (interaction) or a squared log (a U-shape)."""
    first = random_factor(ctx, rng)
    roll = rng.random()
    if roll < 0.55:
        return [first]
    if roll < 0.75:
        var = random_var(ctx, rng)
        kind = "lin" if var_sign(var, ctx) != "positive" else "log"
        return [factor(kind, var), factor(kind, var)]
    if roll < 0.87:
        a, b = random_var(ctx, rng), random_var(ctx, rng)
        ka = "lin" if var_sign(a, ctx) != "positive" else "log"
        kb = "lin" if var_sign(b, ctx) != "positive" else "log"
        return [factor(ka, a), factor(kb, b)]
    return [first, random_factor(ctx, rng)]


# ----------------------------------------------------------------------------- templates


def basic_factor(ctx: TaskContext, index: int, kind_positive: str = "pow") -> list[dict]:
    """A decaying block in one feature that suits its sign: a power, a shifted power, or a line."""
    sign = ctx.features[index].sign
    if sign == "positive":
        return [factor(kind_positive, feat(index))]
    if sign == "nonneg":
        return [factor("powoff", feat(index))]
    return [factor("lin", feat(index))]


def template_laws(ctx: TaskContext) -> list[tuple[str, dict]]:
    """Fresh single-target laws a person would try first, built from the features' signs."""
    n = len(ctx.features)
    idx = range(n)
    real = [i for i in idx if ctx.features[i].sign == "real"]
    positive = [i for i in idx if ctx.features[i].sign == "positive"]
    nonneg = [i for i in idx if ctx.features[i].sign == "nonneg"]
    out: list[tuple[str, dict]] = [
        ("a sum of power laws (Chinchilla style) with an irreducible loss", new_law([basic_factor(ctx, i) for i in idx])),
        ("a sum of offset power laws", new_law([basic_factor(ctx, i, "powoff") for i in idx])),
        ("one product of power laws", new_law([[f for i in idx for f in basic_factor(ctx, i)]])),
        ("a sum of saturating terms", new_law([basic_factor(ctx, i, "sat") for i in idx])),
    ]
    if len(positive) > 1:
        fixed = [[factor("pow", feat(positive[0]))]] + [[factor("isqrt", feat(i))] for i in positive[1:]]
        out.append(("one free power law plus square-root laws in the other variables (few parameters)", new_law(fixed + [basic_factor(ctx, i) for i in idx if i not in positive])))
    logs = [factor("log", feat(i)) if i in positive else factor("lin", feat(i)) for i in idx]
    out.append(("a multiplicative law: log-linear with interactions", new_law([[f] for f in logs] + [logs[:2]] * (n > 1), output="exp")))
    if positive:
        quad = [basic_factor(ctx, i) for i in positive[: max(1, len(positive) // 2)]]
        quad += [[factor("log", feat(i)), factor("log", feat(i))] for i in positive]
        quad += [[factor("log", feat(i))] for i in positive]
        out.append(("power laws plus quadratics in log (U-shapes around moving optima)", new_law(quad)))
        logs_of = [factor("log", feat(i)) for i in positive]
        surface = [[f] for f in logs_of] + [[f, g] for k, f in enumerate(logs_of) for g in logs_of[k:]]
        out.append(("a quadratic response surface in the logs (optima that move as power laws)", new_law(surface)))
    if real:
        r = real[0]
        out.append(("a cubic in the log-valued feature", new_law([[factor("lin", feat(r))] * k for k in (1, 2, 3)])))
        out.append(("a decaying exponential plus a line in the log-valued feature", new_law([[factor("exp", feat(r), "any")], [factor("lin", feat(r))]])))
        out.append(("a saturating power of 10^x plus a dip", new_law([[factor("sat", {"op": "exp10", "args": [r]})], [factor("exp", feat(r), "any"), factor("lin", feat(r))]])))
    if nonneg:
        out.append(("an exponential of a linear mixture (data mixing law)", new_law([[factor("exp", feat(i), "any") for i in idx]])))
        out.append(("a sum of logs with one shared offset", new_law([[factor("logoff", feat(i), tie=1)] for i in idx])))
    for d, u in repetition_pairs(ctx, positive):
        rest = [[factor("pow", feat(i))] for i in positive if i not in (d, u)]
        out.append((f"power laws with {ctx.features[u].name} repeated up to {ctx.features[d].name}, repeats decaying (effective data)", new_law(rest + [[factor("pow", {"op": "effdata", "args": [d, u]})]])))
        out.append((f"power laws plus a term in {ctx.features[d].name}/{ctx.features[u].name}", new_law([basic_factor(ctx, i) for i in positive] + [[factor("pow", {"op": "ratio", "args": [d, u]}, "any")]])))
    return out


def repetition_pairs(ctx: TaskContext, positive: list[int]) -> list[tuple[int, int]]:
    """(used, available) feature pairs like tokens vs unique tokens: the first is at least
    the second on most rows (by at most 1e4: comparable units), and their ratio spans
    more than a decade."""
    X = ctx.train_X
    pairs = []
    for d in positive:
        for u in positive:
            ratio = X[:, d] / X[:, u]
            if d != u and 1 <= np.median(ratio) <= 1e4 and ratio.max() > 10 * ratio.min():
                pairs.append((d, u))
    return pairs


def without_duplicate_terms(spec: dict) -> dict:
    """A copy with repeated terms removed: a second copy of a term only adds a collinear column."""
    spec = copy.deepcopy(spec)
    for law in spec["laws"]:
        for fac in (f for term in law["terms"] for f in term):
            if factor_param_count(fac) == 0:  # a log or a plain variable has no exponent to sign
                fac["sign"] = "dec"
        seen, kept = set(), []
        for term in law["terms"]:
            key = term_key(term)
            if key not in seen:
                seen.add(key)
                kept.append(term)
        law["terms"] = kept
    return spec


def fit_to_cap(spec: dict, ctx: TaskContext, rng: random.Random) -> dict | None:
    """Drop random terms (never the last one) until the law respects the parameter cap."""
    spec = without_duplicate_terms(spec)
    for _ in range(64):
        if within_cap(spec, ctx):
            return spec
        laws = [law for law in spec["laws"] if len(law["terms"]) > 1]
        if not laws:
            return None
        law = max(laws, key=law_param_count)
        law["terms"].pop(rng.randrange(len(law["terms"])))
    return spec if within_cap(spec, ctx) else None


def template_weight(name: str, templates: list[tuple[str, dict]]) -> float:
    """Each family of templates counts once: the many feature pairs of the effective-data and
    ratio templates share one family's weight instead of crowding out the others."""
    pair_family = [n for n, _ in templates if n.startswith(("power laws with effective", "power laws plus a term in"))]
    return 2.0 / len(pair_family) if name in pair_family else 1.0


def paired_template(ctx: TaskContext) -> tuple[str, dict] | None:
    """When target i pairs with feature i (a domain's loss and its share of the data mix),
    each target gets its own law: the log of its own feature, plus a linear mixture of the
    others, in an exponent (a data mixing law with a diminishing-returns own-domain term)."""
    n = len(ctx.features)
    if ctx.n_targets < 2 or ctx.n_targets != n or any(f.sign == "real" for f in ctx.features):
        return None
    laws = []
    for own in range(n):
        kind = "log" if ctx.features[own].sign == "positive" else "logoff"
        others = [[factor("lin", feat(j))] for j in range(n) if j != own]
        laws.append(new_law([[factor(kind, feat(own))]] + others, output="exp"))
    return "per target: the log of its own feature plus a linear mixture of the others, exponentiated", new_spec(laws)


def fresh_spec(ctx: TaskContext, rng: random.Random) -> tuple[dict, str]:
    """A template law, the same form for every target (multi-target tasks then diverge by
    mutation), or a per-target template where targets pair with features."""
    templates = template_laws(ctx)
    paired = paired_template(ctx)
    if paired is not None and rng.random() < 1 / (len(templates) + 1):
        name, spec = paired
    else:
        name, law = rng.choices(templates, weights=[template_weight(n, templates) for n, _ in templates])[0]
        spec = new_spec([copy.deepcopy(law) for _ in ctx.targets])
    capped = fit_to_cap(spec, ctx, rng)
    if capped is None:
        capped = new_spec([new_law([basic_factor(ctx, 0)]) for _ in ctx.targets])
    return capped, f"fresh law from the grammar: {name}"


# ----------------------------------------------------------------------------- mutations


def pick_law(spec: dict, rng: random.Random) -> dict:
    return rng.choice(spec["laws"])


def add_term(spec, ctx, rng):
    law = pick_law(spec, rng)
    if len(law["terms"]) >= MAX_TERMS:
        return None
    term = random_term(ctx, rng)
    law["terms"].append(term)
    return f"added a term {term_text(term, ctx)}"


def drop_term(spec, ctx, rng):
    law = pick_law(spec, rng)
    if len(law["terms"]) < 2:
        return None
    term = law["terms"].pop(rng.randrange(len(law["terms"])))
    return f"dropped the term {term_text(term, ctx)}"


def replace_term(spec, ctx, rng):
    law = pick_law(spec, rng)
    i = rng.randrange(len(law["terms"]))
    old, law["terms"][i] = law["terms"][i], random_term(ctx, rng)
    return f"replaced {term_text(old, ctx)} with {term_text(law['terms'][i], ctx)}"


def multiply_term(spec, ctx, rng):
    law = pick_law(spec, rng)
    term = rng.choice(law["terms"])
    if len(term) >= 3:
        return None
    new = random_factor(ctx, rng)
    term.append(new)
    return f"multiplied a term by {term_text([new], ctx)} (an interaction)"


def drop_factor(spec, ctx, rng):
    law = pick_law(spec, rng)
    terms = [t for t in law["terms"] if len(t) > 1]
    if not terms:
        return None
    term = rng.choice(terms)
    gone = term.pop(rng.randrange(len(term)))
    return f"removed the factor {term_text([gone], ctx)} from a product"


def change_kind(spec, ctx, rng):
    law = pick_law(spec, rng)
    fac = rng.choice(rng.choice(law["terms"]))
    kinds = [k for k in allowed_kinds(fac["var"], ctx) if k != fac["kind"]]
    old = fac["kind"]
    fac["kind"] = rng.choice(kinds)
    return f"changed a {old} block in {var_describe(fac['var'], ctx)} to {fac['kind']}"


def change_var(spec, ctx, rng):
    law = pick_law(spec, rng)
    fac = rng.choice(rng.choice(law["terms"]))
    old = var_describe(fac["var"], ctx)
    fac["var"] = random_var(ctx, rng)
    if fac["kind"] not in allowed_kinds(fac["var"], ctx):
        fac["kind"] = rng.choice(allowed_kinds(fac["var"], ctx))
    return f"changed a variable from {old} to {var_describe(fac['var'], ctx)}"


def tie_exponents(spec, ctx, rng):
    law = pick_law(spec, rng)
    facs = [f for t in law["terms"] for f in t if f["kind"] in ("pow", "powoff", "logoff", "sat") and f["tie"] is None]
    if len(facs) < 2:
        return None
    a, b = rng.sample(facs, 2)
    if a["kind"] != b["kind"]:
        b["kind"] = a["kind"] if a["kind"] in allowed_kinds(b["var"], ctx) else b["kind"]
    if a["kind"] != b["kind"]:
        return None
    label = 1 + max([f["tie"] or 0 for t in law["terms"] for f in t])
    a["tie"], b["tie"], b["sign"] = label, label, a["sign"]
    return f"tied the {a['kind']} parameters of {var_describe(a['var'], ctx)} and {var_describe(b['var'], ctx)}"


def untie_exponents(spec, ctx, rng):
    law = pick_law(spec, rng)
    facs = [f for t in law["terms"] for f in t if f["tie"] is not None]
    if not facs:
        return None
    fac = rng.choice(facs)
    fac["tie"] = None
    return f"untied the exponent of {var_describe(fac['var'], ctx)}"


def flip_sign(spec, ctx, rng):
    law = pick_law(spec, rng)
    fac = rng.choice(rng.choice(law["terms"]))
    fac["sign"] = "any" if fac["sign"] == "dec" else "dec"
    return f"let the exponent of {var_describe(fac['var'], ctx)} be {'of either sign' if fac['sign'] == 'any' else 'decaying only'}"


def change_output(spec, ctx, rng):
    law = pick_law(spec, rng)
    law["output"] = rng.choice([o for o in OUTPUTS if o != law["output"]])
    return {"identity": "made the law additive", "exp": "made the law multiplicative (exp of the sum)", "negexp": "made the law a negative exponential of the sum"}[law["output"]]


def toggle_const(spec, ctx, rng):
    law = pick_law(spec, rng)
    law["const"] = not law["const"]
    return "added an irreducible loss" if law["const"] else "removed the constant term"


def toggle_loss(spec, ctx, rng):
    law = pick_law(spec, rng)
    law["loss"] = "soft_l1" if law["loss"] == "linear" else "linear"
    return "fitted with a robust loss" if law["loss"] == "soft_l1" else "fitted with plain least squares"


def broadcast_form(spec, ctx, rng):
    """Multi-target: give every target the form of one of them (they share what works)."""
    if len(spec["laws"]) < 2:
        return None
    i = rng.randrange(len(spec["laws"]))
    spec["laws"] = [copy.deepcopy(spec["laws"][i]) for _ in spec["laws"]]
    return f"gave every target the form of {ctx.targets[i]}"


MUTATIONS = (
    (add_term, 4.0),
    (drop_term, 2.5),
    (replace_term, 3.0),
    (multiply_term, 1.5),
    (drop_factor, 1.0),
    (change_kind, 2.5),
    (change_var, 2.0),
    (tie_exponents, 1.0),
    (untie_exponents, 0.5),
    (flip_sign, 1.0),
    (change_output, 0.7),
    (toggle_const, 0.3),
    (toggle_loss, 0.5),
    (broadcast_form, 1.0),
)


def term_text(term: list[dict], ctx: TaskContext) -> str:
    return "*".join(f"{f['kind']}({var_describe(f['var'], ctx)})" for f in term)


def mutate(spec: dict, ctx: TaskContext, rng: random.Random) -> tuple[dict, str] | None:
    """One random mutation that leaves a valid law within the cap, or None after a failed try."""
    child = copy.deepcopy(spec)
    operator = rng.choices([m for m, _ in MUTATIONS], weights=[w for _, w in MUTATIONS])[0]
    explanation = operator(child, ctx, rng)
    if explanation is None:
        return None
    capped = fit_to_cap(child, ctx, rng)
    if capped is None:
        return None
    try:
        validate_spec(capped, ctx)
    except SpecError:
        return None
    return capped, explanation


def crossover(a: dict, b: dict, ctx: TaskContext, rng: random.Random) -> tuple[dict, str] | None:
    """Per target: either take one parent's law whole, or mix terms drawn from both."""
    laws = []
    for law_a, law_b in zip(a["laws"], b["laws"]):
        if rng.random() < 0.3:
            laws.append(copy.deepcopy(rng.choice([law_a, law_b])))
            continue
        pool = copy.deepcopy(law_a["terms"]) + copy.deepcopy(law_b["terms"])
        rng.shuffle(pool)
        keep = pool[: max(1, min(MAX_TERMS, rng.randint(len(law_a["terms"]), max(len(law_a["terms"]), len(pool) - 1))))]
        base = rng.choice([law_a, law_b])
        laws.append(new_law(keep, base["const"], base["output"], base["loss"]))
    child = fit_to_cap(new_spec(laws), ctx, rng)
    if child is None:
        return None
    try:
        validate_spec(child, ctx)
    except SpecError:
        return None
    return child, "crossover: mixed the terms of two archive laws"


# ----------------------------------------------------------------------------- the proposer


def readable_spec(code: str, ctx: TaskContext) -> dict | None:
    spec = spec_from_code(code)
    if spec is None:
        return None
    try:
        validate_spec(spec, ctx)
    except (SpecError, KeyError, TypeError, IndexError):
        return None
    return spec


class OfflineProposer:
    """Proposes children from the law grammar; implements the Proposer protocol."""

    name = "offline"
    duplicate_retries = 4  # a new law costs microseconds: ask again rather than re-score a stored one
    parallel_requests = 1

    def __init__(self, task: Task, n_starts: int | None = None, crossover_rate: float = 0.15):
        self.task = task
        self.ctx = task_context(task)
        # Many rows in one group make each fit slow and its optimum well determined: fewer starts.
        self.n_starts = n_starts or (6 if len(task.train) <= 1000 else 3)
        self.crossover_rate = crossover_rate

    def propose(self, request: ProposalRequest) -> Proposal:
        started = time.perf_counter()
        rng = random.Random(request.seed)
        seen = {canonical(s) for s in self.known_specs(request)}
        spec, explanation, built_from = self.child_spec(request, rng, seen)
        spec = canonical_order(spec)
        code = program_code(spec, self.ctx, explanation, self.n_starts)
        return Proposal(
            code=code,
            explanation=explanation,
            proposer=self.name,
            seconds=time.perf_counter() - started,
            edit_mode="full",
            extra={"law": describe_spec(spec, self.ctx), "n_params": sum(law_param_count(x) for x in spec["laws"]),
                   "built_from": built_from},
        )

    def known_specs(self, request: ProposalRequest) -> list[dict]:
        records = (request.parent, *request.inspirations, *request.failures)
        return [s for s in (readable_spec(r.code, self.ctx) for r in records) if s is not None]

    def child_spec(self, request: ProposalRequest, rng: random.Random, seen: set[str]) -> tuple[dict, str, int | None]:
        """A new valid spec not already among the parent, inspirations and recent failures,
        and the id of the program it was built from (None for a law written fresh).

        The generic seeds (a task with no seed law) are neither climbed from nor crossed: they
        are reference points, scored and protected, and the search beside them starts from the
        grammar's templates exactly as it does beside a user's or a task's seed (which the
        grammar cannot read). Climbing from them made a run without a seed a different search:
        every island filled with mutations of the two generic laws, the best of which on
        validation (the log-linear law, on several held-out sets) took over. So the program
        a child was built from is not always the request's parent: it is what the archive
        records as the child's parent (its lineage and gain are measured against it)."""
        parent = None if is_generic_seed(request.parent) else readable_spec(request.parent.code, self.ctx)
        readable = [(r.id, spec) for r in request.inspirations
                    if not is_generic_seed(r) and (spec := readable_spec(r.code, self.ctx)) is not None]
        donors = [spec for _, spec in readable]
        sources = {PARENT: request.parent.id, **{index: record_id for index, (record_id, _) in enumerate(readable)}}
        for _ in range(ATTEMPTS):
            result, base = self.one_try(parent, donors, rng)
            if result is not None and canonical(result[0]) not in seen:
                return result[0], result[1], sources.get(base)  # None: written fresh
        return (*fresh_spec(self.ctx, rng), None)

    def one_try(self, parent: dict | None, donors: list[dict], rng: random.Random) -> tuple[tuple[dict, str] | None, int | None]:
        """One attempt at a child, and what it was built from: PARENT, a donor's index, or
        None (written fresh)."""
        if parent is None:  # a seed or model-written parent: climb from the best grammar law on show
            if donors and rng.random() < 0.8:
                if len(donors) >= 2 and rng.random() < 0.3:
                    return crossover(donors[0], donors[1], self.ctx, rng), 0
                index = 0 if rng.random() < 0.6 else rng.randrange(len(donors))
                return mutate(donors[index], self.ctx, rng), index
            return fresh_spec(self.ctx, rng), None
        if donors and rng.random() < self.crossover_rate:
            return crossover(parent, rng.choice(donors), self.ctx, rng), PARENT
        if rng.random() < 0.04:
            return fresh_spec(self.ctx, rng), None
        return mutate(parent, self.ctx, rng), PARENT

    def preflight(self) -> None:
        """Nothing can be missing: the grammar needs only the task."""

    def close(self) -> None:
        """Nothing to release: the proposer holds no connections or processes."""
