"""The offline grammar proposer: valid programs, round-tripping specs, determinism, scoring."""

from __future__ import annotations

import ast
import random

import pytest

from evolve.config import ScorerConfig
from evolve.metrics import failed_metrics
from evolve.program import BLOCK_END, BLOCK_START, detect_api, extract_block
from evolve.propose.base import ProposalRequest
from evolve.propose.grammar import SpecError, canonical, canonical_order, law_param_count, new_spec, spec_param_count, validate_spec
from evolve.propose.grammar_code import program_code, spec_from_code
from evolve.propose.offline import (
    OfflineProposer,
    crossover,
    fresh_spec,
    mutate,
    paired_template,
    template_laws,
)
from evolve.records import ProgramRecord
from evolve.scoring.scorer import Evaluation, Scorer
from evolve.tasks import load_task, shipped_task_names

TASKS = shipped_task_names()


@pytest.fixture(scope="module")
def tasks():
    return {name: load_task(name) for name in TASKS}


@pytest.fixture(scope="module")
def scorer():
    with Scorer(ScorerConfig(isolate=False, workers=1)) as s:
        yield s


def record(code: str, task, r2: float = 0.5) -> ProgramRecord:
    metrics = failed_metrics(len(task.targets))
    metrics = type(metrics)(r2, 1 - r2, 1 - r2, 1 / (2 - r2), (r2,), (1 - r2,), (1 - r2,))
    return ProgramRecord(code=code, validation=Evaluation("ok", "validation", metrics))


def random_specs(proposer: OfflineProposer, count: int, seed: int) -> list[dict]:
    """Fresh laws and chains of mutations and crossovers, as the search produces them."""
    rng = random.Random(seed)
    specs = [fresh_spec(proposer.ctx, rng)[0] for _ in range(4)]
    while len(specs) < count:
        parent = rng.choice(specs)
        child = crossover(parent, rng.choice(specs), proposer.ctx, rng) if rng.random() < 0.2 else mutate(parent, proposer.ctx, rng)
        if child is not None:
            specs.append(child[0])
    return specs


def within_task_cap(spec: dict, task) -> bool:
    return task.param_cap is None or spec_param_count(spec) <= task.param_cap


@pytest.mark.parametrize("name", TASKS)
def test_generated_programs_are_valid_within_cap_and_round_trip(tasks, name):
    task = tasks[name]
    proposer = OfflineProposer(task)
    for spec in random_specs(proposer, 40, seed=7):
        validate_spec(spec, proposer.ctx)
        assert within_task_cap(spec, task)
        code = program_code(spec, proposer.ctx, "test")
        ast.parse(code)
        assert BLOCK_START in code and BLOCK_END in code
        assert "LAW_SPEC" in extract_block(code)
        assert detect_api(code) == "fit"
        assert spec_from_code(code) == spec


@pytest.mark.parametrize("name", TASKS)
def test_sample_of_generated_programs_scores_ok_within_cap(tasks, scorer, name):
    task = tasks[name]
    proposer = OfflineProposer(task, n_starts=2)
    specs = random_specs(proposer, 12, seed=3)[::4]
    for spec in specs:
        evaluation = scorer.score(program_code(spec, proposer.ctx, n_starts=2), task, "validation")
        assert evaluation.status == "ok", evaluation.message
        assert evaluation.n_params == spec_param_count(spec)
        if task.param_cap is not None:
            assert evaluation.n_params <= task.param_cap


def test_templates_include_u_shapes_and_multi_target_forms(tasks):
    lr = OfflineProposer(tasks["lr_bsz_scaling_law"])
    quad = [law for _, law in template_laws(lr.ctx) if any(len(t) == 2 and t[0] == t[1] and t[0]["kind"] == "log" for t in law["terms"])]
    assert quad, "lr_bsz needs quadratic-in-log terms"
    mix = OfflineProposer(tasks["domain_mixture_scaling_law"])
    spec, _ = fresh_spec(mix.ctx, random.Random(0))
    assert len(spec["laws"]) == 5 and spec_param_count(spec) <= 35


def test_same_seed_gives_the_same_proposal_and_parentless_requests_work(tasks):
    task = tasks["data_constrained_scaling_law"]
    proposer = OfflineProposer(task)
    human = record("# EVOLVE-BLOCK-START\ndef scaling_law_func(x, p):\n    return x[:, 0]\n\ndef fit_scaling_law(x, y):\n    return []\n# EVOLVE-BLOCK-END\n", task)
    first = proposer.propose(ProposalRequest(task, human, seed=11))
    again = OfflineProposer(task).propose(ProposalRequest(task, human, seed=11))
    assert first.code == again.code and first.explanation == again.explanation
    assert first.proposer == "offline" and first.explanation
    assert spec_from_code(first.code) is not None
    child = proposer.propose(ProposalRequest(task, record(first.code, task), seed=12))
    assert child.code != first.code
    assert canonical(spec_from_code(child.code)) != canonical(spec_from_code(first.code))


