"""The law a program computes, as a math expression (sympy), for `show` and the report.

A program's `scaling_law_func` is called on sympy symbols instead of numbers: one symbol
per feature in a (1, n_features) object array, and parameters p0..pk. numpy (and math)
are replaced inside the program by a module that maps elementwise functions to sympy
ones and builds object arrays, so the usual numpy code traces into an expression. The
expression is then checked against the program run on real numbers with its fitted
parameters; one that disagrees is dropped. Any failure means "no formula" (None).

This executes candidate code, so `formulas_isolated` runs the extraction in a child process
under the same isolation as scoring (evolve.scoring.worker, docs/sandbox.md): a clean
environment, and after warming up, rlimits, network and mount namespaces, a chroot into
an empty tmpfs, the sandbox's slot uid, no_new_privs and the audit hook. Results come
back as JSON lines on a pipe, read with a deadline and a size cap and checked strictly.
`extract_formula` itself is what runs inside that process.
"""

from __future__ import annotations

import argparse
import builtins
import io
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from evolve.scoring.pool import worker_environment
from evolve.scoring.worker import (
    EXIT_SETUP_FAILED,
    PR_SET_PDEATHSIG,
    RESULT_FD,
    ChildContext,
    IsolationError,
    Worker,
    allocate_uid,
    isolate_after_descriptors,
    kill_uid,
    parse_args,
    preload,
    prctl,
    step_audit_hook,
    step_descriptors,
    write_all,
)

MAX_OPS = 400  # larger expressions are unreadable; report "no formula" instead
CHECK_RTOL = 1e-4  # the expression sums terms in another order; ill-conditioned fits lose digits
CHECK_ROWS = 8
SECONDS_PER_PROGRAM = 20.0
STARTUP_SECONDS = 60.0  # a cold child imports numpy, scipy and sympy, warms them up and probes the plan
MEMORY_MB = 2048  # beyond what the warm child already maps
SCRATCH_MB = 16  # the child's tmpfs (and largest file)
MAX_LINE_BYTES = 256 * 1024  # one result line; MAX_OPS keeps real ones far below
READY = "ready"


@dataclass(frozen=True)
class Formula:
    """One expression per target, as sympy text and LaTeX, over features and p0..pk."""

    expressions: tuple[str, ...]
    latex: tuple[str, ...]
    verified: bool  # agreed with the program on real rows and fitted parameters

    def to_dict(self) -> dict:
        return {"expressions": list(self.expressions), "latex": list(self.latex), "verified": self.verified}

    @classmethod
    def from_dict(cls, d: dict) -> Formula:
        return cls(tuple(d["expressions"]), tuple(d["latex"]), bool(d["verified"]))


@dataclass(frozen=True)
class FormulaJob:
    """What the extraction needs: the code, the feature names and one group's data to check on."""

    code: str
    features: tuple[str, ...]
    n_targets: int
    n_params: int | None
    check_params: list[float] | None = None  # one group's fitted parameters
    check_rows: list[list[float]] | None = None  # a few feature rows of that group

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "features": list(self.features),
            "n_targets": self.n_targets,
            "n_params": self.n_params,
            "check_params": self.check_params,
            "check_rows": self.check_rows,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FormulaJob:
        return cls(d["code"], tuple(d["features"]), int(d["n_targets"]), d["n_params"], d.get("check_params"), d.get("check_rows"))


# ---------------------------------------------------------------- symbolic numpy


def _sympy():
    import sympy

    return sympy


class SymbolicArray(np.ndarray):
    """An object array of sympy expressions whose astype() keeps the symbols.

    Programs often write `X.astype(float)` or `np.asarray(X, dtype=float)`; converting a
    symbol to float would fail, so float dtypes are ignored for these arrays.
    """

    def astype(self, dtype=None, *args, **kwargs):
        return self.copy()

    # numpy compares object arrays into bool arrays, which asks a sympy relation for its
    # truth value; keep the relations symbolic instead (for np.where and friends)
    def __gt__(self, other):
        return elementwise(lambda a, b: a > b)(self, other)

    def __ge__(self, other):
        return elementwise(lambda a, b: a >= b)(self, other)

    def __lt__(self, other):
        return elementwise(lambda a, b: a < b)(self, other)

    def __le__(self, other):
        return elementwise(lambda a, b: a <= b)(self, other)


