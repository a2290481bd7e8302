"""The loop end to end: scripted model replies through the real client, determinism, kill and resume."""

import dataclasses
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path


from evolve.store.database import Archive
from evolve.config import ArchiveConfig, ModelConfig, ModelSpec, RunConfig, ScorerConfig
from evolve.loop import run_evolution
from evolve.program import code_key
from tests.fake_openai import FakeOpenAI

WEAK_SEED = '''"""A deliberately weak seed: loss linear in the data size."""
# EVOLVE-BLOCK-START
import numpy as np


def scaling_law_func(data_points, params):
    x = np.asarray(data_points, float)[:, 0]
    return params[0] + params[1] * x


def fit_scaling_law(data_points, loss_values):
    x = np.asarray(data_points, float)[:, 0]
    design = np.c_[np.ones_like(x), x]
    return np.linalg.lstsq(design, loss_values, rcond=None)[0]
# EVOLVE-BLOCK-END
'''

GOOD_REPLY = '''A power law with an irreducible loss extrapolates better than a log-linear fit.

```python
import numpy as np
from scipy.optimize import curve_fit


def scaling_law_func(data_points, params):
    x = np.asarray(data_points, float)[:, 0]
    a, b, c = params
    return c + a * x ** (-b)


def fit_scaling_law(data_points, loss_values):
    x = np.asarray(data_points, float)[:, 0]
    y = np.asarray(loss_values, float)
    try:
        p, _ = curve_fit(lambda x, a, b, c: c + a * x ** (-b), x, y, p0=[y.max(), 0.3, 0.5 * y.min()], maxfev=20000)
    except Exception:
        p = np.array([1.0, 0.1, y.mean()])
    return p
```
'''

BAD_DIFF = '''<<<<<<< SEARCH
    return params[0] + params[7] * np.sqrt(x)
=======
    return params[0]
>>>>>>> REPLACE
'''


def seed_file(tmp_path: Path) -> Path:
    path = tmp_path / "weak_seed.py"
    path.write_text(WEAK_SEED)
    return path


def base_config(tmp_path: Path, **changes) -> RunConfig:
    config = RunConfig(
        task="sft_scaling_law",
        iterations=5,
        seed=0,
        seed_laws=(str(seed_file(tmp_path)),),
        run_dir=str(tmp_path / "run"),
        archive=ArchiveConfig(islands=1),
        scorer=ScorerConfig(workers=1, timeout_s=60),
    )
    return dataclasses.replace(config, **changes)


