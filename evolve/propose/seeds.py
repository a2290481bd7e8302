"""Seed laws: the programs a run starts from (the user's, or those the task ships)."""

from __future__ import annotations

from pathlib import Path

from evolve.config import RunConfig
from evolve.program import ProgramError, detect_api, ensure_block, wrap_law_program
from evolve.propose.seed_kinds import GENERIC_NOTE
from evolve.tasks import Task




class SeedError(ValueError):
    """A seed law that cannot be used; the message is one line."""


def seed_law_paths(task: Task, config: RunConfig) -> list[Path]:
    """The user's --seed-law files, or the task's shipped human.py and baseline.py."""
    if config.seed_laws:
        return [Path(p) for p in config.seed_laws]
    return sorted((task.path / "seeds").glob("*.py"))


def load_seed_program(path: Path, task: Task) -> str:
    """A seed file as an evolvable fit-API program (law() files are wrapped)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SeedError(f"cannot read seed law {path}: {exc.strerror or exc}") from None
    try:
        api = detect_api(text)
    except ProgramError as exc:
        raise SeedError(f"seed law {path}: {exc}") from None
    if api == "law":
        return wrap_law_program(text, task.features, task.targets)
    return ensure_block(text)


def default_seeds(task: Task) -> list[tuple[str, str]]:
    """Seed programs for a task that ships none: laws that fit any number of features and
    targets, written by the offline grammar (its fitting code, its formulas). The offline
    search does not climb from them (`OfflineProposer.child_spec`): it starts from its own
    templates, as beside any seed, and the power law is the reference selection protects.

    - the additive power law with an offset, `c + Σ a_i x_i^(-b_i)` (a shifted power or a
      line for features that are not positive), the usual first law in the field;
    - the multiplicative law, log-linear: `exp(c + Σ b_i log x_i)` = `e^c Π x_i^(b_i)`,
      when every train value of every target is positive (it can take no other value: on a
      target of both signs a new user got validation R² −6.7 and `8.1e64/params^7.8`).

    Either is trimmed to the task's parameter cap, dropping terms, when it is over it."""
    import random

    from evolve.propose.grammar import new_law, new_spec, task_context
    from evolve.propose.grammar_code import describe_spec, program_code
    from evolve.propose.offline import basic_factor, fit_to_cap, factor, feat

    ctx = task_context(task)
    idx = range(len(task.features))
    logs = [factor("log", feat(i)) if ctx.features[i].sign == "positive" else factor("lin", feat(i)) for i in idx]
    forms = [("power_law_with_offset", new_law([basic_factor(ctx, i) for i in idx]))]
    if (task.train.y > 0).all():  # exp(...) is positive: a target that is zero or negative somewhere it can never fit
        forms.append(("log_linear", new_law([[f] for f in logs], output="exp")))
    seeds = []
    for name, law in forms:
        spec = fit_to_cap(new_spec([dict(law, terms=[list(t) for t in law["terms"]]) for _ in task.targets]), ctx, random.Random(0))
        if spec is not None:
            left_out = [task.features[i] for i in idx if i not in features_used(spec)]
            shown = f"{name} without {', '.join(left_out)} (the parameter cap leaves no room)" if left_out else name
            seeds.append((shown, program_code(spec, ctx, f"generic seed: {describe_spec(spec, ctx)}")))
    return seeds


def features_used(spec: dict) -> set[int]:
    """The feature indices a spec reads: every factor's variable names its features in `args`."""
    return {i for law in spec["laws"] for term in law["terms"] for fac in term for i in fac["var"]["args"]}


def seed_programs(task: Task, config: RunConfig) -> list[tuple[str, str]]:
    """(name, program) of every seed a run starts from: the user's --seed-law files, else the
    task's shipped seeds, else the generic laws of `default_seeds`."""
    paths = seed_law_paths(task, config)
    if paths:
        return [(path.name, load_seed_program(path, task)) for path in paths]
    return [(f"{name} {GENERIC_NOTE}", code) for name, code in default_seeds(task)]