def as_symbolic(value) -> np.ndarray:
    return np.asarray(value, dtype=object).view(SymbolicArray)


def elementwise(function):
    """Apply a sympy function to every element (scalars stay scalars)."""

    def apply(*args, **kwargs):
        kwargs.pop("out", None)
        kwargs.pop("dtype", None)
        kwargs.pop("where", None)
        if not any(isinstance(a, (np.ndarray, list, tuple)) for a in args):
            return function(*args, **kwargs)
        vectorised = np.vectorize(lambda *xs: function(*xs, **kwargs), otypes=[object])
        return as_symbolic(vectorised(*[np.asarray(a, dtype=object) if isinstance(a, (list, tuple)) else a for a in args]))

    return apply


def object_dtype(function):
    """A numpy array function called with dtype=object whatever dtype the program asked for."""

    def call(*args, **kwargs):
        if "dtype" in kwargs:
            kwargs["dtype"] = object
        if function in (np.asarray, np.array, np.asanyarray) and len(args) > 1:
            args = args[:1]
        result = function(*args, **kwargs)
        return as_symbolic(result) if isinstance(result, np.ndarray) and result.dtype == object else result

    return call


def clip(x, low=None, high=None, **kwargs):
    sympy = _sympy()

    def one(v, lo, hi):
        if lo is not None:
            v = sympy.Max(v, lo)
        return sympy.Min(v, hi) if hi is not None else v

    return elementwise(one)(x, low, high)


def where(condition, a, b):
    sympy = _sympy()
    return elementwise(lambda c, x, y: sympy.Piecewise((x, c), (y, True)))(condition, a, b)


def sympy_functions() -> dict:
    """numpy / math names mapped to sympy, for the functions a scaling law uses."""
    sympy = _sympy()
    return {
        "exp": sympy.exp,
        "exp2": lambda x: 2**x,
        "expm1": lambda x: sympy.exp(x) - 1,
        "log": sympy.log,
        "log10": lambda x: sympy.log(x, 10),
        "log2": lambda x: sympy.log(x, 2),
        "log1p": lambda x: sympy.log(1 + x),
        "sqrt": sympy.sqrt,
        "cbrt": lambda x: sympy.cbrt(x),
        "power": lambda x, y: x**y,
        "float_power": lambda x, y: x**y,
        "pow": lambda x, y: x**y,
        "square": lambda x: x**2,
        "reciprocal": lambda x: 1 / x,
        "abs": sympy.Abs,
        "absolute": sympy.Abs,
        "fabs": sympy.Abs,
        "sign": sympy.sign,
        "sin": sympy.sin,
        "cos": sympy.cos,
        "tan": sympy.tan,
        "sinh": sympy.sinh,
        "cosh": sympy.cosh,
        "tanh": sympy.tanh,
        "arctan": sympy.atan,
        "atan": sympy.atan,
        "arcsin": sympy.asin,
        "arccos": sympy.acos,
        "arctanh": sympy.atanh,
        "maximum": sympy.Max,
        "minimum": sympy.Min,
        "fmax": sympy.Max,
        "fmin": sympy.Min,
        "logaddexp": lambda x, y: sympy.log(sympy.exp(x) + sympy.exp(y)),
        "add": lambda x, y: x + y,
        "subtract": lambda x, y: x - y,
        "multiply": lambda x, y: x * y,
        "divide": lambda x, y: x / y,
        "true_divide": lambda x, y: x / y,
        "negative": lambda x: -x,
        "nan_to_num": lambda x, *a, **k: x,
        "expit": lambda x: 1 / (1 + sympy.exp(-x)),
    }


