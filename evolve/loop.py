"""The controller: seeds, batches of proposals scored in parallel, archive, resume, test at the end.

The loop is the only place that knows the order of things. It works in batches: it picks
a batch of parents from the archive as it stands, proposes and scores the children in
parallel, then stores them in iteration order. Because selection only ever sees whole
batches, a run with a fixed seed is reproducible whatever the timing of threads.
"""

from __future__ import annotations

import dataclasses
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol
from pathlib import Path

from evolve.store.database import Archive
from evolve.config import RunConfig
from evolve.propose.client import BudgetExceeded
from evolve.metrics import failed_metrics
from evolve.program import code_key
from evolve.propose.base import Proposal, ProposalRequest, Proposer, built_from, propose_or_fail
from evolve.records import ProgramRecord
from evolve.scoring.factory import open_scorer
from evolve.scoring.memo import FitMemo
from evolve.scoring.scorer import Evaluation, Scorer
from evolve.status import Status
from evolve.text import one_line
from evolve.propose.seeds import load_seed_program, seed_law_paths, seed_programs
from evolve.propose.factory import make_proposer
from evolve.run_state import pending_from_json, pending_to_json, rng_from_json, rng_state_to_json, usage_with
from evolve.run_end import end_of_run
from evolve.store.rundir import create_run, discard_failed_start, resume_run
from evolve.tasks import Task, load_task

# An outage (the endpoint refused connections, answered 5xx or timed out, after the
# client's own retries) costs no iteration: the lost requests are asked again after a
# pause. The run ends, resumably and with one line, once no request has been answered for
# [model] outage_limit_s (--outage-limit); a server restart or a short network cut is ridden out.
# Pauses between rounds of an outage, as fractions of that limit (the last repeated): with
# the default 600 s, 10, 20, 40, then 60 s.
OUTAGE_PAUSES = (1 / 60, 1 / 30, 1 / 15, 1 / 10)
INTERRUPT_GRACE_S = 3.0  # after Ctrl-C: how long replies and scores already under way may finish


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


def proposal_failure(proposal: Proposal, n_targets: int) -> Evaluation:
    """A proposal without code is stored like a failed evaluation, so the loop and prompts see it."""
    return Evaluation(
        status=proposal.status or Status.NO_CODE,
        split="validation",
        metrics=failed_metrics(n_targets),
        message=proposal.message,
    )