def test_parentless_request_can_learn_from_inspiration_specs(tasks):
    task = tasks["sft_scaling_law"]
    proposer = OfflineProposer(task)
    donors = tuple(record(proposer.propose(ProposalRequest(task, record("", task), seed=s)).code, task) for s in range(3))
    proposals = [proposer.propose(ProposalRequest(task, record("", task), donors, seed=s)) for s in range(10)]
    assert all(spec_from_code(p.code) is not None for p in proposals)
    assert any(not p.explanation.startswith("fresh") for p in proposals)


def test_generic_seeds_are_not_climbed_from(tasks):
    # A run with no seed law scores the generic seeds as references, but searches beside them
    # as it does beside a user's seed: from the grammar's templates, not by mutating them (which
    # filled every island with one family). The same grammar law given as a user's seed is
    # climbed from.
    import dataclasses

    from evolve.propose.seed_kinds import GENERIC_NOTE
    from evolve.propose.seeds import default_seeds

    task = tasks["sft_scaling_law"]
    proposer = OfflineProposer(task)
    generic = [dataclasses.replace(record(code, task), proposer="seed", explanation=f"seed law {name} {GENERIC_NOTE}")
               for name, code in default_seeds(task)]
    children = [proposer.propose(ProposalRequest(task, generic[0], tuple(generic), seed=s)) for s in range(12)]
    assert all(c.explanation.startswith("fresh law from the grammar") for c in children)
    users = [dataclasses.replace(g, explanation="seed law mine.py") for g in generic]
    climbed = [proposer.propose(ProposalRequest(task, users[0], tuple(users), seed=s)) for s in range(12)]
    assert sum(not c.explanation.startswith("fresh") for c in climbed) >= 9


def test_a_child_names_the_program_it_was_built_from(tasks):
    """What the archive stores as a child's parent (its lineage, its gain): the program the
    grammar climbed from, which is an inspiration when the request's parent is a generic seed
    or a law it cannot read, and nothing for a law written fresh (a new-user trial found an
    11-parameter law recorded as the child of the 3-parameter log-linear seed)."""
    import dataclasses

    from evolve.loop import built_from
    from evolve.propose.seed_kinds import GENERIC_NOTE
    from evolve.propose.seeds import default_seeds

    task = tasks["sft_scaling_law"]
    proposer = OfflineProposer(task)
    generic = dataclasses.replace(record(default_seeds(task)[0][1], task), id=1, proposer="seed",
                                  explanation=f"seed law x {GENERIC_NOTE}")
    donors = tuple(dataclasses.replace(record(proposer.propose(ProposalRequest(task, record("", task), seed=s)).code, task), id=10 + s)
                   for s in range(3))
    children = [proposer.propose(ProposalRequest(task, generic, donors, seed=s)) for s in range(30)]
    named = [c.extra["built_from"] for c in children]
    assert set(named) <= {None, 10, 11, 12} and {10, 11, 12} & set(named)  # never the generic seed
    assert all((n is None) == c.explanation.startswith("fresh") for n, c in zip(named, children))
    parent = dataclasses.replace(donors[0], id=20)
    climbed = [proposer.propose(ProposalRequest(task, parent, donors, seed=s)) for s in range(30)]
    assert sum(c.extra["built_from"] == 20 for c in climbed) >= 25
    request = ProposalRequest(task, generic, donors)
    assert [built_from(request, c) for c in children] == named
    assert built_from(request, dataclasses.replace(children[0], extra={})) == 1  # a proposer that does not say: the request's parent


def test_mutations_never_leave_duplicate_terms(tasks):
    proposer = OfflineProposer(tasks["easy_question_scaling_law"])
    for spec in random_specs(proposer, 60, seed=5)[4:]:
        for law in spec["laws"]:
            keys = [canonical(new_spec([{**law, "terms": [t]}])) for t in law["terms"]]
            assert len(keys) == len(set(keys))


def test_invalid_specs_are_refused(tasks):
    proposer = OfflineProposer(tasks["moe_scaling_law"])
    spec, _ = fresh_spec(proposer.ctx, random.Random(1))
    too_big = {**spec, "laws": [{**spec["laws"][0], "terms": spec["laws"][0]["terms"] * 4}]}
    with pytest.raises(SpecError):
        validate_spec(too_big, proposer.ctx)
    bad_var = {**spec, "laws": [{**spec["laws"][0], "terms": [[{"kind": "pow", "var": {"op": "feat", "args": [9]}, "sign": "dec", "tie": None}]]}]}
    with pytest.raises(SpecError):
        validate_spec(bad_var, proposer.ctx)
    assert law_param_count(spec["laws"][0]) <= 6


def corrupted(value, replacement):
    """Every copy of `value` with one of its parts (at any depth) replaced by `replacement`."""
    yield replacement
    if isinstance(value, dict):
        for k, v in value.items():
            for part in corrupted(v, replacement):
                yield {**value, k: part}
    elif isinstance(value, list):
        for i, v in enumerate(value):
            for part in corrupted(v, replacement):
                yield value[:i] + [part] + value[i + 1:]