ARRAY_FUNCTIONS = (
    "asarray", "array", "asanyarray", "atleast_1d", "atleast_2d", "column_stack", "stack", "hstack",
    "vstack", "concatenate", "reshape", "ravel", "squeeze", "transpose", "expand_dims", "sum", "prod",
    "mean", "dot", "matmul", "zeros_like", "ones_like", "full_like", "broadcast_to", "repeat", "tile",
    "outer", "cumsum", "take", "einsum", "zeros", "ones", "full", "empty",
)  # fmt: skip


def symbolic_numpy() -> types.ModuleType:
    """A stand-in for `numpy` inside the traced program."""
    module = types.ModuleType("numpy")
    module.__dict__.update({name: getattr(np, name) for name in dir(np) if not name.startswith("__")})
    for name in ARRAY_FUNCTIONS:
        module.__dict__[name] = object_dtype(getattr(np, name))
    for name, function in sympy_functions().items():
        module.__dict__[name] = elementwise(function)
    module.clip = clip
    module.where = where
    module.pi = _sympy().pi
    module.e = _sympy().E
    return module


def symbolic_math() -> types.ModuleType:
    module = types.ModuleType("math")
    module.__dict__.update({name: getattr(math, name) for name in dir(math) if not name.startswith("__")})
    for name, function in sympy_functions().items():
        if hasattr(math, name):
            module.__dict__[name] = function
    module.pi = _sympy().pi
    module.e = _sympy().E
    return module


def symbolic_special() -> types.ModuleType:
    module = types.ModuleType("scipy.special")
    module.expit = elementwise(sympy_functions()["expit"])
    return module