class Evolution:
    """One run: an archive in a run directory, a proposer, a scorer and a random generator."""

    def __init__(self, config: RunConfig, archive: Archive, task: Task, proposer: Proposer, scorer: Scorer, rng: random.Random, progress: "Progress"):
        self.config = config
        self.archive = archive
        self.task = task
        self.proposer = proposer
        self.scorer = scorer
        self.rng = rng
        self.progress = progress
        self.cache = {code_key(r.code): r.validation for r in archive.programs(order="id") if r.code}
        self.outage_started: float | None = None
        self.outage_rounds = 0
        self.duplicate_retries = proposer.duplicate_retries
        self.usage = None  # the proposer's live token totals (set by run_evolution)
        self.saved_usage: dict | None = None  # the totals of the programs stored: saved with every program
        self.arrived: dict[int, tuple[ProposalRequest, Proposal]] = {}  # replies in, not yet stored (by request id)

    @property
    def batch_size(self) -> int:
        return max(1, self.config.scorer.workers, self.proposer.parallel_requests)

    def add_seeds(self) -> list[ProgramRecord]:
        """Score each seed once and place it on every island, so every island has a parent.

        A run killed while seeding resumes here: seeds already stored are not added again.
        """
        seeds = [r for r in self.archive.programs(order="id") if r.proposer == "seed"]
        stored = {r.code for r in seeds}
        for name, code in seed_programs(self.task, self.config):
            if code in stored:
                continue
            evaluation = self.scorer.score(code, self.task, "validation")
            self.cache[code_key(code)] = evaluation
            for island in range(self.config.archive.islands):
                record = ProgramRecord(code=code, validation=evaluation, island=island, proposer="seed", explanation=f"seed law {name}")
                seeds.append(self.archive.add(record))
            self.progress.seed(name, evaluation)
        if not any(s.ok for s in seeds):
            reasons = "; ".join(sorted({f"{s.explanation.removeprefix('seed law ')}: {s.validation.status} ({last_line(s.validation.message)})" for s in seeds}))
            raise RunError(f"no seed law scored ({reasons}): fix the seed laws or pass --seed-law")
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

    def propose_and_score(self, request: ProposalRequest, known: frozenset[str]) -> tuple[Proposal, Evaluation]:
        """Propose and score one child. A cheap proposer asks again rather than repeat a
        program in `known`, the code keys stored when its batch began (not the live cache
        its siblings fill: then it would depend on which thread finished first)."""
        proposal = propose_or_fail(self.proposer, request)
        for attempt in range(1, self.duplicate_retries + 1):
            if proposal.code is None or code_key(proposal.code) not in known:
                break
            proposal = propose_or_fail(self.proposer, dataclasses.replace(request, seed=request.seed + attempt))
        if proposal.status != Status.UNAVAILABLE:
            self.arrived[id(request)] = (request, proposal)  # kept on Ctrl-C even if its scoring is cut short
        return self.score_proposal(proposal)

    def store(self, iteration: int, request: ProposalRequest, proposal: Proposal, evaluation: Evaluation) -> ProgramRecord:
        """Store a child with the run state just after it (iteration, RNG, token usage), in
        one transaction: after any stop the saved totals and RNG match the archive."""
        record = ProgramRecord(
            code=proposal.code or "",
            validation=evaluation,
            iteration=iteration,
            island=request.parent.island,
            parent_id=built_from(request, proposal),
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
        state = {"iteration": iteration, "rng_state": rng_state_to_json(self.rng)}
        saved = self.saved_usage
        if self.usage is not None:
            saved = usage_with(self.saved_usage or self.usage.to_dict(), proposal, self.usage.to_dict())
            state["usage"] = saved
        stored = self.archive.add(record, run_state=state)  # a Ctrl-C before this commits keeps the reply in `arrived`
        self.saved_usage = saved
        self.arrived.pop(id(request), None)
        return stored

    def run_batches(self, executor: ThreadPoolExecutor, start: int, end: int, usage) -> str:
        """Children start+1..end in batches; returns why the run stopped.

        A proposal lost to an outage is not stored: its request goes to the front of the
        next batch, after a pause (see note_outage). Iterations number the stored
        children, so they stay consecutive and a resume starts after the last one."""
        self.usage = usage
        stored = start
        lost: list[ProposalRequest] = []
        while stored < end:
            requests: list[ProposalRequest] = []
            futures: list[Future] = []
            handled: set[int] = set()
            before = stored
            try:  # a Ctrl-C anywhere in a batch (even between two of them) cancels what is in flight
                count = min(self.batch_size, end - stored)
                again, lost = lost[:count], lost[count:]
                requests = again + self.requests(stored + 1 + len(again), count - len(again))
                known = frozenset(self.cache)
                for request in requests:
                    futures.append(executor.submit(self.propose_and_score, request, known))
                stored, budget_error = self.collect(requests, futures, handled, stored, lost)
                self.save_state(stored, usage)
                if budget_error is not None:
                    return f"budget reached: {budget_error}"
                self.note_outage(answered=stored > before, lost=bool(lost))
                self.migrate_if_due(before, stored)
            except KeyboardInterrupt:
                self.stop_now([(r, f) for i, (r, f) in enumerate(zip(requests, futures)) if i not in handled], self.archive.max_iteration(), before)
                raise
        return "finished"

    def collect(self, requests: list[ProposalRequest], futures: list[Future], handled: set[int], stored: int,
                lost: list[ProposalRequest]) -> tuple[int, BudgetExceeded | None]:
        """Store a batch's children in iteration order (`handled` records the ones dealt with,
        for stop_now); a request lost to an outage goes to `lost`. The new last iteration."""
        budget_error = None
        for offset, (request, future) in enumerate(zip(requests, futures)):
            try:
                proposal, evaluation = future.result()
            except BudgetExceeded as exc:  # the batch's other children are still stored
                budget_error = exc
                handled.add(offset)
                continue
            if proposal.status == Status.UNAVAILABLE:
                handled.add(offset)
                lost.append(request)
                self.outage_message = proposal.message
                continue
            record = self.store(stored + 1, request, proposal, evaluation)
            handled.add(offset)
            stored += 1
            self.progress.child(record)
        return stored, budget_error

    def note_outage(self, answered: bool, lost: bool) -> None:
        """Pause before asking again while the endpoint is down; stop (resumably) once it
        has answered nothing for [model] outage_limit_s."""
        if answered or not lost:
            self.outage_started, self.outage_rounds = None, 0
            return
        now = time.monotonic()
        if self.outage_started is None:
            self.outage_started = now
        down_for = now - self.outage_started
        limit = float(self.config.model.outage_limit_s)
        if down_for >= limit:
            raise RunError(f"the model endpoint answered no request for {down_for:.0f} s ({getattr(self, 'outage_message', '')}); "
                           f"resume with `evolve run --resume {self.config.run_dir}` when it is back")
        pause = limit * OUTAGE_PAUSES[min(self.outage_rounds, len(OUTAGE_PAUSES) - 1)]
        self.outage_rounds += 1
        self.progress.note(f"model endpoint unavailable for {down_for:.0f} s ({getattr(self, 'outage_message', '')}); asking again in {pause:.0f} s")
        time.sleep(min(pause, max(0.0, limit - down_for)))

    def stop_now(self, unhandled: list[tuple[ProposalRequest, Future]], stored: int, batch_start: int) -> None:
        """Ctrl-C: cancel the model requests in flight (the server stops generating them),
        give replies and scores under way INTERRUPT_GRACE_S to finish, and store the finished
        children in request order, as the run would have, up to the first unfinished one.
        The rest of the batch is kept in meta `pending_replies`, in order (a reply whose
        scoring was cut short, or the request itself), and completed first on resume, so
        no reply is lost and a resumed run stores and migrates as an uninterrupted one."""
        cancel = getattr(self.proposer, "cancel", None)
        if cancel is not None:
            cancel()
        futures = [f for _, f in unhandled]
        if futures:
            wait(futures, timeout=INTERRUPT_GRACE_S)
        pending = []
        for request, future in unhandled:
            finished = future.done() and not future.cancelled() and future.exception() is None
            if not pending and finished and id(request) in self.arrived:
                proposal, evaluation = future.result()
                stored += 1
                self.progress.child(self.store(stored, request, proposal, evaluation))
                continue
            arrived = self.arrived.get(id(request))
            pending.append(pending_to_json(request, arrived[1] if arrived is not None else None))
        self.archive.set_meta("pending_replies", pending)
        self.archive.set_meta("pending_batch_start", batch_start)
        self.save_state(stored, self.usage)

    def score_pending(self, start: int) -> int:
        """Complete the batch a Ctrl-C cut short (see stop_now): score the kept replies and
        ask again for the requests that had none, in their order, then migrate if the batch
        crossed a migration point; the new last iteration. Each item leaves meta once stored."""
        pending = list(self.archive.get_meta("pending_replies") or [])
        batch_start = int(self.archive.get_meta("pending_batch_start") or start)
        known = frozenset(code_key(r.code) for r in self.archive.programs(order="id") if r.code and r.iteration <= batch_start)
        stored = start
        while pending:
            request, proposal = pending_from_json(pending[0], self.archive, self.task)
            if request is not None:
                proposal, evaluation = self.score_proposal(proposal) if proposal is not None else self.propose_and_score(request, known)
                stored += 1
                self.progress.child(self.store(stored, request, proposal, evaluation))
            pending.pop(0)
            self.archive.set_meta("pending_replies", pending)
            if not pending:
                self.migrate_if_due(batch_start, stored)
        return stored

    def migrate_if_due(self, before: int, stored: int) -> None:
        """Migrate when the children before+1..stored crossed a multiple of the interval."""
        interval = self.config.archive.migration_interval
        if interval and stored > before and stored % interval < stored - before:
            self.archive.migrate(stored)

    def score_proposal(self, proposal: Proposal) -> tuple[Proposal, Evaluation]:
        if proposal.code is None:
            return proposal, proposal_failure(proposal, len(self.task.targets))
        cached = self.cache.get(code_key(proposal.code))
        return proposal, cached if cached is not None else self.scorer.score(proposal.code, self.task, "validation")

    def save_state(self, iteration: int, usage) -> None:
        """Iteration, RNG and the stored programs' token totals (with the live retry and
        failure counts), so meta agrees with the archive whenever the run stops."""
        self.archive.set_meta("iteration", iteration)
        self.archive.set_meta("rng_state", rng_state_to_json(self.rng))
        if usage is not None:
            live = usage.to_dict()
            self.archive.set_meta("usage", usage_with(self.saved_usage or live, None, live))


def last_line(message: str) -> str:
    """The line of a failure message that says what went wrong (a traceback's last line)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return one_line(lines[-1])[:200] if lines else "no message"


def edit_mode_for(parent: ProgramRecord, failures: tuple[ProgramRecord, ...], configured: str) -> str:
    """A full rewrite when a recent diff against this parent did not apply: the model
    evidently misremembers that block, and the same request would likely fail the same
    way. Decided from the archive at batch start, so replays and seeded runs agree."""
    if configured == "diff" and any(f.parent_id == parent.id and f.validation.status == Status.DIFF_NOT_APPLIED for f in failures):
        return "full"
    return configured


class Progress(Protocol):
    """What the loop tells whoever watches it (the CLI's live display, or nobody)."""

    def begin(self, task: str, run_dir: Path, proposer: str) -> None: ...  # the run's header, before its seeds are scored
    def seed(self, name: str, evaluation: Evaluation) -> None: ...
    def start(self, task: str, run_dir: Path, done: int, total: int, best: ProgramRecord | None, proposer: str, usage) -> None: ...
    def child(self, record: ProgramRecord) -> None: ...
    def note(self, text: str) -> None: ...
    def phase(self, text: str) -> None: ...
    def stop(self) -> None: ...


class Silent:
    """A Progress that shows nothing (the Python API, benchmarks, tests)."""

    def __getattr__(self, name: str):  # every call of the Progress protocol does nothing
        return lambda *args, **kwargs: None


def start_run(config: RunConfig, resume_dir: Path | None, iterations: int | None, proposer: Proposer | None):
    """(config, archive, run directory, task, proposer, usage) of a new or resumed run.

    A new run loads its task, seed laws and proposer before anything is written, so bad
    input, a missing key or an unreachable endpoint leave nothing on disk."""
    if resume_dir is not None:
        config, archive, task = resume_run(resume_dir, iterations)
        run_dir = Path(resume_dir)
        try:
            if proposer is None:
                proposer, usage = make_proposer(config, task, archive.get_meta("usage"))
            else:
                usage = None
            preflight = getattr(proposer, "preflight", None)
            if preflight is not None:  # an endpoint still down: one line now, not an outage wait
                preflight()
        except BaseException:
            if proposer is not None:
                proposer.close()
            archive.close()
            raise
        return config, archive, run_dir, task, proposer, usage
    task = load_task(config.task)
    for path in seed_law_paths(task, config):  # refuse unusable seeds before anything is written
        load_seed_program(path, task)
    usage = None
    if proposer is None:
        proposer, usage = make_proposer(config, task)
    try:
        preflight = getattr(proposer, "preflight", None)
        if preflight is not None:
            preflight()
        config, archive, run_dir = create_run(config, task)
    except BaseException:
        proposer.close()
        raise
    return config, archive, run_dir, task, proposer, usage


def run_evolution(config: RunConfig, resume_dir: Path | None = None, proposer: Proposer | None = None,
                  progress: Progress | None = None, iterations: int | None = None) -> RunSummary:
    """Run (or resume) an evolution and return its summary; the archive holds everything.

    On resume, `iterations` (when given) changes the planned count; the run's other
    settings are its own."""
    started = time.perf_counter()
    config, archive, run_dir, task, proposer, usage = start_run(config, resume_dir, iterations, proposer)
    progress = progress or Silent()
    stored_rng = archive.get_meta("rng_state")
    rng = rng_from_json(stored_rng) if stored_rng else random.Random(config.seed)
    stopped = "finished"
    try:
        scorer = open_scorer(config.scorer)
    except BaseException as exc:  # no scorer (e.g. no Ray node can score): a fresh run leaves nothing behind
        if isinstance(exc, KeyboardInterrupt) and archive.get_meta("seeded", False):
            archive.set_meta("status", "interrupted")  # a resumed run stays resumable, and says so
            exc.run_dir = run_dir
        discard_failed_start(archive)
        proposer.close()
        raise
    scorer.memo = FitMemo()
    try:
        with scorer:
            evolution = Evolution(config, archive, task, proposer, scorer, rng, progress)
            progress.begin(task.name, run_dir, proposer.name)
            if not archive.get_meta("seeded", False):
                try:
                    evolution.add_seeds()
                except RunError:
                    progress.stop()
                    discard_failed_start(archive)  # nothing was evolved: leave nothing behind
                    raise
            start = archive.max_iteration()  # a kill mid-batch keeps the children stored before it
            progress.start(task.name, run_dir, start, config.iterations, archive.best(), proposer.name, usage)
            archive.set_meta("status", "running")
            evolution.usage = usage
            evolution.saved_usage = usage.to_dict() if usage is not None else None  # a resume starts from the saved totals
            start = evolution.score_pending(start)
            executor = ThreadPoolExecutor(max_workers=evolution.batch_size, thread_name_prefix="propose")
            try:
                stopped = evolution.run_batches(executor, start, config.iterations, usage)
            except BaseException:
                executor.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: requests were cancelled, do not wait
                raise
            executor.shutdown(wait=True)
            progress.stop()
            progress.phase("choosing the law from train alone: the finalists re-fitted on the selection folds")
            top = end_of_run(archive, task, scorer, config.top_k_test, run_dir, lambda text: (progress.stop(), progress.phase(text)))  # inside this block: a Ctrl-C there is "interrupted" too
            progress.stop()
        summary = summarize(archive, run_dir, task, stopped, time.perf_counter() - started, top, usage)
        archive.set_meta("finished_at", time.time())
        archive.set_meta("status", "finished")  # the last step: any stop before it leaves the run resumable
    except RunError as exc:
        if not archive.closed:
            progress.stop()
            archive.set_meta("status", f"stopped: {exc}")
            archive.close()
        raise
    except BaseException as exc:
        progress.stop()
        if isinstance(exc, KeyboardInterrupt):
            exc.run_dir = run_dir  # the CLI names it in "resume with ..."
        archive.set_meta("status", "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped: {exc}")
        archive.close()
        raise
    finally:
        proposer.close()
    archive.close()
    return summary


def summarize(archive: Archive, run_dir: Path, task: Task, stopped: str, seconds: float, top: list[ProgramRecord], usage) -> RunSummary:
    programs = archive.programs(order="id")
    return RunSummary(
        run_dir=run_dir,
        task=task.name,
        iterations=int(archive.get_meta("iteration", 0)),
        evaluations=len(programs),
        failures=sum(1 for p in programs if not p.ok),
        stopped_reason=stopped,
        seconds=seconds,
        best=top[0] if top else None,
        top=top,
        usage=usage.to_dict() if usage is not None else {},
    )
