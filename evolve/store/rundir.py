"""Run directories: where a run lives, and the one place that creates, resumes, opens and finds them.

A run directory holds `archive.db` (everything needed to inspect and resume the run) and,
once the run has finished, `best.py`. A new run is created only after its task and seed
laws load, so bad input leaves nothing on disk; a kill before the settings were stored
leaves a database with no program, which the next start may replace.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from pathlib import Path

from evolve.config import RunConfig, config_from_stored, config_to_dict
from evolve.records import ProgramRecord
from evolve.store.database import Archive
from evolve.store.errors import ArchiveError
from evolve.tasks import Task, data_root, load_task

DATABASE_NAME = "archive.db"
BEST_PROGRAM_NAME = "best.py"


def default_run_dir(task_name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("archive") / f"{Path(task_name).name}-{stamp}"


def database_path(run: str | Path) -> Path:
    """RUN/archive.db for a run directory (a path to the database itself is accepted too)."""
    path = Path(run)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ArchiveError(f"{path}: no such run directory")
    if not (path / DATABASE_NAME).is_file():
        raise ArchiveError(f"{path}: not a run directory (no {DATABASE_NAME})")
    return path / DATABASE_NAME


def open_read_only(run: str | Path) -> Archive:
    """A run's archive for reading; never writes, so a live run can be inspected."""
    return Archive.open(database_path(run), readonly=True)


def run_task(archive: Archive) -> Task:
    """The task the run evolved laws for, from its stored settings."""
    config = archive.get_meta("config") or {}
    name = config.get("task") or archive.get_meta("task")
    if not name:
        raise ArchiveError(f"{archive.path}: the run does not record its task")
    return load_task(name)


def returned_law(archive: Archive) -> ProgramRecord | None:
    """The law the run returned (best.py): the program `evolve.selection` chose from train
    alone when the run ended, else (a run still going, or stopped before choosing) the best
    by validation R²."""
    chosen = (archive.get_meta("selection") or {}).get("id")
    try:
        record = archive.get(chosen) if isinstance(chosen, int) else None
    except ArchiveError:
        record = None
    return record if record is not None and record.ok else archive.best()


def run_name(archive: Archive) -> str:
    return archive.path.resolve().parent.name


def run_overview(directory: Path, database: Path) -> dict:
    """One line of `evolve runs`: what a run is, how far it got and what it found."""
    try:
        archive = Archive.open(database, readonly=True)
    except ArchiveError as exc:
        return {"run": str(directory), "error": str(exc)}
    with archive:
        best = archive.best()
        law = returned_law(archive)
        usage = archive.get_meta("usage") or tokens_of(archive.programs(order="id"))
        config = archive.get_meta("config") or {}
        return {
            "run": str(directory),
            "task": archive.get_meta("task") or config.get("task"),
            "started_at": archive.get_meta("started_at"),
            "finished_at": archive.get_meta("finished_at"),
            "status": archive.get_meta("status"),
            "iterations": archive.get_meta("iteration"),
            "planned_iterations": config.get("iterations"),
            "programs": archive.count(),
            "best_id": best.id if best else None,
            "best_validation_r2": best.r2 if best else None,
            "best_test_r2": test_r2(best),
            "law_id": law.id if law else None,
            "law_chosen": bool(archive.get_meta("selection")),  # False: stopped before its end, the law is the best by validation
            "law_validation_r2": law.r2 if law else None,
            "law_test_r2": test_r2(law),
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "cost_usd": usage.get("cost_usd"),
        }


def test_r2(record: ProgramRecord | None) -> float | None:
    return record.test.metrics.r2 if record is not None and record.test is not None and record.test.ok else None


def tokens_of(records: list[ProgramRecord]) -> dict:
    """Token totals summed over the programs, for runs that stored no usage record."""
    return {
        "prompt_tokens": sum(r.prompt_tokens for r in records),
        "completion_tokens": sum(r.completion_tokens for r in records),
    }


