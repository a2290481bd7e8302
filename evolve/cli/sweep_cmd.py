"""`evolve sweep`: a grid of independent runs (tasks x seeds x models or config files).

Each cell is one ordinary `evolve run` with its own run directory under the sweep
folder (`DIR/<task>-seed<seed>[-<model or config>]`). With `--executor ray` every
cell is a Ray task (scheduled by Ray, one CPU each, its scoring local to the node
it lands on; the sweep folder must be on a filesystem every node sees); with
`--executor local` the cells run here, one after another or in a small process
pool (`--parallel`). Re-running the same sweep skips finished runs and resumes
interrupted ones from their directories. A summary table closes the sweep.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click

from evolve.text import safe_text


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(text).stem if text.endswith(".toml") else text)


def cells(tasks, seeds, models, configs) -> list[dict]:
    variants = [("model", m) for m in models] + [("config", c) for c in configs] or [(None, None)]
    out = []
    for task, seed, (kind, value) in itertools.product(tasks, seeds, variants):
        name = f"{Path(task).name}-seed{seed}" + (f"-{_slug(value)}" if value else "")
        out.append({"task": task, "seed": int(seed), "kind": kind, "value": value, "name": name})
    return out


def run_status(run_dir: Path) -> dict | None:
    from evolve.store.rundir import DATABASE_NAME, run_overview

    db = run_dir / DATABASE_NAME
    if not db.is_file():
        return None
    return run_overview(run_dir, db)


# `python -m evolve ARGS` that gets SIGINT when the process that started it dies (a killed
# sweep, a Ray worker whose node or driver went away): the run stops as "interrupted" and the
# next sweep resumes it, instead of an orphan still writing the archive while a second
# `evolve run --resume` starts on it.
CELL_PROCESS = """import ctypes, os, runpy, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != int(sys.argv[1]):
        sys.exit(130)  # the sweep died before the signal was armed
