"""Faults: `evolve run` SIGKILLed at random and at chosen moments then resumed, a misbehaving
model endpoint, a refused key, a full disk and an unwritable run directory. Nothing stored
is ever lost, the database always passes SQLite's integrity check, and every failure is a
one-line error or a stored failed proposal.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolve.store.database import Archive
from evolve.config import ArchiveConfig, ModelConfig, ModelSpec, RunConfig, ScorerConfig
from evolve.loop import run_evolution
from tests.attacks import (
    ATTACK_TASK,
    GOOD_PROGRAM,
    KILL_DRIVER,
    integrity,
    llm_reply,
    sandbox_processes_under,
    stored_programs,
    wait_until,
)
from tests.fake_openai import FakeOpenAI

RUN_TIMEOUT_S = 240


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of an `evolve` subprocess: its sandbox scratch under tmp_path (so its
    workers can be found), no key unless given."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    scratch = tmp_path / "tmpdir"
    scratch.mkdir(exist_ok=True)
    env.update(TMPDIR=str(scratch), **extra)
    return env


def offline_args(run_dir: Path, iterations: int) -> list[str]:
    return ["run", ATTACK_TASK, "--iterations", str(iterations), "--seed", "3", "--proposer", "offline",
            "--run-dir", str(run_dir), "--islands", "2", "--workers", "2", "--timeout", "20", "--quiet"]


def evolve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "evolve", *args]


def resume(run_dir: Path, env: dict, iterations: int | None = None) -> subprocess.CompletedProcess:
    extra = ["--iterations", str(iterations)] if iterations else []
    return subprocess.run(evolve_cmd("run", "--resume", str(run_dir), "--quiet", *extra), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, env=env)


def check_after_kill(run_dir: Path, tmp_path: Path, kept: list[tuple]) -> list[tuple]:
    """After a SIGKILL: the database is sound, every program stored before is still there
    unchanged, and no sandbox process of the killed run survives."""
    db = run_dir / "archive.db"
    assert wait_until(lambda: not sandbox_processes_under(tmp_path / "tmpdir"), 20), \
        f"sandbox processes outlived the killed run: {sandbox_processes_under(tmp_path / 'tmpdir')}"
    if not db.exists():
        assert kept == []
        return []
    assert integrity(db) == "ok"
    rows = stored_programs(db)
    assert rows[: len(kept)] == kept, "a stored program was lost or changed"
    return rows


def assert_finished(run_dir: Path, kept: list[tuple], iterations: int) -> None:
    db = run_dir / "archive.db"
    assert integrity(db) == "ok"
    rows = stored_programs(db)
    assert rows[: len(kept)] == kept
    with Archive.open(db, readonly=True) as archive:
        assert archive.get_meta("status") == "finished"
        assert archive.max_iteration() >= iterations
    assert (run_dir / "best.py").is_file()


def test_sigkill_at_random_moments_then_resume_loses_nothing(tmp_path):
    """Three SIGKILLs at delays drawn from a seeded generator (start-up, seeding, scoring,
    storing: wherever they land), each followed by --resume; then the run finishes."""
    rng = random.Random(20250721)
    run_dir, env, iterations = tmp_path / "run", cli_env(tmp_path), 16
    kept: list[tuple] = []
    for round_number in range(3):
        delay = rng.uniform(1.5, 5.0)
        if (run_dir / "archive.db").exists():
            command = evolve_cmd("run", "--resume", str(run_dir), "--quiet")
        else:
            command = evolve_cmd(*offline_args(run_dir, iterations))
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        time.sleep(delay)
        if process.poll() is not None:
            break  # finished before the kill: nothing left to interrupt
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        kept = check_after_kill(run_dir, tmp_path, kept)
    if not (run_dir / "archive.db").exists():
        finished = subprocess.run(evolve_cmd(*offline_args(run_dir, iterations)), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env)
    else:
        finished = resume(run_dir, env)
    assert finished.returncode == 0, finished.stderr
    assert_finished(run_dir, kept, iterations)


@pytest.mark.parametrize("kind, nth", [("db_write", 6), ("scoring", 4)])
def test_sigkill_inside_a_database_write_or_an_evaluation_then_resume(tmp_path, kind, nth):
    run_dir, env, iterations = tmp_path / "run", cli_env(tmp_path), 6
    killed = subprocess.run([sys.executable, "-c", KILL_DRIVER, kind, str(nth), *offline_args(run_dir, iterations)],
                            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    kept = check_after_kill(run_dir, tmp_path, [])
    if kind == "db_write":
        assert len(kept) == nth - 1  # the interrupted insert was rolled back, the ones before are kept
    finished = resume(run_dir, env)
    assert finished.returncode == 0, finished.stderr
    assert_finished(run_dir, kept, iterations)


def test_sigkill_right_after_the_database_is_created_then_resume(tmp_path):
    run_dir, env = tmp_path / "run", cli_env(tmp_path)
    killed = subprocess.run([sys.executable, "-c", KILL_DRIVER, "created", "1", *offline_args(run_dir, 4)],
                            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert integrity(run_dir / "archive.db") == "ok"
    again = subprocess.run(evolve_cmd(*offline_args(run_dir, 4)), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env)
    if again.returncode != 0:
        again = resume(run_dir, env)
    assert again.returncode == 0, again.stderr
    assert_finished(run_dir, [], 4)


def llm_args(run_dir: Path, server: FakeOpenAI, iterations: int) -> list[str]:
    return ["run", ATTACK_TASK, "--iterations", str(iterations), "--seed", "5", "--proposer", "llm", "--model", "fake-model",
            "--base-url", server.base_url, "--run-dir", str(run_dir), "--islands", "1", "--workers", "1",
            "--concurrency", "2", "--timeout", "20", "--quiet"]


def test_sigkill_with_the_llm_proposer_at_random_moments_and_mid_request(tmp_path):
    """The LLM proposer against the fake server: killed while a reply is being generated
    (the server holds it), then at seeded random delays; each time resumed, nothing lost."""
    rng = random.Random(77)
    run_dir, iterations = tmp_path / "run", 6
    env = cli_env(tmp_path, OPENAI_API_KEY="sk-test")
    with FakeOpenAI(responder=llm_reply) as server:
        server.push_slow(30.0)  # the first request hangs: kill during generation
        process = subprocess.Popen(evolve_cmd(*llm_args(run_dir, server, iterations)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        assert wait_until(lambda: server.request_count >= 1, 60), "no request reached the server"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        kept = check_after_kill(run_dir, tmp_path, [])
        assert kept, "the seeds were stored before the first request"
        for _ in range(1):
            server.push_slow(0.4, times=4)
            process = subprocess.Popen(evolve_cmd("run", "--resume", str(run_dir), "--quiet"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            time.sleep(rng.uniform(3.0, 5.0))
            if process.poll() is not None:
                break
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            kept = check_after_kill(run_dir, tmp_path, kept)
        finished = resume(run_dir, env)
        assert finished.returncode == 0, finished.stderr
    assert_finished(run_dir, kept, iterations)
    assert all("sk-test" not in str(r) for r in stored_programs(run_dir / "archive.db"))


# --------------------------------------------------------------------------- the model endpoint


def test_endpoint_faults_are_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    """A fault sent for every attempt of one proposal (an outage) costs no iteration: the
    request is asked again later; replies that give no code are stored failures; faults
    that clear on retry cost nothing; the run finishes with llm children."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    good = tmp_path / "good.py"
    good.write_text(GOOD_PROGRAM.replace("least_squares(residuals, [y.min() * 0.8, 0.5, 0.3, 0.3]", "least_squares(residuals, [y.min() * 0.5, 1.0, 0.2, 0.5]"))
    expected = [  # (what the server does for each attempt, status stored, fragment of its message)
        ("429", "unavailable", "HTTP 429"),
        ("500", "unavailable", "HTTP 500"),
        ("reset", "unavailable", "connection"),
        ("ok", "ok", ""),
        ("slow", "unavailable", "timed out"),
        ("truncated", "unavailable", "unavailable"),
        ("invalid_json", "unavailable", "unavailable"),
        ("empty", "no_code", ""),
        ("no_choices", "no_code", ""),
        ("prose", "no_code", ""),
        ("429-then-ok", "ok", ""),
        ("500-then-ok", "ok", ""),
    ]
    with FakeOpenAI(responder=llm_reply) as server:
        attempts = 2  # max_retries=1
        for kind, _, _ in expected:
            if kind == "429":
                server.push_error(429, retry_after="0", times=attempts)
            elif kind == "500":
                server.push_error(500, retry_after="0", times=attempts)
            elif kind == "reset":
                server.push_reset(times=attempts)
            elif kind == "slow":
                server.push_slow(3.0, times=1)  # a request that timed out is not sent again
            elif kind == "truncated":
                server.push_truncated(times=attempts)
            elif kind == "invalid_json":
                server.push_invalid_json(times=attempts)
            elif kind == "empty":
                server.push_empty()
            elif kind == "no_choices":
                server.push_no_choices()
            elif kind == "prose":
                server.push_reply("I would try a power law with an irreducible loss term.")
            elif kind == "429-then-ok":
                server.push_error(429, retry_after="0")
                server.push_reply()
            elif kind == "500-then-ok":
                server.push_error(500)
                server.push_reply()
            else:
                server.push_reply()
        model = ModelConfig(models=(ModelSpec("fake-model"),), base_url=server.base_url, api_key="sk-test", concurrency=1,
                            max_retries=1, request_timeout_s=1.0, outage_limit_s=10.0, stream=False)
        config = RunConfig(task=ATTACK_TASK, iterations=len(expected), proposer="llm", seed=0, seed_laws=(str(good),),
                           run_dir=str(tmp_path / "run"), archive=ArchiveConfig(islands=1), top_k_test=1,
                           model=model, scorer=ScorerConfig(workers=1, timeout_s=20))
        summary = run_evolution(config)
        assert server.pending() == 0  # every scripted behaviour was consumed
    assert summary.stopped_reason == "finished"
    with Archive.open(Path(summary.run_dir) / "archive.db", readonly=True) as archive:
        assert archive.integrity_check() == "ok"
        children = [r for r in archive.programs(order="id") if r.proposer != "seed"]
        usage = archive.get_meta("usage")
    assert [r.iteration for r in children] == list(range(1, len(expected) + 1))
    answered = [(kind, status, fragment) for kind, status, fragment in expected if status != "unavailable"]
    assert all(r.validation.status != "unavailable" for r in children)  # an outage is asked again, not stored
    for record, (kind, status, fragment) in zip(children, answered):
        assert record.validation.status == status, (kind, record.validation.status, record.validation.message)
        assert fragment in record.validation.message, (kind, record.validation.message)
    assert usage["failures"] >= 5  # the requests lost to a fault, each asked again later
    assert usage["retries"] >= 5 + 2  # one retry per failed proposal but the timed-out one (never resent), one per fault that cleared
    assert any(r.ok and r.r2 > 0.9 for r in children)  # the children that got through were scored