def test_llm_run_with_scripted_replies_improves_and_records_failures(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAI(responder=lambda request: GOOD_REPLY) as server:
        server.push_reply("```python\ndef scaling_law_func(X, params:\n    return X\n```")  # broken code
        server.push_empty()
        server.push_error(429, retry_after="0")
        server.push_reply(GOOD_REPLY)
        server.push_reply(BAD_DIFF)
        model = ModelConfig(models=(ModelSpec("fake-model"),), base_url=server.base_url, api_key="sk-test-key", concurrency=1, max_retries=2)
        summary = run_evolution(base_config(tmp_path, proposer="llm", model=model))
        prompts = [str(r["messages"]) for r in server.requests]
    with Archive.open(Path(summary.run_dir) / "archive.db", readonly=True) as archive:
        records = archive.programs(order="id")
        seed = records[0]
        statuses = {r.validation.status for r in records}
        assert {"syntax_error", "no_code", "diff_not_applied", "ok"} <= statuses
        assert summary.best.r2 > seed.r2 + 0.02 and summary.best.proposer == "llm"
        assert summary.best.test is not None and summary.best.test.ok
        assert archive.get_meta("usage")["prompt_tokens"] > 0
    assert "sft_data_size" in prompts[0]  # the system prompt describes the task
    assert any("syntax" in p.lower() for p in prompts[1:])  # later prompts show the failed child
    assert all("sk-test-key" not in p for p in prompts)
    assert (Path(summary.run_dir) / "best.py").read_text().count("def fit_scaling_law") == 1


def run_rows(run_dir: Path) -> list[tuple]:
    with Archive.open(run_dir / "archive.db", readonly=True) as archive:
        return [(r.code, round(r.r2, 12), r.parent_id, r.island) for r in archive.programs(order="id")]


def test_offline_run_is_deterministic_with_a_seed(tmp_path):
    config = base_config(tmp_path, task="parallel_scaling_law", iterations=4, proposer="offline", archive=ArchiveConfig(islands=2), scorer=ScorerConfig(workers=2, timeout_s=60, isolate=False))
    first = run_evolution(dataclasses.replace(config, run_dir=str(tmp_path / "a")))
    second = run_evolution(dataclasses.replace(config, run_dir=str(tmp_path / "b")))
    assert run_rows(first.run_dir) == run_rows(second.run_dir)
    assert first.best.r2 > run_rows(first.run_dir)[0][1]  # improved on the weak seed


def test_sigkill_mid_run_then_resume_loses_nothing(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "evolve", "run", "parallel_scaling_law", "--iterations", "24", "--seed", "1", "--proposer", "offline",
               "--run-dir", str(run_dir), "--seed-law", str(seed_file(tmp_path)), "--islands", "2", "--workers", "2", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and count_rows(run_dir) < 8:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    before = run_rows(run_dir)
    assert len(before) >= 8
    resumed = subprocess.run([sys.executable, "-m", "evolve", "run", "--resume", str(run_dir), "--quiet"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    after = run_rows(run_dir)
    assert after[: len(before)] == before  # every stored program intact, in place
    with Archive.open(run_dir / "archive.db", readonly=True) as archive:
        assert archive.integrity_check() == "ok"
        assert archive.get_meta("status") == "finished" and archive.max_iteration() >= 24
    assert (run_dir / "best.py").is_file()


def count_rows(run_dir: Path) -> int:
    try:
        with sqlite3.connect(f"file:{run_dir / 'archive.db'}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("select count(*) from programs").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_unreachable_endpoint_stops_before_anything_is_written(tmp_path, capsys):
    """The preflight check names the URL in one line, and a failed start leaves no run behind
    (an endpoint that goes down mid-run is test_faults' resumable case)."""
    from evolve.cli.main import main

    with FakeOpenAI() as server:
        dead_url = server.base_url  # the port is closed once the server stops
    config = tmp_path / "run.toml"
    config.write_text(f'[model]\nbase_url = "{dead_url}"\napi_key = "sk-test"\nmax_retries = 0\nrequest_timeout_s = 2\nconcurrency = 1\n[scorer]\nworkers = 1\n')
    run_dir = tmp_path / "run"
    code = main(["run", "sft_scaling_law", "--config", str(config), "--proposer", "llm", "--iterations", "10",
                 "--seed-law", str(seed_file(tmp_path)), "--run-dir", str(run_dir), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and dead_url.rstrip("/").rsplit("/", 1)[0] in err[0]
    assert not run_dir.exists()


def test_recorded_replies_replay_the_same_run(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    replies = iter([GOOD_REPLY, BAD_DIFF, "no code at all", GOOD_REPLY.replace("0.3", "0.5")] * 3)
    with FakeOpenAI(responder=lambda request: next(replies)) as server:
        model = ModelConfig(models=(ModelSpec("a"), ModelSpec("b", weight=2)), base_url=server.base_url, api_key="sk-test", concurrency=2)
        config = base_config(tmp_path, proposer="llm", model=model, iterations=6, seed=7, scorer=ScorerConfig(workers=2, isolate=False))
        original = run_evolution(config)
    replayed = run_evolution(dataclasses.replace(config, run_dir=str(tmp_path / "replay"), replay=str(original.run_dir), model=ModelConfig()))
    assert run_rows(original.run_dir) == run_rows(replayed.run_dir)
    assert replayed.usage == {}  # no tokens spent


def test_a_diff_that_did_not_apply_makes_the_next_request_for_its_parent_a_full_rewrite():
    from evolve.loop import edit_mode_for
    from evolve.metrics import failed_metrics
    from evolve.records import ProgramRecord
    from evolve.scoring.scorer import Evaluation

    parent = ProgramRecord(code="x = 1", validation=Evaluation("ok", "validation", failed_metrics(1)), id=3)
    failed = ProgramRecord(code="", validation=Evaluation("diff_not_applied", "validation", failed_metrics(1)), parent_id=3, id=4)
    other = dataclasses.replace(failed, parent_id=9, id=5)
    assert edit_mode_for(parent, (failed,), "diff") == "full"
    assert edit_mode_for(parent, (other,), "diff") == "diff"
    assert edit_mode_for(parent, (), "full") == "full"


def test_token_budget_stops_the_run_cleanly(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAI(responder=lambda request: GOOD_REPLY) as server:
        model = ModelConfig(models=(ModelSpec("fake-model"),), base_url=server.base_url, api_key="sk-test", concurrency=1)
        summary = run_evolution(base_config(tmp_path, proposer="llm", model=model, iterations=50, budget_tokens=3000, scorer=ScorerConfig(workers=1, isolate=False)))
        assert server.request_count < 50
    assert summary.stopped_reason.startswith("budget reached")
    assert summary.usage["prompt_tokens"] + summary.usage["completion_tokens"] >= 3000
    with Archive.open(Path(summary.run_dir) / "archive.db", readonly=True) as archive:
        assert archive.get_meta("status") == "finished"
    assert (Path(summary.run_dir) / "best.py").is_file()


def test_programs_differing_only_in_comments_or_layout_share_one_cache_key():
    program = "import numpy as np\n\ndef f(x):\n    return x + 1\n"
    assert code_key(program) == code_key("# a new explanation\n" + program.replace("x + 1", "x+1  # same law"))
    assert code_key(program) != code_key(program.replace("x + 1", "x + 2"))
    assert code_key("def broken(:\n") != code_key("def broken( :\n")  # unparsable text keys on itself