sys.argv = ["evolve", *sys.argv[2:]]
runpy.run_module("evolve", run_name="__main__", alter_sys=True)
"""


def run_cell(cell: dict, run_dir: str, iterations: int, extra: list[str]) -> dict:
    """One cell, in whatever process it lands in: skip if finished, resume if started, else
    start. The run is its own `evolve run` process, so one cell's failure or crash is its own."""

    path = Path(run_dir)
    overview = run_status(path)
    if overview and overview.get("status") == "finished":
        return dict(overview, action="skipped", exit_code=0)
    if overview and not overview.get("error"):
        argv = ["run", "--resume", str(path), "--quiet"]
        action = "resumed"
    else:
        argv = ["run", cell["task"], "--seed", str(cell["seed"]), "--iterations", str(iterations),
                "--run-dir", str(path), "--quiet", *extra]
        if cell["kind"] == "model":
            argv += ["--model", cell["value"]]
        elif cell["kind"] == "config":
            argv += ["--config", cell["value"]]
        action = "started"
    done = subprocess.run([sys.executable, "-c", CELL_PROCESS, str(os.getpid()), *argv], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
    overview = run_status(path) or {"run": str(path), "status": "not started"}
    lines = [line for line in (done.stderr or "").splitlines() if line.strip()]
    return dict(overview, action=action, exit_code=done.returncode,
                message=lines[-1][:300] if done.returncode and lines else "")


def failed_cell(run_dir: str, exc: BaseException) -> dict:
    """The row of a cell whose task itself failed (its node died past the retries, ...):
    the sweep still ends with its table, and a re-run picks the cell up again."""
    text = str(exc).strip().splitlines()
    return {"run": run_dir, "status": "failed", "action": "failed", "exit_code": 1,
            "message": f"{type(exc).__name__}: {text[-1][:300] if text else ''}".strip(": ")}


def gather_ray(refs: list, dirs: list[str]) -> list[dict]:
    import ray

    results = []
    for ref, run_dir in zip(refs, dirs):
        try:
            results.append(ray.get(ref))
        except Exception as exc:  # noqa: BLE001 - one cell's failure is its own row
            results.append(failed_cell(run_dir, exc))
    return results


def gather_local(futures: list, dirs: list[str]) -> list[dict]:
    results = []
    for future, run_dir in zip(futures, dirs):
        try:
            results.append(future.result())
        except Exception as exc:  # noqa: BLE001
            results.append(failed_cell(run_dir, exc))
    return results


def run_sweep(grid: list[dict], directory: Path, iterations: int, extra: list[str], executor: str,
              ray_address: str | None, parallel: int) -> list[dict]:
    if executor == "ray":
        from evolve.scoring.ray_executor import why_unreachable

        unreachable = why_unreachable(ray_address)
        if unreachable:  # before anything is written; ray.init would retry for minutes
            raise click.ClickException(f"cannot reach the Ray cluster at {ray_address}: {unreachable}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sweep.json").write_text(json.dumps({"cells": grid, "iterations": iterations, "extra": extra}, indent=2))
    dirs = [str((directory / c["name"]).resolve()) for c in grid]
    if executor == "ray":
        import ray

        owns = not ray.is_initialized()
        if owns:
            ray.init(address=ray_address or "auto", log_to_driver=False, configure_logging=False)
        try:
            # a cell whose node dies is retried (it resumes from its directory on the shared disk)
            remote = ray.remote(num_cpus=1, max_retries=2, retry_exceptions=False)(run_cell)
            results = gather_ray([remote.remote(c, d, iterations, extra) for c, d in zip(grid, dirs)], dirs)
        finally:
            if owns:
                ray.shutdown()
    elif parallel > 1:
        with ProcessPoolExecutor(max_workers=parallel) as pool:
            results = gather_local([pool.submit(run_cell, c, d, iterations, extra) for c, d in zip(grid, dirs)], dirs)
    else:
        results = gather_local([_done(run_cell, c, d, iterations, extra) for c, d in zip(grid, dirs)], dirs)
    rows = []
    for cell, result in zip(grid, results):
        rows.append({
            "task": cell["task"], "seed": cell["seed"], "model": cell["value"] or "",
            "best_validation_r2": result.get("best_validation_r2"), "test_r2": result.get("best_test_r2"),
            "status": result.get("status") or result.get("error") or "failed",
            "action": result.get("action"), "exit_code": result.get("exit_code"), "run_dir": result.get("run"),
            "message": result.get("message", ""),
        })
    (directory / "summary.json").write_text(json.dumps(rows, indent=2))
    return rows


def _done(fn, *args):
    """fn(*args) as a finished Future, so one cell's exception is its own row here too."""
    from concurrent.futures import Future

    future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as exc:  # noqa: BLE001
        future.set_exception(exc)
    return future


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def print_table(rows: list[dict]) -> None:
    header = ("task", "seed", "model", "val R²", "test R²", "status", "run dir")
    lines = [header] + [(r["task"], str(r["seed"]), r["model"] or "-", _fmt(r["best_validation_r2"]), _fmt(r["test_r2"]),
                         f"{r['status']} ({r['action']})", r["run_dir"] or "-") for r in rows]
    lines = [tuple(safe_text(cell, keep_newlines=False) for cell in line) for line in lines]  # statuses carry stop reasons
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


@click.command("sweep", context_settings={"ignore_unknown_options": True},
               help="A grid of independent runs (tasks x seeds x models or configs), resumable; on Ray or here.")
@click.option("--tasks", required=True, help="comma-separated task names or folders")
@click.option("--seeds", default="0", show_default=True, help="comma-separated seeds")
@click.option("--models", default="", help="comma-separated models (one run each)")
@click.option("--configs", default="", help="comma-separated TOML config files (one run each)")
@click.option("--iterations", type=int, default=50, show_default=True, help="proposals per run")
@click.option("--dir", "directory", type=click.Path(path_type=Path), required=True, help="the sweep folder")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="run the cells here or as Ray tasks")
@click.option("--ray-address", default=None, help="Ray cluster address HOST:PORT (default: RAY_ADDRESS)")
@click.option("--parallel", type=int, default=1, show_default=True, help="local only: runs at once")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
def sweep_command(tasks, seeds, models, configs, iterations, directory, executor, ray_address, parallel, as_json,
                  run_args) -> int:
    """Extra arguments after the options go to every `evolve run` (e.g. --proposer offline)."""
    grid = cells(_split(tasks), _split(seeds), _split(models), _split(configs))
    rows = run_sweep(grid, directory, iterations, list(run_args), executor, ray_address, parallel)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        print_table(rows)
    bad = [r for r in rows if r["exit_code"] not in (0, None)]
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(sweep_command())