def find_runs(directory: Path) -> list[tuple[Path, Path]]:
    """(run directory, database) for every archive.db under `directory`, sorted by path."""
    if not directory.is_dir():
        raise ArchiveError(f"{directory}: no such directory")
    found = set(directory.rglob(DATABASE_NAME)) | set(directory.glob(f"*/{DATABASE_NAME}"))  # glob follows linked runs
    return [(db.parent, db) for db in sorted(found) if db.is_file()]


def relative_name(run: Path, directory: Path) -> str:
    """A run's path below --dir, which is what tells runs apart in a narrow table."""
    try:
        return str(run.relative_to(directory)) if run != directory else run.name
    except ValueError:
        return str(run)


def discard_unstarted_run(database: Path) -> None:
    """Remove an archive that a kill left before its settings were stored (it holds no
    program, so nothing is lost); refuse any other existing run."""
    with Archive.open(database) as archive:
        unstarted = archive.get_meta("config") is None and archive.count() == 0
    if not unstarted:
        raise ArchiveError(f"{database.parent} already holds a run: use --resume {database.parent} or another --run-dir")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)


def resume_run(resume_dir: Path, iterations: int | None = None) -> tuple[RunConfig, Archive, Task]:
    """The stored settings, archive and task of a run to continue. `iterations` extends (or,
    when None, keeps) the run's own planned count; nothing else of a run can change."""
    database = Path(resume_dir) / DATABASE_NAME
    if not database.is_file():
        raise ArchiveError(f"no run to resume in {resume_dir} (missing {DATABASE_NAME})")
    archive = Archive.open(database)
    stored = archive.get_meta("config")
    if stored is None:
        archive.close()
        raise ArchiveError(f"{resume_dir} was stopped before it stored its settings: start it again with `evolve run TASK --run-dir {resume_dir}`")
    resumed = config_from_stored(stored)
    if iterations is not None and iterations < (done := archive.max_iteration()):  # a run cannot be un-run: refuse, change nothing
        archive.close()
        raise ArchiveError(f"{resume_dir} has already run {done} iterations: --iterations must be at least {done}")
    if iterations is not None and iterations != resumed.iterations:
        resumed = dataclasses.replace(resumed, iterations=iterations)
        archive.set_meta("config", {**stored, "iterations": iterations})  # the run's plan now: `evolve runs` shows it, a later resume keeps it
    try:
        task = load_task(resumed.task)
    except BaseException:
        archive.close()
        raise
    return resumed, archive, task


def create_run(config: RunConfig, task: Task) -> tuple[RunConfig, Archive, Path]:
    """A new run directory and archive with the run's settings stored. Call it only once the
    task and seeds have loaded; `discard_failed_start` undoes it when the start fails."""
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config.task)
    if (run_dir / DATABASE_NAME).exists():
        discard_unstarted_run(run_dir / DATABASE_NAME)
    existed = run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(f"cannot create run directory {run_dir}: {exc.strerror or exc}") from None
    archive = Archive.create(run_dir / DATABASE_NAME, config.archive, task.param_cap)
    shipped = task.path.parent == data_root("tasks")
    config = dataclasses.replace(config, run_dir=str(run_dir), task=config.task if shipped else str(task.path))
    archive.set_meta("config", config_to_dict(config))
    archive.set_meta("task", task.name)
    archive.set_meta("started_at", time.time())
    archive.set_meta("status", "running")
    archive.set_meta("iteration", 0)
    archive.set_meta("created_directory", not existed)
    return config, archive, run_dir


def discard_failed_start(archive: Archive) -> None:
    """Remove a run that failed before it evolved anything (its seeds did not score): its
    database, and its folder when this run created it and nothing else is in it. A run that
    has started evolving is never removed."""
    if archive.get_meta("seeded", False) or archive.max_iteration() > 0:
        archive.close()
        return
    created = bool(archive.get_meta("created_directory", False))
    database = archive.path
    archive.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    if created:
        try:
            database.parent.rmdir()
        except OSError:
            pass  # not empty: something else lives there
