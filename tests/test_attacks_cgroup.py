"""Attack suite, cgroup layer (issue 14): a candidate's whole process tree is one cgroup.

In production a candidate cannot fork at all (RLIMIT_NPROC 1), so the cgroup is a second
bound on memory and processes and the one atomic kill. To show that it holds by itself,
these tests lift the first bound from outside, as round 2 lifts the audit hook:
`EVOLVE_SANDBOX_NPROC` (test-only, passed to the workers) raises the children's
RLIMIT_NPROC, and `EVOLVE_SANDBOX_AUDIT_HOOK=0` lets them call fork and ctypes. Each test
then judges from outside: the memory every process of the candidate holds, how many of
them exist, and whether any is left once the evaluation has returned.

Where this machine gives the sandbox no cgroup (not root, no writable hierarchy: a CI
runner may or may not), the tests that need one skip and say so; the fallback test checks
that the layers then say so too. Nothing here can harm the host even without the cgroup:
every program bounds itself (8 x 154 MB, at most 1023 processes that exit within 8 s, a
survivor that gives up after 30 s) and the teardown SIGKILLs whatever carries the marker.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from evolve.config import ScorerConfig
from evolve.scoring import pool
from evolve.scoring.cgroups import CGROUP_PIDS_MAX
from evolve.scoring.scorer import Scorer
from evolve.tasks import load_task
from tests.attacks import pids_named, private_mb, proc_status, processes_of_uids

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux only"),
    pytest.mark.skipif(os.geteuid() != 0, reason="these attacks target the root plan"),
]

PROGRAMS = Path(__file__).resolve().parent / "attack_programs"
MEMORY_MB = 256
LIFTED = {"EVOLVE_SANDBOX_AUDIT_HOOK": "0", "EVOLVE_SANDBOX_NPROC": "4096"}


def program(name: str, **subs) -> str:
    text = (PROGRAMS / f"{name}.py").read_text()
    for key, value in subs.items():
        text = text.replace(f"__{key}__", str(value))
    return text


def status_field(pid: int, key: str) -> str:
    return proc_status(str(pid)).get(key, "")


def live(pid: int) -> bool:
    return status_field(pid, "State")[:1] not in ("", "Z")


def pids_of_uid(uid: int) -> list[int]:
    return [pid for pid in processes_of_uids({uid}) if live(pid)]


class Sampler:
    """Samples, from outside, the processes carrying a marker while an evaluation runs."""

    def __init__(self, marker: str):
        self.marker, self.peak_mb, self.peak_count = marker, 0.0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            pids = pids_named(self.marker)
            self.peak_count = max(self.peak_count, len(pids))
            self.peak_mb = max(self.peak_mb, sum(private_mb(p) for p in pids))
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture
def marker():
    name = "evcg" + secrets.token_hex(4)
    yield name
    for pid in pids_named(name):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def task():
    return load_task("sft_scaling_law")


@pytest.fixture
def lifted(monkeypatch):
    """A Scorer whose children may fork (RLIMIT_NPROC and the hook lifted from outside)."""
    for key, value in LIFTED.items():
        monkeypatch.setenv(key, value)
    scorers = []

    def make(timeout_s: float, needs: str) -> Scorer:
        scorer = Scorer(ScorerConfig(workers=1, timeout_s=timeout_s, memory_mb=MEMORY_MB))
        scorers.append(scorer)
        layers = scorer.sandbox.layers
        if needs not in layers:
            pytest.skip(f"no {needs} layer on this machine (no writable cgroup hierarchy for it): {layers}")
        return scorer

    yield make
    for scorer in scorers:
        scorer.close()


def worker_rss_mb(scorer: Scorer) -> float:
    return int(status_field(scorer.sandbox.worker_pids()[0], "VmRSS").split()[0]) / 1024


def slot_uid(scorer: Scorer) -> int:
    return int(next(iter(scorer.sandbox.pool.workers.values())).hello["uid"])


def test_memory_of_a_forked_tree_is_bounded_as_a_whole(lifted, marker, task):
    """8 processes x 0.6 memory_mb, each within its own RLIMIT_AS: the tree as a whole stays
    within memory_mb (plus what it may copy of the warm worker), the evaluation is a memory
    failure and the host keeps its memory."""
    scorer = lifted(10.0, "cgroup_memory")
    child_mb = int(MEMORY_MB * 0.6)
    # The sampler reads the processes one after another, not at one instant: a child the
    # cgroup OOM-kills between two reads can be counted beside the child that then takes its
    # memory, so one child's share is sampling error. Without the cgroup the tree holds
    # 8 x child_mb (1232 MB), far above this bound.
    bound = MEMORY_MB + worker_rss_mb(scorer) + child_mb
    with Sampler(marker) as sampler:
        evaluation = scorer.score(program("memory_tree", MARK=marker, MB=child_mb), task, "train")
    assert evaluation.status == "memory", (evaluation.status, evaluation.message)
    assert sampler.peak_count >= 2, "the tree never formed: the test did not lift RLIMIT_NPROC"
    assert sampler.peak_mb <= bound, f"the tree held {sampler.peak_mb:.0f} MB at once (bound {bound:.0f} MB)"
    assert pids_named(marker) == []


def test_a_fork_bomb_is_bounded_by_the_pids_limit(lifted, marker, task):
    """A binary fork tree of up to 1023 processes gets at most CGROUP_PIDS_MAX, and none of
    them outlives the evaluation."""
    scorer = lifted(6.0, "cgroup_pids")
    with Sampler(marker) as sampler:
        scorer.score(program("fork_tree_bomb", MARK=marker), task, "train")
    assert sampler.peak_count >= 2, "the bomb never forked: the test did not lift RLIMIT_NPROC"
    assert sampler.peak_count <= CGROUP_PIDS_MAX, f"{sampler.peak_count} processes of one candidate at once"
    assert pids_named(marker) == [] and pids_of_uid(slot_uid(scorer)) == []


def test_a_stopped_self_replacing_tree_is_gone_after_the_deadline(lifted, marker, task):
    """A double-forked survivor that SIGSTOPs everything else of the slot uid and changes
    its pid every round: when the evaluation has returned (a timeout), no process of the
    slot is left, three times in a row."""
    scorer = lifted(3.0, "cgroup_")
    uid = slot_uid(scorer)
    for round_ in range(3):
        evaluation = scorer.score(program("stopped_tree", MARK=marker), task, "train")
        assert evaluation.status == "timeout", (evaluation.status, evaluation.message)
        assert pids_named(marker) == [] and pids_of_uid(uid) == [], f"round {round_}: survivors"


def test_every_group_is_removed_after_each_evaluation_and_at_close(lifted, task):
    scorer = lifted(10.0, "cgroup_")
    worker = scorer.sandbox.worker_pids()[0]
    scorer.score(program("mean_baseline"), task, "train")
    groups = [Path(root) / f"evolve-w{worker}" for root in cgroup_roots()]
    deadline = time.monotonic() + 5  # the reply goes out first, the cleanup follows
    while (left := [str(g / c) for g in groups if g.is_dir() for c in os.listdir(g) if (g / c).is_dir()]):
        assert time.monotonic() < deadline, left
        time.sleep(0.05)
    scorer.close()
    assert [str(g) for g in groups if g.exists()] == []


def cgroup_roots() -> list[str]:
    from evolve.scoring.cgroups import mount_points, own_groups

    groups, mounts = own_groups(), mount_points()
    return [str(mounts[k] / groups[k].lstrip("/")) for k in mounts if k in groups]


def test_without_cgroups_the_layers_say_so_and_scores_are_unchanged(monkeypatch, task, caplog):
    """The fallback (no writable cgroup, forced here): no cgroup layer is claimed, one
    warning says what stands in for it, and an honest law scores exactly as with cgroups."""
    code = program("mean_baseline")
    with Scorer(ScorerConfig(workers=1, timeout_s=20.0)) as scorer:
        with_groups = scorer.score(code, task, "validation")
    monkeypatch.setenv("EVOLVE_SANDBOX_CGROUPS", "0")
    monkeypatch.setattr(pool, "WARNED", set())
    with caplog.at_level(logging.WARNING, logger="evolve.sandbox"):
        with Scorer(ScorerConfig(workers=1, timeout_s=20.0)) as scorer:
            assert "cgroup_" not in scorer.sandbox.layers, scorer.sandbox.layers
            without = scorer.score(code, task, "validation")
    assert without.status == with_groups.status == "ok"
    assert without.metrics.r2 == with_groups.metrics.r2
    assert any("cgroup" in record.getMessage() for record in caplog.records)
