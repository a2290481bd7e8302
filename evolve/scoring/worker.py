"""The worker side of the sandbox: a warm process that forks one locked-down child per evaluation.

Started by evolve.scoring.pool as `python -m evolve.scoring.worker` with a clean environment.
The worker imports numpy/scipy once, warms up the lazy imports of common fitters, picks
the strongest isolation plan the kernel allows (probing it in a throwaway child), then
forks its template (template.py: the clean process children fork from, since this
worker's heap keeps every request it read), then serves requests: a child from the
template, isolated, runs `run_jobs`; the worker reads its result from a pipe with a byte
cap and a wall-clock deadline, validates it, kills whatever is left.
The worker never runs candidate code itself, so it stays trustworthy; it is a child
subreaper so every process a candidate leaves behind becomes its child and is reaped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path


from evolve.status import Status
from evolve.scoring.cgroups import CandidateGroup, Cgroups, CgroupError, detect, host_pid
from evolve.scoring.pidns import serve_in_own_namespace
from evolve.scoring.outcome import Outcome, classify, collect, reap_children, reap_until_clean
from evolve.scoring.child import FIT_FRAME_CAP, FORMULA_FRAME_CAP, is_texts, run_probe, start_child
from evolve.scoring.template import Template, TemplateGone, send_assignment
from evolve.scoring.in_sandbox import GroupJob, RunReport, checked_fit, with_params
from evolve.scoring.warm import preload, preload_formulas
from evolve.scoring.isolation import (
    allocate_uid,
    ChildContext,
    EXIT_GRACE_S,
    EXIT_SETUP_FAILED,
    IsolationError,
    kill_descendants,
    kill_uid,
    Limits,
    PR_SET_CHILD_SUBREAPER,
    prctl,
    prepare_seccomp,
    PROBE_TIMEOUT_S,
    REAP_BOUND_S,
    wait_bounded,
)
from evolve.scoring.frames import (
    REQUEST_CAP_BYTES,
    Expectation,
    WorkerFailure,
    encode_report,
    is_memory_failure,
    read_message,
    send_message,
)

# --------------------------------------------------------------------------- in the worker


def without_fit_rows(jobs: list[GroupJob]) -> list[GroupJob]:
    """The jobs a predict child gets: the rows to predict, none of the rows the fit saw, so
    prediction cannot find them in memory and refit behind the parameter count."""
    return [dataclasses.replace(job, X_fit=job.X_fit[:0], y_fit=job.y_fit[:0]) for job in jobs]


class Worker:
    """One warm worker: its slot, plan, uid and protocol pipes to the parent."""

    def __init__(self, args: argparse.Namespace, proto_in: int, proto_out: int):
        self.slot = args.slot
        self.scratch = Path(args.scratch)
        self.limits = Limits(args.timeout, args.memory_mb, args.max_output_mb)
        self.proto_in, self.proto_out = proto_in, proto_out
        self.requested_plan = args.plan
        self.plan = "basic"
        self.layers: list[str] = []
        self.uid: int | None = None
        self.uid_lock: int | None = None
        self.dirty = False  # something could not be cleaned up: stop after answering
        self.cgroups: Cgroups | None = None
        self.group_bytes = 0  # one child's tree: memory_mb plus what it may copy of this worker's pages
        self.template: Template | None = None  # what children fork from once requests come (template.py)

    def spare(self) -> int | None:
        """The template's pid as /proc numbers it: the one child that is not a candidate's."""
        return self.template.host_pid if self.template is not None else None

    def start_template(self) -> None:
        """Fork the template: after the warm imports and the plan, before any request."""
        self.template = Template(start_child)

    def context(self, scratch: Path, group: CandidateGroup | None = None) -> ChildContext:
        hook = os.environ.get("EVOLVE_SANDBOX_AUDIT_HOOK", "1") != "0"
        nproc = int(os.environ.get("EVOLVE_SANDBOX_NPROC", "1"))  # > 1 only in the cgroup attack tests
        return ChildContext(self.plan, scratch, self.limits, os.getpid(), self.uid, nproc, hook, group)

    def setup_cgroups(self) -> str:
        """The cgroup layers, found once before any child exists; a note on what is missing."""
        self.cgroups, note = detect()
        self.group_bytes = self.limits.memory_mb * 2**20 + resident_bytes()
        return note

    def new_group(self) -> CandidateGroup | None:
        return None if self.cgroups is None else self.cgroups.create(self.group_bytes)

    def candidate_plans(self) -> list[str]:
        if self.requested_plan != "auto":
            return [self.requested_plan]
        return (["root"] if os.geteuid() == 0 else []) + ["userns", "basic"]

    def choose_plan(self) -> list[str]:
        """The first plan whose probe child succeeds; its errors are kept for the log."""
        errors = []
        for plan in self.candidate_plans():
            try:
                self.prepare_identity(plan)
                self.plan = plan
                self.layers = ["clean_env"] + self.probe_with_cgroups()
                return errors
            except IsolationError as exc:
                errors.append(f"{plan}: {exc}")
        raise IsolationError("no sandbox plan works here: " + "; ".join(errors))

    def prepare_identity(self, plan: str) -> None:
        """The root plan needs a slot uid of its own; other plans must not hold one."""
        if plan == "root" and self.uid is None:
            self.uid, self.uid_lock = allocate_uid()
            kill_uid(self.uid)  # leftovers of a worker that died while holding this uid
            reap_children()
        elif plan != "root" and self.uid_lock is not None:
            os.close(self.uid_lock)
            self.uid, self.uid_lock = None, None

    def probe_with_cgroups(self) -> list[str]:
        """The plan's layers with the cgroup layers; without them if a child cannot join."""
        if self.cgroups is not None:
            try:
                return self.probe(self.cgroups.create(self.group_bytes)) + self.cgroups.layers
            except (IsolationError, CgroupError) as exc:
                print(f"cgroups not usable, falling back to rlimits and the uid sweep: {exc}", file=sys.stderr)
                self.cgroups.close()
                self.cgroups = None
        return self.probe(None)

    def probe(self, group: CandidateGroup | None) -> list[str]:
        scratch = Path(tempfile.mkdtemp(prefix="probe-", dir=self.scratch))
        read_fd, write_fd = os.pipe()
        ctx = self.context(scratch, group)
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            run_probe(ctx, write_fd)
        os.close(write_fd)
        try:
            outcome = collect(pid, read_fd, 65_536, time.monotonic() + PROBE_TIMEOUT_S, None)
        finally:
            os.close(read_fd)
            self.finish(pid, True, None, group)
            if group is not None and not group.remove():
                raise IsolationError("the probe child's cgroup could not be removed")
            shutil.rmtree(scratch, ignore_errors=True)
        try:
            message = json.loads(outcome.data)
        except ValueError:
            raise IsolationError("the probe child reported nothing") from None
        if not message.get("ok"):
            raise IsolationError(str(message.get("error")))
        return list(message["layers"])

    def serve(self) -> None:
        """Answer requests until the parent closes our stdin (or cleanup failed)."""
        while not self.dirty:
            try:
                request = pickle.loads(read_message(self.proto_in, REQUEST_CAP_BYTES))  # trusted direction
            except WorkerFailure:
                return
            if not self.answer(request):
                return

    def answer(self, request: dict) -> bool:
        """Run one request in two fresh children and send its report; False once the parent is gone.

        The first child fits every group and answers with the returned parameters as data
        (params_codec); the worker checks and counts them, then a second child, forked
        afresh from this worker, loads the program again and predicts from those
        parameters alone. Module globals, files or anything else the fit left behind die
        with the first child, so the parameter count covers everything the law uses. Both
        share one deadline. Everything is clean before the next request is read.
        """
        if request.get("kind") == "formula":
            return self.answer_formula(request)
        expected = Expectation.from_jobs(request["jobs"], len(request["targets"]))
        budget = min(self.limits.timeout_s, float(request.get("timeout_s", self.limits.timeout_s)))
        deadline = time.monotonic() + max(0.0, budget)  # one deadline per candidate: the scorer passes what is left
        fit_outcome = self.run_phase(request, "fit", FIT_FRAME_CAP, deadline)
        if fit_outcome is None:
            return False
        failure, api, trees, params, counted = self.read_fit(fit_outcome, request)
        if failure is not None:
            return self.reply(failure)
        predict_request = dict(request, api=api, trees=trees, jobs=without_fit_rows(request["jobs"]))
        replied: list[bool] = []

        def reply_with(outcome: Outcome) -> None:
            replied.append(self.reply(with_params(classify(outcome, expected, self.limits), params, counted)))

        if self.run_phase(predict_request, "predict", expected.frame_cap(), deadline, reply_with) is None:
            return False
        return bool(replied) and replied[0]

    def answer_formula(self, request: dict) -> bool:
        """A formula job: the traced formula from a fresh child, within the job's deadline.
        The parent checks it against the scorer's own predictions of the program
        (evolve.report.formula), so a program that behaves differently under tracing gets
        no checked formula, whatever this child says."""
        job = request["job"]
        deadline = time.monotonic() + max(0.0, min(self.limits.timeout_s, float(request["timeout_s"])))
        n = int(job["n_targets"])
        outcome = self.run_phase({"job": job}, "extract", FORMULA_FRAME_CAP, deadline)
        if outcome is None:
            return False
        if outcome.timed_out or outcome.too_large or outcome.oom_killed or not outcome.data:
            return self.reply_json({"ok": False, "why": "extraction: " + ("timeout" if outcome.timed_out else "no result")})
        try:
            found = json.loads(outcome.data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return self.reply_json({"ok": False, "why": "extraction: invalid result"})
        if not (isinstance(found, dict) and set(found) == {"expressions", "latex"}
                and all(is_texts(found[key], n) for key in ("expressions", "latex"))):
            return self.reply_json({"ok": False, "why": "extraction: no formula"})
        return self.reply_json({"ok": True, "expressions": found["expressions"], "latex": found["latex"]})

    def reply_json(self, message: dict) -> bool:
        return self.send_reply(json.dumps(message).encode())

    def reply(self, report: RunReport) -> bool:
        return self.send_reply(encode_report(report))

    def send_reply(self, payload: bytes) -> bool:
        """Send a reply; False once the parent is gone. A worker that stops after this
        reply (dirty) first closes its request pipe, so the pool's next request fails to
        send and goes to a fresh worker, instead of being taken by one that is exiting."""
        if self.dirty and self.proto_in >= 0:
            os.close(self.proto_in)
            self.proto_in = -1
        try:
            send_message(self.proto_out, payload)
            return True
        except WorkerFailure:
            return False

    def read_fit(self, outcome: Outcome, request: dict) -> tuple[RunReport | None, str, list, dict, dict]:
        """The fit child's answer, checked by trusted code (its failure, or what to predict with)."""
        if outcome.timed_out or outcome.too_large or outcome.abandoned or outcome.oom_killed or not outcome.data:
            fake = Expectation((), 0)
            return classify(outcome, fake, self.limits), "", [], {}, {}
        try:
            fit = json.loads(outcome.data.decode("utf-8", "surrogatepass"))
            canonical = json.dumps(fit).encode("utf-8", "surrogatepass") == outcome.data
        except (UnicodeDecodeError, ValueError, RecursionError):
            return RunReport(Status.CRASH, "the fitting process sent an invalid result"), "", [], {}, {}
        if not canonical:  # spacing or digits beyond the protocol's own encoding could carry bytes past the count
            return RunReport(Status.CRASH, "the fitting process sent a result not in the sandbox's encoding"), "", [], {}, {}
        failure, api, trees, params, counted = checked_fit(fit, request["jobs"])
        if failure is not None and is_memory_failure(failure):
            failure = RunReport(Status.MEMORY, failure.message)
        return failure, api, trees, params, counted

    def run_phase(self, request: dict, phase: str, cap: int, deadline: float, before_cleanup=None) -> Outcome | None:
        """Fork one child for `phase`, collect its answer, then kill and reap everything it
        left; None once the parent is gone. `before_cleanup` sees the outcome first (so the
        last reply goes out before the cleanup, off the caller's clock)."""
        try:
            group = self.new_group()
        except CgroupError as exc:
            print(f"no cgroup for a child: {exc}", file=sys.stderr)
            return self.setup_failed(before_cleanup)
        scratch = self.scratch_for_run()
        read_fd, write_fd = os.pipe()
        pid, outcome, reaped = None, Outcome(timed_out=True), False
        try:
            pid = self.fork_child(write_fd, (self.context(scratch, group), request, phase), deadline)
            if pid is None:
                return self.setup_failed(before_cleanup)
            outcome = collect(pid, read_fd, cap, deadline, self.proto_in)
            if outcome.parent_gone:
                return None
            if not outcome.data:  # its exit status is the only clue: wait briefly for a real exit
                grace = 0.0 if outcome.timed_out else min(EXIT_GRACE_S, max(0.0, deadline - time.monotonic()))
                exited = wait_bounded(pid, grace) if grace > 0 else None
                outcome.abandoned = exited is None and not outcome.timed_out
                outcome.wait_status, reaped = self.finish(pid, outcome.timed_out, exited, group), True
            outcome.oom_killed = group is not None and group.oom_kills() > 0
            if before_cleanup is not None:
                before_cleanup(outcome)
            return outcome
        finally:
            os.close(read_fd)
            if pid is not None and not reaped:
                self.finish(pid, outcome.timed_out or outcome.parent_gone, None, group)
            if group is not None and not group.remove():
                self.dirty = True
            self.release_scratch(scratch)

    @staticmethod
    def setup_failed(before_cleanup) -> Outcome:
        outcome = Outcome(wait_status=EXIT_SETUP_FAILED << 8)  # reported as a sandbox setup failure
        if before_cleanup is not None:
            before_cleanup(outcome)
        return outcome

    def fork_child(self, result_fd: int, assignment: tuple, deadline: float) -> int | None:
        """A child forked from the template, never from this worker (whose heap holds every
        request it read), holding the result pipe; its (context, request, phase) is sent
        over a pipe of its own. A child that dies before reading shows in `collect`. None
        when the template is gone: nothing clean to fork from, so this worker stops after
        answering and the pool starts a new one."""
        request_read, request_write = os.pipe()
        try:
            pid = self.template.spawn(request_read, result_fd)
        except TemplateGone as exc:
            print(f"sandbox template: {exc}", file=sys.stderr)
            self.dirty = True
            os.close(request_write)
            return None
        except BaseException:
            os.close(request_write)
            raise
        finally:
            os.close(request_read)
            os.close(result_fd)
        try:
            send_assignment(request_write, assignment, deadline)
        finally:
            os.close(request_write)
        return pid

    def scratch_for_run(self) -> Path:
        """Namespaced plans mount a fresh tmpfs on one fixed, always empty mount point;
        the basic plan gets a new folder per evaluation."""
        if self.plan in ("root", "userns"):
            mount_point = self.scratch / "mnt"
            mount_point.mkdir(mode=0o700, exist_ok=True)
            return mount_point
        return Path(tempfile.mkdtemp(prefix="run-", dir=self.scratch))

    def release_scratch(self, scratch: Path) -> None:
        if self.plan not in ("root", "userns"):
            shutil.rmtree(scratch, ignore_errors=True)

    def finish(self, pid: int, timed_out: bool, status: int | None = None,
               group: CandidateGroup | None = None) -> int | None:
        """Kill the child's cgroup (every process it started, at once) and its process group,
        reap it, then make sure nothing it started survives.

        `status` is given when the child was already reaped; its pid may then belong to
        someone else, so only the sweeps below (cgroup, slot uid or descendants) run."""
        if group is not None:
            group.kill()
        if status is None:
            for kill in (os.killpg, os.kill):  # the group exists only once the child called setsid
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            status = wait_bounded(pid, REAP_BOUND_S)
        if self.uid is not None and timed_out and (group is None or group.kill_file is None):
            kill_uid(self.uid)  # with cgroup.kill nothing of the child can be left to sweep
        for attempt in range(5):
            if reap_until_clean(0.05 if attempt == 0 else 0.5, self.spare()):
                return status
            if group is not None:
                group.kill()
            self.kill_leftovers()
        self.dirty = not reap_until_clean(REAP_BOUND_S, self.spare())
        return status

    def kill_leftovers(self) -> None:
        if self.uid is not None:
            kill_uid(self.uid)
        else:
            kill_descendants(self.spare())

    def close(self, parent_pid: int | None) -> None:
        """Kill leftovers and remove this slot's folder. If our parent died without closing
        the sandbox, also remove our log and, as the last worker out, the scratch root."""
        if self.template is not None:
            self.template.close()
            self.template = None
        if self.uid is not None:
            kill_uid(self.uid)
        reap_until_clean(REAP_BOUND_S)
        if self.cgroups is not None:
            self.cgroups.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
        if parent_pid is not None and os.getppid() != parent_pid:
            tidy_after_parent(self.scratch.parent, self.slot)


def tidy_after_parent(root: Path, slot: int) -> None:
    """The pool died without closing: remove our log and, as the last worker out, the root."""
    (root / f"worker-{slot}.log").unlink(missing_ok=True)
    try:
        root.rmdir()
    except OSError:
        pass  # another worker is still tidying up; the last one removes it


# --------------------------------------------------------------------------- start-up


def resident_bytes() -> int:
    """This worker's resident memory: the most a forked child can copy-on-write of it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def claim_protocol_fds() -> tuple[int, int]:
    """Keep stdin/stdout for the protocol on private fds, so nothing printed can corrupt it."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # stray prints go to the worker's log
    return proto_in, proto_out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="evolve sandbox worker (started by evolve.scoring.pool)")
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--plan", choices=("auto", "root", "userns", "basic"), default="auto")
    parser.add_argument("--scratch", required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--max-output-mb", type=int, required=True)
    parser.add_argument("--kind", choices=("score", "formula"), default="score")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parent_pid: int | None = os.getppid()
    in_pid_namespace = serve_in_own_namespace(lambda: tidy_after_parent(Path(args.scratch).parent, args.slot))
    if in_pid_namespace:
        parent_pid = None  # outside our namespace: the process left behind tidies up if the pool dies
    proto_in, proto_out = claim_protocol_fds()
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    try:
        prepare_seccomp()  # once per worker: every child only writes its pid into the shared program
    except IsolationError as exc:
        print(f"seccomp filter not built: {exc}", file=sys.stderr)
    missing = preload()
    if args.kind == "formula":
        preload_formulas()
    worker = Worker(args, proto_in, proto_out)
    note = worker.setup_cgroups()
    if note:
        print(f"cgroups: {note}; the rlimits and the uid sweep stand in for them", file=sys.stderr)
    try:
        for error in worker.choose_plan():
            print(f"plan not usable: {error}", file=sys.stderr)
    except IsolationError as exc:
        print(f"sandbox worker cannot start: {exc}", file=sys.stderr)
        return 2
    if in_pid_namespace:
        worker.layers.append("pidns")
    try:
        worker.start_template()
    except (TemplateGone, OSError) as exc:
        print(f"sandbox worker cannot start: no template process ({exc})", file=sys.stderr)
        return 2
    if note and worker.cgroups is None:
        note += "; memory is bounded per process (RLIMIT_AS; RLIMIT_NPROC 1 makes that per candidate), the kill is by process group and slot uid"
    hello = {"pid": host_pid(), "template": worker.template.host_pid, "plan": worker.plan, "layers": ",".join(worker.layers),
             "uid": worker.uid, "missing": missing, "cgroups": note if worker.cgroups is None else ""}
    send_message(proto_out, json.dumps(hello).encode())
    try:
        worker.serve()
    finally:
        worker.close(parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