def test_an_endpoint_that_stays_down_stops_the_run_resumably(tmp_path):
    """Every request fails: once the endpoint has answered nothing for --outage-limit
    seconds the run stops with a one-line error, no iteration was spent on the outage, and
    the run resumes once the endpoint is back."""
    run_dir = tmp_path / "run"
    with FakeOpenAI(responder=llm_reply) as server:
        server.push_error(503, retry_after="0", times=400)
        down = subprocess.run(evolve_cmd(*llm_args(run_dir, server, 12), "--outage-limit", "3"), capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S, env=cli_env(tmp_path, OPENAI_API_KEY="sk-test"))
        assert down.returncode != 0
        lines = down.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("evolve: error:") and "503" in lines[0], down.stderr
        kept = stored_programs(run_dir / "archive.db")
        assert integrity(run_dir / "archive.db") == "ok"
        assert kept and not any(status == "unavailable" for _, _, status, *_ in kept)  # the seeds only
        with server._lock:
            server._script.clear()
        finished = resume(run_dir, cli_env(tmp_path, OPENAI_API_KEY="sk-test"))
        assert finished.returncode == 0, finished.stderr
    assert_finished(run_dir, kept, 12)


def test_a_refused_key_stops_the_run_with_one_line_and_the_archive_resumes(tmp_path):
    run_dir = tmp_path / "run"
    with FakeOpenAI(responder=llm_reply, api_key="sk-right-key") as server:
        refused = subprocess.run(evolve_cmd(*llm_args(run_dir, server, 3)), capture_output=True, text=True,
                                 timeout=RUN_TIMEOUT_S, env=cli_env(tmp_path, OPENAI_API_KEY="sk-wrong-key"))
        assert refused.returncode != 0
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("evolve: error:") and "401" in lines[0], refused.stderr
        assert "sk-wrong-key" not in refused.stderr
        db = run_dir / "archive.db"
        assert integrity(db) == "ok"
        kept = stored_programs(db)
        assert kept and all(status == "ok" or code for _, code, status, *_ in kept)  # the seeds are stored
        with Archive.open(db, readonly=True) as archive:
            assert archive.get_meta("status", "").startswith("stopped")
        finished = resume(run_dir, cli_env(tmp_path, OPENAI_API_KEY="sk-right-key"))
        assert finished.returncode == 0, finished.stderr
    assert_finished(run_dir, kept, 3)


# --------------------------------------------------------------------------- the disk


@pytest.fixture
def tiny_disk(tmp_path):
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_a_full_disk_is_a_clear_error_and_leaves_a_sound_archive(tmp_path, tiny_disk):
    run_dir = tiny_disk / "run"
    result = subprocess.run(evolve_cmd(*offline_args(run_dir, 400)), capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S, env=cli_env(tmp_path))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evolve: error:"), result.stderr[-2000:]
    assert "full" in lines[0].lower() or "space" in lines[0].lower(), lines[0]
    db = run_dir / "archive.db"
    if db.exists():  # whatever was stored is intact and readable
        copy = tmp_path / "copy"
        shutil.copytree(run_dir, copy)
        assert integrity(copy / "archive.db") == "ok"
        rows = stored_programs(copy / "archive.db")
        assert all(code for _, code, *_ in rows)


def test_a_run_directory_under_a_regular_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = subprocess.run(evolve_cmd(*offline_args(blocker / "run", 2)), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=cli_env(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot create run directory" in lines[0], result.stderr
    assert blocker.read_text() == "not a folder"
