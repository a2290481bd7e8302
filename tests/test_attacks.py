"""Sandbox escapes: every hostile program in tests/attacks.py, scored through the real,
isolated `Scorer`, is stopped with the right status or runs and gets nothing, and the
parent, the Scorer, the files outside and the processes around are all unharmed.

Each attack predicts 1.0 wherever it achieved something and 0.0 otherwise; where it
makes sense the same program is also run unsandboxed in this process as a control, to
prove the probe would have seen a success.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from evolve.store.database import Archive
from evolve.config import ArchiveConfig, RunConfig
from evolve.loop import run_evolution
from evolve.scoring.scorer import Scorer
from evolve.tasks import load_task
from tests.attacks import (
    ATTACK_TASK,
    ATTACKS,
    ATTACKS_BY_NAME,
    CAP_EVASION,
    GOOD_PROGRAM,
    AttackContext,
    attack_scorer_config,
    in_process_prediction,
    run_attack,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox is POSIX only")


@pytest.fixture(scope="module")
def task():
    return load_task(ATTACK_TASK)


@pytest.fixture(scope="module")
def arena(task, tmp_path_factory):
    """The attack context (listener, secrets, canaries, decoy) and one Scorer for all attacks."""
    ctx = AttackContext(task, tmp_path_factory.mktemp("arena"))
    try:
        with Scorer(attack_scorer_config(timeout_s=3.0, workers=2)) as scorer:
            ctx.worker_pids = scorer.sandbox.worker_pids()
            baseline = scorer.score(GOOD_PROGRAM, task, "validation")
            assert baseline.ok and baseline.metrics.r2 > 0.9, baseline.message
            yield ctx, scorer, baseline
            workers = scorer.sandbox.worker_pids()
        assert not any(Path(f"/proc/{pid}").exists() and _is_running(pid) for pid in workers)  # close() stops them
    finally:
        ctx.close()


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_stopped_or_gets_nothing(attack, arena):
    ctx, scorer, baseline = arena
    outcome = run_attack(attack, scorer, ctx, baseline)
    assert outcome.problems == [], f"{attack.name} ({attack.what}): status {outcome.status}"
    if attack.control:  # the same probe, unsandboxed, does succeed
        assert in_process_prediction(attack.source(ctx), ctx.task, ctx) == 1.0


def test_the_attacks_cover_every_expected_status():
    statuses = {s for a in ATTACKS for s in a.expect}
    assert {"ok", "timeout", "crash", "memory", "exception", "wrong_shape"} <= statuses


def test_parameters_hidden_in_a_dict_still_count_against_the_cap(arena):
    ctx, scorer, _ = arena
    evaluation = scorer.score(CAP_EVASION.source(ctx), ctx.task, "validation")
    assert ctx.task.param_cap == 4
    assert evaluation.status == "over_cap", (evaluation.status, evaluation.n_params, evaluation.metrics.r2)


def test_attacks_in_a_real_run_are_stored_as_failures_and_the_run_goes_on(tmp_path, task, arena):
    """A short evolution whose seeds are attacks plus one good law: it finishes, stores
    each attack with its status, and evolves from the good seed."""
    ctx, _, _ = arena
    names = ["sleep_past_timeout", "memory_bomb_array", "os_exit", "kill_siblings", "read_test_labels", "fork_bomb"]
    seeds = []
    for name in names:
        path = tmp_path / f"{name}.py"
        path.write_text(ATTACKS_BY_NAME[name].source(ctx))
        seeds.append(str(path))
    good = tmp_path / "good.py"
    good.write_text(GOOD_PROGRAM)
    seeds.append(str(good))
    files_before = ctx.outside_files()
    config = RunConfig(task=ATTACK_TASK, iterations=3, proposer="offline", seed=0, seed_laws=tuple(seeds),
                       run_dir=str(tmp_path / "run"), archive=ArchiveConfig(islands=1), top_k_test=1,
                       scorer=dataclasses.replace(attack_scorer_config(timeout_s=3.0, workers=1)))
    summary = run_evolution(config)
    assert summary.stopped_reason == "finished"
    assert summary.best is not None and summary.best.r2 > 0.9
    with Archive.open(Path(summary.run_dir) / "archive.db", readonly=True) as archive:
        assert archive.integrity_check() == "ok"
        assert archive.get_meta("status") == "finished"
        records = archive.programs(order="id")
        by_seed = {r.explanation.removeprefix("seed law ").removesuffix(".py"): r for r in records if r.proposer == "seed"}
        assert by_seed["sleep_past_timeout"].validation.status == "timeout"
        assert by_seed["memory_bomb_array"].validation.status == "memory"
        assert by_seed["os_exit"].validation.status == "crash"
        for name in ("kill_siblings", "read_test_labels", "fork_bomb"):  # ran, got nothing: a useless law
            assert by_seed[name].validation.status in ("ok", "exception")
            assert by_seed[name].r2 < 0.5
        assert archive.max_iteration() == 3 and len(records) == len(seeds) + 3
    assert ctx.decoy.poll() is None
    assert ctx.outside_files() == files_before