def traced_builtins(replacements: dict[str, types.ModuleType]) -> dict:
    """Builtins whose import hands the program the symbolic numpy and math."""
    real_import = builtins.__import__

    def import_hook(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name in replacements:
            return replacements[name]
        return real_import(name, globals, locals, fromlist, level)

    table = dict(vars(builtins))
    table["__import__"] = import_hook
    return table


# ---------------------------------------------------------------- extraction


def feature_symbols(features: tuple[str, ...]) -> list:
    sympy = _sympy()
    return [sympy.Symbol(name, positive=True) for name in features]


def param_symbols(n: int) -> list:
    sympy = _sympy()
    return [sympy.Symbol(f"p{i}", real=True) for i in range(n)]


def trace_expressions(code: str, features: tuple[str, ...], n_targets: int, n_params: int) -> list:
    """Call scaling_law_func on symbols; raises on anything that does not trace."""
    sympy = _sympy()
    replacements = {"numpy": symbolic_numpy(), "math": symbolic_math(), "scipy.special": symbolic_special()}
    namespace = {"__name__": "traced_program", "__builtins__": traced_builtins(replacements)}
    exec(compile(code, "<program>", "exec"), namespace)  # noqa: S102 - runs inside the isolated child
    x = as_symbolic(np.array([feature_symbols(features)], dtype=object))
    p = as_symbolic(np.array(param_symbols(n_params), dtype=object))
    out = namespace["scaling_law_func"](x, p)
    values = np.asarray(out, dtype=object).reshape(-1)
    if len(values) != n_targets:
        raise ValueError(f"traced {len(values)} outputs for {n_targets} targets")
    expressions = [tidy(sympy.sympify(v)) for v in values]
    allowed = set(feature_symbols(features)) | set(param_symbols(n_params))
    for expression in expressions:
        if not isinstance(expression, sympy.Expr) or expression.has(sympy.nan, sympy.zoo):
            raise ValueError("not a finite expression")
        if not expression.free_symbols <= allowed:
            raise ValueError("unknown symbols in the expression")
        if sympy.count_ops(expression) > MAX_OPS:
            raise ValueError("expression too large to read")
    return expressions


def real_predictions(code: str, rows: np.ndarray, params: np.ndarray, n_targets: int) -> np.ndarray:
    namespace = {"__name__": "checked_program"}
    exec(compile(code, "<program>", "exec"), namespace)  # noqa: S102 - runs inside the isolated child
    out = np.asarray(namespace["scaling_law_func"](rows.copy(), params.copy()), dtype=float)
    return out.reshape(len(rows), n_targets)


def formula_predictions(expressions: list, features: tuple[str, ...], n_params: int, rows: np.ndarray, params: np.ndarray) -> np.ndarray:
    sympy = _sympy()
    symbols = feature_symbols(features) + param_symbols(n_params)
    columns = []
    for expression in expressions:
        function = sympy.lambdify(symbols, expression, modules="numpy")
        values = function(*[rows[:, j] for j in range(rows.shape[1])], *params)
        columns.append(np.broadcast_to(np.asarray(values, dtype=float), (len(rows),)))
    return np.stack(columns, axis=1)


def agrees(expected: np.ndarray, got: np.ndarray) -> bool:
    both_finite = np.isfinite(expected) & np.isfinite(got)
    if not np.array_equal(np.isfinite(expected), np.isfinite(got)):
        return False
    return bool(np.allclose(expected[both_finite], got[both_finite], rtol=CHECK_RTOL, atol=1e-12))


def tidy(expression):
    """Whole-number floats as integers, so `1.0*p0` reads `p0` and `10.0**x` reads `10**x`."""
    sympy = _sympy()
    whole = {f: sympy.Integer(int(f)) for f in expression.atoms(sympy.Float) if float(f).is_integer() and abs(f) < 1e6}
    return expression.xreplace(whole) if whole else expression


def latex_of(expression, features: tuple[str, ...]) -> str:
    sympy = _sympy()
    names = {symbol: r"\mathrm{" + name.replace("_", r"\_") + "}" for symbol, name in zip(feature_symbols(features), features)}
    return sympy.latex(expression, symbol_names=names)


def extract_formula(job: FormulaJob) -> Formula | None:
    """The program's law as expressions, checked on real rows; None when it cannot be recovered."""
    if job.n_params is None:
        return None
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            expressions = trace_expressions(job.code, job.features, job.n_targets, job.n_params)
            verified = False
            if job.check_params is not None and job.check_rows:
                rows = np.asarray(job.check_rows, dtype=float)
                params = np.asarray(job.check_params, dtype=float)
                expected = real_predictions(job.code, rows, params, job.n_targets)
                if not agrees(expected, formula_predictions(expressions, job.features, job.n_params, rows, params)):
                    return None
                verified = True
            return Formula(
                tuple(str(e) for e in expressions),
                tuple(latex_of(e, job.features) for e in expressions),
                verified,
            )
    except BaseException:  # noqa: BLE001 - a program may raise anything; no formula then
        return None


def job_for(record, task) -> FormulaJob | None:
    """The extraction job of a stored program, checked on its first group with numeric parameters."""
    from evolve.report.export import params_source

    if not record.ok or not record.code.strip():
        return None
    _, evaluation = params_source(record)
    for group, params in sorted(evaluation.params.items()):
        rows = task.train.X[task.train.groups == group][:CHECK_ROWS]
        if params is not None and len(rows):
            return FormulaJob(record.code, task.features, len(task.targets), len(params), list(params), rows.tolist())
    return None


def formulas_for(records: list, task) -> dict[int, Formula | None]:
    """Formulas of stored programs by id, extracted once per distinct code in isolation."""
    jobs = {r.id: job_for(r, task) for r in records}
    distinct = list({job.code: job for job in jobs.values() if job is not None}.values())
    found = dict(zip((j.code for j in distinct), formulas_isolated(distinct))) if distinct else {}
    return {rid: (found.get(job.code) if job is not None else None) for rid, job in jobs.items()}


# ---------------------------------------------------------------- isolation


def formulas_isolated(jobs: list[FormulaJob], seconds_per_program: float = SECONDS_PER_PROGRAM, plan: str = "auto") -> list[Formula | None]:
    """Formulas for many programs, extracted in sandboxed child processes.

    A program that hangs or kills its process gets None; the child is restarted after it
    for the remaining programs, so one bad program costs only its own formula. A child
    that never gets ready (sandbox setup failed) means no formula for any program.
    """
    results: list[Formula | None] = []
    remaining = list(jobs)
    with slot_uid() as slot:
        while remaining:
            done = run_child(remaining, seconds_per_program, plan, slot)
            if done is None:
                return results + [None] * len(remaining)
            results.extend(done)
            remaining = remaining[len(done):]
            if remaining:  # the next program stopped the child: give it no formula and go on
                results.append(None)
                remaining = remaining[1:]
    return results


@contextmanager
def slot_uid() -> Iterator[tuple[int, int] | None]:
    """As root, an unprivileged uid held (flock) for all our children, as a sandbox worker holds
    one: the children run as it, so killing that uid afterwards kills all they started."""
    if os.geteuid() != 0:
        yield None
        return
    try:
        uid, lock = allocate_uid()
    except IsolationError:
        yield None  # the child then falls back to a plan without a uid of its own
        return
    try:
        kill_uid(uid)  # leftovers of a holder that died
        yield uid, lock
    finally:
        os.close(lock)


def run_child(jobs: list[FormulaJob], seconds_per_program: float, plan: str, slot: tuple[int, int] | None) -> list[Formula | None] | None:
    """Start a sandboxed child on `jobs` and read its results; None when it never got ready.

    The child is killed when no new result arrives within `seconds_per_program` (plus the
    start-up time before the ready line), so a hanging program stops only itself. Then
    everything running under the slot uid is killed and the scratch folder removed.
    """
    root = Path(tempfile.mkdtemp(prefix="evolve-formula-"))
    (root / "slot").mkdir(mode=0o700)
    uid, lock = slot if slot is not None else (None, None)
    timeout = STARTUP_SECONDS + seconds_per_program * len(jobs)
    argv = [sys.executable, "-m", "evolve.scoring.formula_jobs", "--slot", "0", "--plan", plan, "--scratch", str(root / "slot"),
            "--timeout", repr(timeout), "--memory-mb", str(MEMORY_MB), "--max-output-mb", str(SCRATCH_MB)]
    payload = json.dumps({"jobs": [j.to_dict() for j in jobs], "uid": uid, "uid_lock_fd": lock}).encode()
    try:
        process = subprocess.Popen(  # no preexec_fn (unsafe with threads): the child locks itself down
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=root,
            env=worker_environment(root), start_new_session=True, close_fds=True, pass_fds=(lock,) if lock is not None else (),
        )
        try:
            send_payload(process, payload)
            lines = read_lines(process.stdout.fileno(), len(jobs) + 1, seconds_per_program)
        finally:
            kill_group(process)
            process.stdout.close()
            if uid is not None:
                kill_uid(uid)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if not lines or lines[0] != READY.encode():
        return None
    return [parse_result(line, job.n_targets) for line, job in zip(lines[1:], jobs)]


def send_payload(process: subprocess.Popen, payload: bytes) -> None:
    """The jobs on the child's stdin; it reads them all before anything else."""
    try:
        process.stdin.write(payload)
    except OSError:
        pass  # it died at start-up: read_lines sees EOF
    finally:
        try:
            process.stdin.close()
        except OSError:
            pass


def read_lines(fd: int, count: int, seconds_per_program: float) -> list[bytes]:
    """Up to `count` newline-terminated lines from the child's pipe, without blocking past
    the deadline (start-up for the first, then `seconds_per_program` per line) and without
    buffering more than MAX_LINE_BYTES of an unfinished line."""
    os.set_blocking(fd, False)
    lines: list[bytes] = []
    pending = b""
    deadline = time.monotonic() + STARTUP_SECONDS
    while len(lines) < count and len(pending) <= MAX_LINE_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            continue
        if not chunk:
            break
        *complete, pending = (pending + chunk).split(b"\n")
        if complete:
            lines += complete
            deadline = time.monotonic() + seconds_per_program
    return lines[:count]


def parse_result(line: bytes, n_targets: int) -> Formula | None:
    """One result line, checked strictly: it comes from the process that ran candidate code."""
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        item = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(item, dict) or set(item) != {"expressions", "latex", "verified"}:
        return None
    texts = (item["expressions"], item["latex"])
    if not isinstance(item["verified"], bool) or not all(is_texts(t, n_targets) for t in texts):
        return None
    return Formula.from_dict(item)


def is_texts(value: object, count: int) -> bool:
    return isinstance(value, list) and len(value) == count and all(isinstance(v, str) for v in value)


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    process.wait()


# ---------------------------------------------------------------- in the child

WARM_UP_PROGRAM = """import math
import numpy as np

def scaling_law_func(data_points, params):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    a, b, c, d = params
    n = np.maximum(X[:, 0], 1.0) / 1e9
    core = a * np.power(n, -b) + np.exp(-c) * np.log(n + 1) + np.sqrt(np.abs(d)) * np.tanh(X[:, 1])
    return np.where(X[:, 1] > 2, core, np.clip(core, 0, None)) + math.log10(2) * np.minimum(d, 1)
"""


def warm_up_extraction() -> None:
    """Extract one built-in formula: sympy imports much lazily (functions, printers, lambdify),
    and those imports would fail inside the empty chroot."""
    rows = [[1e9, 1.0], [2e9, 4.0]]
    if extract_formula(FormulaJob(WARM_UP_PROGRAM, ("n", "k"), 1, 4, [0.5, 0.2, 1.0, 0.3], rows)) is None:
        print("formula warm-up failed", file=sys.stderr)


def lock_down(args: argparse.Namespace, request: dict, parent_pid: int) -> ChildContext:
    """Pick the plan as a sandbox worker does (probing it), with the parent's slot uid, then
    apply its layers to this process: results go to fd 3, every other fd is closed. The
    audit hook (which refuses fork) is left to each program's own fork."""
    worker = Worker(args, -1, -1)
    worker.uid, worker.uid_lock = request["uid"], request["uid_lock_fd"]
    worker.choose_plan()
    ctx = ChildContext(worker.plan, worker.scratch_for_run(), worker.limits, parent_pid, worker.uid)
    step_descriptors(ctx, os.dup(1))
    isolate_after_descriptors(ctx)
    return ctx


def extract_in_fork(item: dict, ctx: ChildContext) -> bytes:
    """One program's result line, from a fork of this child that runs only that program.

    The fork cannot reach the result pipe (it closes it before any candidate code runs) and
    answers on a pipe of its own, of which only the first line is read: a program can spoil
    its own formula, never forge the ones of the programs after it.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            os.close(RESULT_FD)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # not inherited across fork: die with this child
            step_audit_hook(ctx)
            formula = extract_formula(FormulaJob.from_dict(item))
            write_all(write_fd, (json.dumps(formula.to_dict() if formula else None) + "\n").encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    line = first_line(read_fd)
    os.close(read_fd)
    os.waitpid(pid, 0)
    return line + b"\n" if line else b"null\n"


def first_line(fd: int) -> bytes:
    """The first line on a pipe, read until its newline or end of file; a longer one than any
    real result is cut short (the parent then refuses it)."""
    data = b""
    while b"\n" not in data and len(data) <= MAX_LINE_BYTES:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0][: MAX_LINE_BYTES + 1]


def child_main() -> NoReturn:
    """Entry point of the child: read jobs, warm up, lock down, write one JSON line per job."""
    parent_pid = os.getppid()
    args = parse_args(sys.argv[1:])
    request = json.loads(sys.stdin.buffer.read())
    preload()  # what scoring preloads, so programs import the same modules here
    warm_up_extraction()
    try:
        ctx = lock_down(args, request, parent_pid)
    except (IsolationError, OSError, ValueError):
        os._exit(EXIT_SETUP_FAILED)
    write_all(RESULT_FD, (READY + "\n").encode())
    for item in request["jobs"]:
        write_all(RESULT_FD, extract_in_fork(item, ctx))
    os._exit(0)  # no exit handlers: nothing outside the chroot is reachable anyway


if __name__ == "__main__":
    child_main()
