"""What a forked sandbox child runs: apply the isolation layers, run one phase of a program
(fit, predict from the fitted parameters alone, or trace its formula), write the answer to
fd 3 and `_exit`. Also the probe child that checks a plan's layers really hold. The worker
(worker.py) forks these and trusts nothing they write."""

from __future__ import annotations

import ctypes
import json
import os
import socket
from typing import NoReturn

from evolve.scoring import params_codec
from evolve.scoring.frames import encode_report
from evolve.scoring.in_sandbox import fit_phase, predict_phase
from evolve.scoring.template import read_assignment
from evolve.scoring.isolation import (
    EXIT_CRASH,
    EXIT_MEMORY,
    EXIT_SETUP_FAILED,
    RESULT_FD,
    SYSCALLS,
    ChildContext,
    IsolationError,
    isolate,
    isolate_after_descriptors,
    libc,
    step_audit_hook,
    step_descriptors,
    step_setsid,
)

FIT_FRAME_CAP = params_codec.ENCODED_CAP_BYTES + 65_536


def start_child(request_fd: int, result_fd: int) -> NoReturn:
    """A child just forked from the template (template.py): read the assignment the worker
    sends, then run it. Its memory holds the template's (no request) and its own request."""
    try:
        ctx, request, phase = read_assignment(request_fd)
    except BaseException:  # noqa: BLE001 - the worker is gone or gave up: nothing to run
        os._exit(EXIT_SETUP_FAILED)
    run_child(ctx, result_fd, request, phase)


def run_child(ctx: ChildContext, result_fd: int, request: dict, phase: str) -> NoReturn:
    """Isolate, run one phase of the program (fit, or predict from the fitted parameters
    alone: the worker sends a predict child no fit rows), write its answer to fd 3, exit
    without cleanup handlers."""
    code = EXIT_SETUP_FAILED
    try:
        isolate(ctx, result_fd)
        step_audit_hook(ctx)
        code = EXIT_CRASH
        if phase == "fit":
            answer = json.dumps(fit_phase(request["program"], request["jobs"])).encode("utf-8", "surrogatepass")
        elif phase == "extract":
            answer = json.dumps(extracted(request["job"])).encode("utf-8", "surrogatepass")
        else:
            answer = encode_report(predict_phase(request["program"], request["jobs"], request["features"],
                                                 request["targets"], request["api"], request["trees"]))
        write_all(RESULT_FD, answer)
        os.close(RESULT_FD)  # EOF now, not after the kernel has torn down our address space
        code = 0
    except MemoryError:
        code = EXIT_MEMORY
    except BaseException:  # noqa: BLE001, S110 - the exit code tells the worker; nothing may escape a fork
        pass
    os._exit(code)


MAX_FORMULA_CHARS = 20_000  # one expression or its LaTeX; real ones (symbolic.MAX_OPS) are far shorter
FORMULA_FRAME_CAP = 1 << 20


def extracted(job: dict) -> dict:
    """The traced expressions and their LaTeX (no check: the worker checks against predictions)."""
    from evolve.symbolic import FormulaJob, latex_of, trace_expressions

    formula_job = FormulaJob.from_dict(job)
    try:
        expressions = trace_expressions(formula_job.code, formula_job.features, formula_job.n_targets,
                                        int(formula_job.n_params))
        texts = [str(e) for e in expressions]
        latex = [latex_of(e, formula_job.features) for e in expressions]
    except BaseException:  # noqa: BLE001 - a program may raise anything: no formula then
        return {"expressions": None, "latex": None}
    return {"expressions": texts, "latex": latex}


def run_probe(ctx: ChildContext, result_fd: int) -> NoReturn:
    """Trusted code only: apply the plan, check its kernel layers really hold, report as JSON."""
    try:
        layers = step_setsid(ctx) + step_descriptors(ctx, result_fd)
    except BaseException:  # noqa: BLE001 - fd 3 may still be the worker's own pipe: say nothing
        os._exit(EXIT_SETUP_FAILED)
    try:
        layers += isolate_after_descriptors(ctx, verify_kernel_layers)
        verify_seccomp(ctx)
        hooked = step_audit_hook(ctx)
        layers += hooked
        if hooked:
            verify_audit_hook()
        message = {"ok": True, "layers": layers}
    except BaseException as exc:  # noqa: BLE001 - any failure means the plan is unusable
        message = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        write_all(RESULT_FD, json.dumps(message).encode())
    except OSError:
        pass
    os._exit(0)


def verify_kernel_layers(ctx: ChildContext) -> None:
    if ctx.plan in ("root", "userns"):
        interfaces = [name for _, name in socket.if_nameindex()]
        if interfaces != ["lo"]:
            raise IsolationError(f"network namespace still shows {interfaces}")
        if os.listdir("/"):
            raise IsolationError("chroot root is not empty")
    if ctx.plan == "root" and (os.getuid() != ctx.uid or os.geteuid() != ctx.uid):
        raise IsolationError("still running as the worker's uid")


def verify_seccomp(ctx: ChildContext) -> None:
    """The filter is on where the machine has one: keyctl, a denied call, must answer EPERM."""
    if "keyctl" not in SYSCALLS:
        return
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(SYSCALLS["keyctl"]), ctypes.c_long(0), ctypes.c_long(-3), ctypes.c_long(0)) != -1 \
            or ctypes.get_errno() != 1:
        raise IsolationError("the seccomp filter did not refuse keyctl")


def verify_audit_hook() -> None:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    except PermissionError:
        return
    raise IsolationError("the audit hook did not block socket creation")


def is_texts(value: object, count: int) -> bool:
    return (isinstance(value, list) and len(value) == count
            and all(isinstance(v, str) and len(v) <= MAX_FORMULA_CHARS for v in value))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