def test_a_spec_of_any_shape_is_refused_with_spec_error_and_the_search_goes_on(tasks):
    """A parent's LAW_SPEC is read back from program text a model may have written (attack
    round 6): `"laws": [0]` raised AttributeError and 3,000 unary minus signs RecursionError,
    each stopping `evolve run --proposer offline`. Any part of any type is a SpecError; a
    spec that is not one makes a fresh law."""
    task = tasks["sft_scaling_law"]
    proposer = OfflineProposer(task)
    spec, _ = fresh_spec(proposer.ctx, random.Random(3))
    for replacement in (0, None, "x", [], {}, True, 1.5, -1, 10**40, [[0]], {"op": 0}):
        for bad in corrupted(spec, replacement):
            try:
                validate_spec(bad, proposer.ctx)
            except SpecError:
                pass
    hostile = ['{"version": 1, "laws": [0]}', "-" * 3000 + "1", "[" * 100_000 + "]" * 100_000,
               '{"version": 1, "laws": [{"const": true, "output": "identity", "loss": "linear", "terms": [[{"kind": "pow", "var": {"op": "feat", "args": [true]}, "sign": "dec", "tie": 10000000000000000000000}]]}]}']
    for text in hostile:
        code = f'# EVOLVE-BLOCK-START\n"""\nLAW_SPEC = {text}\n"""\ndef scaling_law_func(x, p):\n    return x[:, 0]\n\ndef fit_scaling_law(x, y):\n    return []\n# EVOLVE-BLOCK-END\n'
        child = proposer.propose(ProposalRequest(task, record(code, task), (record(code, task),), seed=5))
        assert spec_from_code(child.code) is not None  # a law of the grammar's own, not a crash


def test_equal_laws_get_equal_code_whatever_their_term_order(tasks):
    proposer = OfflineProposer(tasks["data_constrained_scaling_law"])
    spec = next(s for s in random_specs(proposer, 40, seed=2) if len(s["laws"][0]["terms"]) >= 2)
    reordered = {**spec, "laws": [{**spec["laws"][0], "terms": list(reversed(spec["laws"][0]["terms"]))}]}
    assert canonical_order(spec) == canonical_order(reordered)
    assert program_code(canonical_order(spec), proposer.ctx) == program_code(canonical_order(reordered), proposer.ctx)


def test_fixed_exponent_blocks_cost_no_parameter_and_score(tasks, scorer):
    task = tasks["parallel_scaling_law"]
    proposer = OfflineProposer(task)
    law = {"const": True, "output": "identity", "loss": "linear", "terms": [
        [{"kind": "pow", "var": {"op": "feat", "args": [0]}, "sign": "dec", "tie": None}],
        [{"kind": "isqrt", "var": {"op": "feat", "args": [1]}, "sign": "dec", "tie": None}],
    ]}
    spec = new_spec([law])
    assert spec_param_count(spec) == 4  # c, a1, b1, a2: the square root's exponent is fixed
    evaluation = scorer.score(program_code(spec, proposer.ctx), task, "validation")
    assert evaluation.ok and evaluation.n_params == 4 and evaluation.metrics.r2 > 0.999


def test_a_term_may_not_multiply_two_powers_of_one_variable(tasks):
    proposer = OfflineProposer(tasks["parallel_scaling_law"])
    power = {"kind": "pow", "var": {"op": "feat", "args": [0]}, "sign": "dec", "tie": None}
    root = {**power, "kind": "isqrt"}
    spec = new_spec([{"const": True, "output": "identity", "loss": "linear", "terms": [[power, root]]}])
    with pytest.raises(SpecError, match="two powers of one variable"):
        validate_spec(spec, proposer.ctx)


def test_targets_paired_with_features_get_a_per_target_template(tasks, scorer):
    task = tasks["domain_mixture_scaling_law"]
    proposer = OfflineProposer(task)
    name, spec = paired_template(proposer.ctx)
    validate_spec(spec, proposer.ctx)
    assert spec_param_count(spec) <= task.param_cap
    owns = [law["terms"][0][0]["var"]["args"] for law in spec["laws"]]
    assert owns == [[i] for i in range(5)]  # target i leads with feature i
    assert scorer.score(program_code(spec, proposer.ctx), task, "validation").ok
    assert paired_template(OfflineProposer(tasks["sft_scaling_law"]).ctx) is None


def test_picking_a_scale_warns_nothing_on_the_terminal():
    """The grammar's look at a variable's range is trusted code: numpy's overflow warning on
    10**x of a large feature reached a new user's terminal in the middle of a run."""
    import warnings

    import numpy as np

    from evolve.propose.grammar import var_raw_values

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = var_raw_values({"op": "exp10", "args": [0]}, np.array([[400.0], [1.0]]))
        ratio = var_raw_values({"op": "ratio", "args": [0, 1]}, np.array([[1.0, 0.0]]))
    assert np.isinf(values[0]) and values[1] == 10.0 and np.isinf(ratio[0])
