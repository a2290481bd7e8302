"""The controller: seeds, batches of proposals scored in parallel, archive, resume, test at the end.

The loop is the only place that knows the order of things. It works in batches: it picks
a batch of parents from the archive as it stands, proposes and scores the children in
parallel, then stores them in iteration order. Because selection only ever sees whole
batches, a run with a fixed seed is reproducible whatever the timing of threads.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from evolve.store.database import Archive
from evolve.config import ConfigError, RunConfig, config_from_stored, config_to_dict
from evolve.propose.client import BudgetExceeded
from evolve.metrics import failed_metrics
from evolve.program import ProgramError, detect_api, ensure_block, parse_python, wrap_law_program
from evolve.cli.progress import RunProgress
from evolve.propose.base import Proposal, ProposalRequest, Proposer
from evolve.records import ProgramRecord
from evolve.scoring.scorer import Evaluation, Scorer
from evolve.tasks import Task, data_root, load_task

DATABASE_NAME = "archive.db"
BEST_PROGRAM_NAME = "best.py"
DUPLICATE_RETRIES = 4  # offline proposals that repeat a stored program are asked again this often
UNAVAILABLE_LIMIT = 4  # proposals in a row that the endpoint failed after its retries


@dataclass
class RunSummary:
    """What a run did, for the CLI and benchmarks."""

    run_dir: Path
    task: str
    iterations: int
    evaluations: int
    failures: int
    stopped_reason: str
    seconds: float
    best: ProgramRecord | None = None
    top: list[ProgramRecord] = field(default_factory=list)
    usage: dict = field(default_factory=dict)


class RunError(RuntimeError):
    """A run that cannot start or continue; its message is one line."""


def default_run_dir(task_name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("archive") / f"{Path(task_name).name}-{stamp}"


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
        raise RunError(f"cannot read seed law {path}: {exc.strerror or exc}") from None
    try:
        api = detect_api(text)
    except ProgramError as exc:
        raise RunError(f"seed law {path}: {exc}") from None
    if api == "law":
        return wrap_law_program(text, task.features, task.targets)
    return ensure_block(text)


def code_key(code: str) -> str:
    """A key equal for programs that differ only in comments or layout: they score the same,
    so the loop scores such a program once (its syntax tree is the key; raw text when it
    does not parse)."""
    try:
        text = ast.dump(parse_python(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        text = code
    return hashlib.sha256(text.encode()).hexdigest()


def proposal_failure(proposal: Proposal, n_targets: int) -> Evaluation:
    """A proposal without code is stored like a failed evaluation, so the loop and prompts see it."""
    kind, _, reason = proposal.error.partition(":")
    return Evaluation(
        status=kind.strip() or "no_code",
        split="validation",
        metrics=failed_metrics(n_targets),
        message=reason.strip() or proposal.error,
    )


class Evolution:
    """One run: an archive in a run directory, a proposer, a scorer and a random generator."""

    def __init__(self, config: RunConfig, archive: Archive, task: Task, proposer: Proposer, scorer: Scorer, rng: random.Random, progress: RunProgress):
        self.config = config
        self.archive = archive
        self.task = task
        self.proposer = proposer
        self.scorer = scorer
        self.rng = rng
        self.progress = progress
        self.cache = {code_key(r.code): r.validation for r in archive.programs(order="id") if r.code}
        self.unavailable_streak = 0
        self.duplicate_retries = DUPLICATE_RETRIES if proposer.name == "offline" else 0  # model calls cost tokens

    @property
    def batch_size(self) -> int:
        return max(1, self.config.scorer.workers, self.config.model.concurrency if self.proposer.name == "llm" else 1)

    def add_seeds(self) -> list[ProgramRecord]:
        """Score each seed once and place it on every island, so every island has a parent.

        A run killed while seeding resumes here: seeds already stored are not added again.
        """
        seeds = [r for r in self.archive.programs(order="id") if r.proposer == "seed"]
        stored = {r.code for r in seeds}
        for path in seed_law_paths(self.task, self.config):
            code = load_seed_program(path, self.task)
            if code in stored:
                continue
            evaluation = self.scorer.score(code, self.task, "validation")
            self.cache[code_key(code)] = evaluation
            for island in range(self.config.archive.islands):
                record = ProgramRecord(code=code, validation=evaluation, island=island, proposer="seed", explanation=f"seed law {path.name}")
                seeds.append(self.archive.add(record))
            self.progress.seed(path.name, evaluation)
        if not any(s.ok for s in seeds):
            raise RunError("no seed law scored: fix the seed laws (see the messages above) or pass --seed-law")
        self.archive.set_meta("seeded", True)
        return seeds

    def requests(self, first_iteration: int, count: int) -> list[ProposalRequest]:
        requests = []
        archive_config = self.config.archive
        for offset in range(count):
            iteration = first_iteration + offset
            island = iteration % archive_config.islands
            parent = self.archive.sample_parent(self.rng, island)
            failures = tuple(self.archive.recent_failures(island, 3))
            requests.append(
                ProposalRequest(
                    task=self.task,
                    parent=parent,
                    inspirations=tuple(self.archive.sample_inspirations(self.rng, island, parent, archive_config.inspirations)),
                    failures=failures,
                    edit_mode=edit_mode_for(parent, failures, self.config.edit_mode),
                    seed=self.rng.randrange(2**31),
                )
            )
        return requests

    def propose_and_score(self, request: ProposalRequest) -> tuple[Proposal, Evaluation]:
        proposal = self.proposer.propose(request)
        for attempt in range(1, self.duplicate_retries + 1):  # a cheap proposer asks again rather than repeat a program
            if proposal.code is None or code_key(proposal.code) not in self.cache:
                break
            proposal = self.proposer.propose(dataclasses.replace(request, seed=request.seed + attempt))
        if proposal.code is None:
            return proposal, proposal_failure(proposal, len(self.task.targets))
        cached = self.cache.get(code_key(proposal.code))
        if cached is not None:
            return proposal, cached
        return proposal, self.scorer.score(proposal.code, self.task, "validation")

    def store(self, iteration: int, request: ProposalRequest, proposal: Proposal, evaluation: Evaluation) -> ProgramRecord:
        record = ProgramRecord(
            code=proposal.code or "",
            validation=evaluation,
            iteration=iteration,
            island=request.parent.island,
            parent_id=request.parent.id,
            proposer=proposal.proposer or self.proposer.name,
            model=proposal.model,
            explanation=proposal.explanation,
            prompt_tokens=proposal.prompt_tokens,
            completion_tokens=proposal.completion_tokens,
            generation_seconds=proposal.seconds,
            edit_mode=proposal.edit_mode,
            extra=proposal.extra,
        )
        if proposal.code:
            self.cache[code_key(proposal.code)] = evaluation
        return self.archive.add(record)

    def run_batches(self, executor: ThreadPoolExecutor, start: int, end: int, usage) -> str:
        """Iterations start+1..end in batches; returns why the run stopped."""
        iteration = start
        while iteration < end:
            count = min(self.batch_size, end - iteration)
            requests = self.requests(iteration + 1, count)
            futures = [executor.submit(self.propose_and_score, r) for r in requests]
            budget_error = None
            for offset, (request, future) in enumerate(zip(requests, futures)):
                try:
                    proposal, evaluation = future.result()
                except BudgetExceeded as exc:  # the batch's other children are still stored
                    budget_error = exc
                    continue
                self.progress.child(self.store(iteration + 1 + offset, request, proposal, evaluation))
                self.note_availability(evaluation)
            iteration += count
            self.save_state(iteration, usage)
            if budget_error is not None:
                return f"budget reached: {budget_error}"
            if self.config.archive.migration_interval and iteration % self.config.archive.migration_interval < count:
                self.archive.migrate(iteration)
        return "finished"

    def note_availability(self, evaluation: Evaluation) -> None:
        """Stop (resumably) once the model endpoint has failed several proposals in a row."""
        self.unavailable_streak = self.unavailable_streak + 1 if evaluation.status == "unavailable" else 0
        if self.unavailable_streak >= UNAVAILABLE_LIMIT:
            raise RunError(f"the model endpoint failed {UNAVAILABLE_LIMIT} requests in a row ({evaluation.message}); resume with `evolve run --resume {self.config.run_dir}` when it is back")

    def save_state(self, iteration: int, usage) -> None:
        self.archive.set_meta("iteration", iteration)
        self.archive.set_meta("rng_state", rng_state_to_json(self.rng))
        if usage is not None:
            self.archive.set_meta("usage", usage.to_dict())

    def score_top_on_test(self) -> list[ProgramRecord]:
        """Re-score the best distinct programs on test: for reporting only, after selection is over."""
        top, seen = [], set()
        for record in self.archive.programs(failed=False, order="r2"):
            key = code_key(record.code)
            if key in seen:
                continue
            seen.add(key)
            top.append(record)
            if len(top) >= self.config.top_k_test:
                break
        futures = [(r, self.scorer.submit(r.code, self.task, "test")) for r in top]
        scored = []
        for record, future in futures:
            evaluation = future.result()
            self.archive.set_test(record.id, evaluation)
            scored.append(dataclasses.replace(record, test=evaluation))
        return scored


def edit_mode_for(parent: ProgramRecord, failures: tuple[ProgramRecord, ...], configured: str) -> str:
    """A full rewrite when a recent diff against this parent did not apply: the model
    evidently misremembers that block, and the same request would likely fail the same
    way. Decided from the archive at batch start, so replays and seeded runs agree."""
    if configured == "diff" and any(f.parent_id == parent.id and f.validation.status == "diff_not_applied" for f in failures):
        return "full"
    return configured


def rng_state_to_json(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_json(state: list) -> random.Random:
    rng = random.Random()
    rng.setstate((state[0], tuple(state[1]), state[2]))
    return rng


def make_proposer(config: RunConfig, task: Task, rng: random.Random, stored_usage: dict | None = None):
    """The LLM proposer when an API key or endpoint is configured (or asked for), else the offline one.

    Returns the proposer and the usage tracker (None for the offline proposer); a resumed
    run continues its token totals, so budgets hold across restarts.
    """
    if config.replay:
        from evolve.propose.replay import ReplayProposer

        return ReplayProposer(Path(config.replay)), None
    choice = config.proposer
    if choice == "auto":
        has_endpoint = config.model.resolved_api_key() or config.model.resolved_base_url()
        choice = "llm" if has_endpoint else "offline"
    if choice == "offline":
        from evolve.propose.offline import OfflineProposer

        return OfflineProposer(task), None
    if choice == "llm":
        from evolve.propose.client import LLMClient, Usage
        from evolve.propose.model import LLMProposer

        usage = Usage.from_dict(stored_usage) if stored_usage else Usage()
        client = LLMClient(config.model, usage=usage, budget_tokens=config.budget_tokens, budget_usd=config.budget_usd, rng=random.Random(config.seed))
        return LLMProposer(client, Path(config.prompts_dir) if config.prompts_dir else None), usage
    raise ConfigError(f"unknown proposer '{config.proposer}' (choose auto, llm or offline)")


def write_best_program(run_dir: Path, best: ProgramRecord, task: Task) -> Path:
    """The best program as a standalone file, its scores and fitted parameters in a header."""
    lines = [
        f"# Best law of run {run_dir.name} on task {task.name} (program {best.id}).",
        f"# Validation R2 {best.validation.metrics.r2:.6f}"
        + (f"; test R2 {best.test.metrics.r2:.6f}" if best.test and best.test.ok else ""),
        f"# Fitted parameters per group (refit by fit_scaling_law on your data): n_params={best.n_params}",
    ]
    params = best.test.params if best.test and best.test.params else best.validation.params
    for group, values in sorted(params.items()):
        shown = "[" + ", ".join(f"{v:.6g}" for v in values) + "]" if values is not None else "(not numeric)"
        lines.append(f"#   {group}: {shown}")
    path = run_dir / BEST_PROGRAM_NAME
    path.write_text("\n".join(lines) + "\n" + best.code)
    return path


def discard_unstarted_run(database: Path) -> None:
    """Remove an archive that a kill left before its settings were stored (it holds no
    program, so nothing is lost); refuse any other existing run."""
    with Archive.open(database) as archive:
        unstarted = archive.get_meta("config") is None and archive.count() == 0
    if not unstarted:
        raise RunError(f"{database.parent} already holds a run: use --resume {database.parent} or another --run-dir")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)


def open_run(config: RunConfig, resume_dir: Path | None) -> tuple[RunConfig, Archive, Path, Task]:
    """A new run directory and archive, or the stored settings and archive of a run to resume.

    A new run loads its task and seed laws first, so bad input leaves nothing on disk."""
    if resume_dir is not None:
        database = resume_dir / DATABASE_NAME
        if not database.is_file():
            raise RunError(f"no run to resume in {resume_dir} (missing {DATABASE_NAME})")
        archive = Archive.open(database)
        stored = archive.get_meta("config")
        if stored is None:
            archive.close()
            raise RunError(f"{resume_dir} was stopped before it stored its settings: start it again with `evolve run TASK --run-dir {resume_dir}`")
        resumed = config_from_stored(stored)
        if config.iterations > resumed.iterations:  # a resume may extend the run
            resumed = dataclasses.replace(resumed, iterations=config.iterations)
        return resumed, archive, resume_dir, load_task(resumed.task)
    task = load_task(config.task)
    for path in seed_law_paths(task, config):  # refuse unusable seeds before anything is written
        load_seed_program(path, task)
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config.task)
    if (run_dir / DATABASE_NAME).exists():
        discard_unstarted_run(run_dir / DATABASE_NAME)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create run directory {run_dir}: {exc.strerror or exc}") from None
    archive = Archive.create(run_dir / DATABASE_NAME, config.archive, task.param_cap)
    shipped = task.path.parent == data_root("tasks")
    config = dataclasses.replace(config, run_dir=str(run_dir), task=config.task if shipped else str(task.path))
    archive.set_meta("config", config_to_dict(config))
    archive.set_meta("task", task.name)
    archive.set_meta("started_at", time.time())
    archive.set_meta("status", "running")
    archive.set_meta("iteration", 0)
    return config, archive, run_dir, task


def run_evolution(config: RunConfig, resume_dir: Path | None = None, proposer: Proposer | None = None, progress: RunProgress | None = None) -> RunSummary:
    """Run (or resume) an evolution and return its summary; the archive holds everything."""
    started = time.perf_counter()
    config, archive, run_dir, task = open_run(config, resume_dir)
    progress = progress or RunProgress(enabled=False)
    stored_rng = archive.get_meta("rng_state")
    rng = rng_from_json(stored_rng) if stored_rng else random.Random(config.seed)
    usage = None
    if proposer is None:
        proposer, usage = make_proposer(config, task, rng, archive.get_meta("usage"))
    stopped = "finished"
    try:
        with Scorer(config.scorer) as scorer:
            evolution = Evolution(config, archive, task, proposer, scorer, rng, progress)
            if not archive.get_meta("seeded", False):
                evolution.add_seeds()
            start = archive.max_iteration()  # a kill mid-batch keeps the children stored before it
            progress.start(task.name, run_dir, start, config.iterations, archive.best(), proposer.name, usage)
            archive.set_meta("status", "running")
            with ThreadPoolExecutor(max_workers=evolution.batch_size, thread_name_prefix="propose") as executor:
                stopped = evolution.run_batches(executor, start, config.iterations, usage)
            progress.stop()
            top = evolution.score_top_on_test()
    except BaseException as exc:
        progress.stop()
        archive.set_meta("status", "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped: {exc}")
        archive.close()
        raise
    finally:
        proposer.close()
    best = top[0] if top else None
    if best is not None:
        write_best_program(run_dir, best, task)
    archive.set_meta("status", "finished")
    archive.set_meta("finished_at", time.time())
    programs = archive.programs(order="id")
    summary = RunSummary(
        run_dir=run_dir,
        task=task.name,
        iterations=int(archive.get_meta("iteration", 0)),
        evaluations=len(programs),
        failures=sum(1 for p in programs if not p.ok),
        stopped_reason=stopped,
        seconds=time.perf_counter() - started,
        best=best,
        top=top,
        usage=usage.to_dict() if usage is not None else {},
    )
    archive.close()
    return summary
