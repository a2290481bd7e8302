"""The sandbox: failure statuses, isolation (network, secrets, files, signals, leftovers),
parallelism, worker replacement, clean shutdown, and the strict result codec.

Isolation tests run a probe program whose predictions are a bitmask of the attacks that
worked, and run the same program in this process as a control, so a probe that could
never succeed cannot pass by accident.
"""

from __future__ import annotations

import gc
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import evolve
from evolve.config import ScorerConfig
from evolve.scoring.in_sandbox import GroupJob, RunReport, run_jobs
from evolve.scoring.frames import (
    FRAME_PREFIX,
    MAGIC,
    Expectation,
    FrameError,
    decode_report,
    encode_report,
    is_memory_failure,
)
from evolve.scoring.pool import Sandbox
from tests.attacks import Listener, boot_ticks, candidate_processes, processes_of_uids

SECRET = "sk-test-secret"
FEATURES, TARGETS = ("x",), ("y",)
IS_ROOT = os.geteuid() == 0

LINEAR = """
import numpy as np

def fit_scaling_law(data_points, loss_values):
    return np.polyfit(data_points[:, 0], loss_values, 1)

def scaling_law_func(data_points, params):
    return np.polyval(params, data_points[:, 0])
"""


def make_jobs() -> list[GroupJob]:
    x = np.arange(1.0, 21.0).reshape(-1, 1)
    return [
        GroupJob("alpha", x[:15], 2.0 * x[:15] + 1.0, x[15:]),
        GroupJob("beta", x[:12], 3.0 - 0.5 * x[:12], x[12:]),
    ]


def fit_program(fit_body: str, predict_body: str = "return x") -> str:
    """A two-function program whose bodies are one (indented) statement each."""
    return f"import numpy as np\n\ndef fit_scaling_law(x, y):\n    {fit_body}\n\ndef scaling_law_func(x, p):\n    {predict_body}\n"


def probe_program(attempts: str) -> str:
    """A program predicting, everywhere, the bitmask `seen` built by `attempts` (indented code)."""
    return f"""
import numpy as np

def attempts():
    seen = 0
{attempts}
    return seen

def fit_scaling_law(data_points, loss_values):
    return [float(attempts())]

def scaling_law_func(data_points, params):
    return np.full(len(data_points), params[0])
"""


def seen_bits(report: RunReport) -> int:
    assert report.status == "ok", report.message
    values = {float(v) for p in report.predictions.values() for v in p.ravel()}
    assert len(values) == 1
    return int(values.pop())


def run(sandbox: Sandbox, program: str, jobs: list[GroupJob] | None = None) -> RunReport:
    return sandbox.run(program, jobs if jobs is not None else make_jobs(), FEATURES, TARGETS)


def in_process(program: str) -> RunReport:
    return run_jobs(program, make_jobs(), FEATURES, TARGETS)






def eventually(predicate, bound: float = 2.0) -> bool:
    """Workers reply first and clean up right after, before their next request."""
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def worker_uids(sandbox: Sandbox) -> set[int]:
    return {w.hello["uid"] for w in sandbox.pool.workers.values() if w.hello.get("uid") is not None}


@pytest.fixture(scope="module")
def secret_in_environment():
    """The key is in our environment before any sandbox starts, and in the initial
    environment of a helper process (what /proc/<pid>/environ shows)."""
    previous = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = SECRET
    helper = subprocess.Popen(["sleep", "120"], env={"OPENAI_API_KEY": SECRET, "PATH": "/usr/bin:/bin"})
    yield helper.pid
    helper.kill()
    helper.wait()
    if previous is None:
        os.environ.pop("OPENAI_API_KEY", None)
    else:
        os.environ["OPENAI_API_KEY"] = previous


@pytest.fixture(scope="module")
def sandbox(secret_in_environment):
    with Sandbox(ScorerConfig(workers=2, timeout_s=2.0, memory_mb=256, max_output_mb=1)) as box:
        yield box


@pytest.fixture(scope="module")
def roomy_sandbox(secret_in_environment):
    """The same bounds with time to spare: filling 256 MB takes 0.2 s here, but once took
    over 2 s on a loaded machine (a timeout, not the memory failure under test)."""
    with Sandbox(ScorerConfig(workers=1, timeout_s=20.0, memory_mb=256, max_output_mb=1)) as box:
        yield box


@pytest.fixture(scope="module")
def listener():
    """A TCP/UDP server on 127.0.0.1 that records every contact."""
    server = Listener()
    yield server.port, server.contacts
    server.close()


def network_program(port: int) -> str:
    return probe_program(f"""
    try:
        import socket
        socket.create_connection(("127.0.0.1", {port}), timeout=0.5).close()
        seen |= 1
    except BaseException:
        pass
    try:
        import urllib.request
        urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=0.5)
        seen |= 2
    except BaseException:
        pass  # the listener counts whether the request reached it
""")


def secret_program(helper_pid: int) -> str:
    return probe_program(f"""
    import os
    try:
        if "{SECRET}" in os.environ.get("OPENAI_API_KEY", "") or any("{SECRET}" in v for v in os.environ.values()):
            seen |= 1
    except BaseException:
        pass
    for bit, pid in ((2, os.getppid()), (4, 1), (8, {helper_pid})):
        try:
            with open(f"/proc/{{pid}}/environ", "rb") as handle:
                if b"{SECRET}" in handle.read():
                    seen |= bit
        except BaseException:
            pass
    try:
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{{entry}}/environ", "rb") as handle:
                    if b"{SECRET}" in handle.read():
                        seen |= 16
                        break
            except BaseException:
                pass
    except BaseException:
        pass
""")


def data_program() -> str:
    test_csv = Path(evolve.__file__).resolve().parent.parent / "tasks" / "sft_scaling_law" / "test.csv"
    return probe_program(f"""
    for bit, path in ((1, {str(test_csv)!r}), (2, "/work/main/tasks/sft_scaling_law/test.csv")):
        try:
            with open(path) as handle:
                if "sft_loss" in handle.read():
                    seen |= bit
        except BaseException:
            pass
    try:
        import evolve
        from pathlib import Path
        path = Path(evolve.__file__).resolve().parent.parent / "tasks" / "sft_scaling_law" / "test.csv"
        if "sft_loss" in path.read_text():
            seen |= 4
    except BaseException:
        pass
""")


SIGNAL_PROGRAM = probe_program("""
    import os, signal
    try:
        os.kill(os.getppid(), signal.SIGKILL)
        seen |= 1
    except BaseException:
        pass
""")

GRANDCHILD_PROGRAM = probe_program("""
    import os, time
    try:
        import _posixsubprocess
        error_read, error_write = os.pipe()
        pid = _posixsubprocess.fork_exec(  # a new session running Python code, unseen by audit hooks
            [b"/nonexistent"], [b"/nonexistent"], True, (), None, None, -1, -1, -1, -1, -1, -1,
            error_read, error_write, True, True, -1, None, None, None, -1, lambda: time.sleep(60), False)
        seen |= 1 if pid > 0 else 0
    except BaseException:
        pass
""")


# --------------------------------------------------------------------------- statuses


def test_layers_name_the_plan_in_effect(sandbox):
    expected = {"clean_env", "setsid", "closed_fds", "rlimits", "no_new_privs", "audit_hook"}
    if IS_ROOT:
        expected |= {"netns", "mntns", "tmpfs", "chroot", "uid"}
        assert sandbox.plan == "root"
    assert expected <= set(sandbox.layers.split(": ", 1)[1].split(","))


def test_ok_program_matches_in_process_bit_for_bit(sandbox):
    report, control = run(sandbox, LINEAR), in_process(LINEAR)
    assert report.status == control.status == "ok"
    assert list(report.predictions) == ["alpha", "beta"]
    for group in control.predictions:
        assert report.predictions[group].tobytes() == control.predictions[group].tobytes()
        assert report.params[group] == control.params[group]


FAILURES = {
    "syntax_error": ("def fit_scaling_law(:\n", ""),
    "missing_function": ("def fit_scaling_law(x, y):\n    return []\n", "scaling_law_func"),
    "exception": (fit_program("return 1 / 0"), "ZeroDivisionError"),
    "nan": (fit_program("return []", "return np.full(len(x), np.nan)"), "NaN"),
    "wrong_shape": (fit_program("return []", "return np.zeros(len(x) + 1)"), "shape"),
}


@pytest.mark.parametrize("status", sorted(FAILURES))
def test_program_failures_keep_their_status(sandbox, status):
    program, fragment = FAILURES[status]
    report = run(sandbox, program)
    assert report.status == status
    assert fragment in report.message
    assert report.status == in_process(program).status


@pytest.mark.parametrize("body", ["import time\n    time.sleep(1000)", "while True:\n        pass"])
def test_a_program_that_never_returns_times_out(sandbox, body):
    program = fit_program(body)
    started = time.monotonic()
    report = run(sandbox, program)
    assert report.status == "timeout"
    assert time.monotonic() - started < 2.0 + 1.5


@pytest.mark.parametrize("body, fragment", [
    ("import os\n    os._exit(3)", "exited with code 3"),
    ("import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
])
def test_a_process_that_dies_is_a_crash(sandbox, body, fragment):
    report = run(sandbox, fit_program(body))
    assert report.status == "crash"
    assert fragment in report.message


@pytest.mark.parametrize("body", [
    "return bytearray(2 * 1024**3)",
    "import numpy as np\n    return np.ones((40000, 40000))",
    "hoard = []\n    while True:\n        hoard.append(bytearray(8 * 1024**2))",
])
def test_a_memory_bomb_is_a_memory_failure(roomy_sandbox, body):
    report = run(roomy_sandbox, fit_program(body))
    assert report.status == "memory", report.message


def test_writing_past_the_output_cap_fails_without_harm(sandbox):
    program = probe_program("""
    try:
        with open("big.bin", "wb") as handle:
            handle.write(b"x" * (2 * 1024**2))
        seen |= 1
    except OSError:
        seen |= 2
""")
    assert seen_bits(run(sandbox, program)) == 2
    assert run(sandbox, LINEAR).status == "ok"


def test_common_fitters_work_under_every_layer(sandbox):
    program = """
import numpy as np
from scipy.optimize import curve_fit, minimize, least_squares, differential_evolution
from evolve.fitting import least_squares_multistart

def law(x, a, b, c):
    return c + a * x ** -b

def fit_scaling_law(data_points, loss_values):
    x = data_points[:, 0]
    p, _ = curve_fit(law, x, loss_values, p0=[1.0, 0.5, 1.0], maxfev=2000)
    loss = lambda q: float(np.mean((law(x, *q) - loss_values) ** 2))
    for method in ("Nelder-Mead", "L-BFGS-B", "COBYLA", "trust-constr"):
        minimize(loss, p, method=method, options={"maxiter": 20})
    least_squares(lambda q: law(x, *q) - loss_values, p, loss="soft_l1")
    differential_evolution(loss, [(0, 5), (0, 2), (-5, 5)], maxiter=3, seed=0, polish=False)
    least_squares_multistart(lambda q: law(x, *q) - loss_values, [(0, 5), (0, 2), (-5, 5)], n_starts=2, seed=0)
    return p

def scaling_law_func(data_points, params):
    return law(data_points[:, 0], *params)
"""
    x = np.arange(1.0, 31.0).reshape(-1, 1)
    jobs = [GroupJob("g", x[:25], 1.0 + 3.0 * x[:25] ** -0.7, x[25:])]
    report = sandbox.run(program, jobs, FEATURES, TARGETS)
    control = run_jobs(program, jobs, FEATURES, TARGETS)
    assert report.status == "ok", report.message
    assert np.array_equal(report.predictions["g"], control.predictions["g"])


# --------------------------------------------------------------------------- isolation


def test_the_network_is_unreachable(sandbox, listener):
    port, accepted = listener
    assert seen_bits(in_process(network_program(port))) & 1  # control: the probe can connect
    before = len(accepted)
    assert seen_bits(run(sandbox, network_program(port))) == 0
    assert len(accepted) == before


def test_secrets_in_the_environment_are_out_of_reach(sandbox, secret_in_environment):
    program = secret_program(secret_in_environment)
    control = seen_bits(in_process(program))
    assert control & 1 and (control & 8 or not IS_ROOT)  # control: the probe finds the key
    assert seen_bits(run(sandbox, program)) == 0


def test_task_files_cannot_be_read(sandbox):
    assert seen_bits(in_process(data_program())) & 5 == 5  # control
    assert seen_bits(run(sandbox, data_program())) == 0


def test_a_program_cannot_kill_its_worker(sandbox):
    pids = sandbox.worker_pids()
    assert seen_bits(run(sandbox, SIGNAL_PROGRAM)) == 0
    assert sandbox.worker_pids() == pids
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)


@pytest.mark.skipif(not IS_ROOT, reason="slot uids exist only in the root plan")
def test_processes_a_program_leaves_behind_are_killed(sandbox):
    started = time.monotonic()
    # RLIMIT_NPROC 1 now refuses the fork itself (root plan); where a plan lets it through, the
    # process it leaves behind must still be killed
    assert seen_bits(run(sandbox, GRANDCHILD_PROGRAM)) == (0 if sandbox.plan == "root" else 1)
    assert time.monotonic() - started < 2.0  # the worker did not wait for the grandchild
    assert eventually(lambda: processes_of_uids(worker_uids(sandbox)) == [])
    assert run(sandbox, LINEAR).status == "ok"


# --------------------------------------------------------------------------- garbage results


FORGED_FRAME = (  # a well-formed ok frame with one group of two rows, for a request of two groups
    "__import__('evolve.scoring.frames').scoring.frames.encode_report(__import__('evolve.scoring.in_sandbox').scoring.in_sandbox.RunReport("
    "'ok', '', {'alpha': __import__('numpy').zeros((2, 1))}, {'alpha': []}))"
)


@pytest.mark.parametrize("payload, fragment", [
    ("b'garbage'", "shorter than a frame header"),
    ("b'X' * 4096", "bad magic"),
    (f"{MAGIC!r} + (2**31).to_bytes(4, 'little') + bytes(8)", "caps"),
    (FORGED_FRAME, "groups returned"),
])
def test_garbage_on_the_result_pipe_is_a_crash(sandbox, payload, fragment):
    """Written by the prediction process, whose answer is a result frame."""
    report = run(sandbox, fit_program("return [1.0]", f"import os\n    os.write(3, {payload})\n    os._exit(0)"))
    assert report.status == "crash"
    assert fragment in report.message


@pytest.mark.parametrize("payload", ["b'garbage'", "b'{\"status\": \"ok\", \"message\": \"\", \"api\": \"fit\", \"params\": []}'",
                                     "b'[' * 100000"])
def test_garbage_from_the_fitting_process_is_a_crash(sandbox, payload):
    report = run(sandbox, fit_program(f"import os\n    os.write(3, {payload})\n    os._exit(0)"))
    assert report.status == "crash" and "fitting process" in report.message


def test_closing_the_result_pipe_early_is_a_crash(sandbox):
    report = run(sandbox, fit_program("import os, time\n    os.close(3)\n    time.sleep(30)"))
    assert report.status == "crash"
    assert "closed its result pipe" in report.message


def test_a_flood_on_the_result_pipe_is_cut_at_the_cap(sandbox):
    report = run(sandbox, fit_program("import os\n    while True:\n        os.write(3, bytes(1 << 16))"))
    assert report.status == "crash"
    assert "more than" in report.message


# --------------------------------------------------------------------------- pool behaviour


def test_evaluations_run_in_parallel(sandbox):
    program = probe_program("    import time\n    time.sleep(1.0)")
    one_group = make_jobs()[:1]
    results: list[RunReport] = []
    threads = [threading.Thread(target=lambda: results.append(run(sandbox, program, one_group))) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert [r.status for r in results] == ["ok", "ok"], [r.message for r in results]
    assert 1.0 <= elapsed < 1.8


def test_a_worker_killed_from_outside_is_replaced(sandbox):
    before = sandbox.worker_pids()
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while sandbox.pool.workers[0].alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    reports = [run(sandbox, LINEAR) for _ in range(3)]  # at least one lands on the dead slot
    assert [r.status for r in reports] == ["ok"] * 3
    after = sandbox.worker_pids()
    assert after[0] != before[0] and after[1] == before[1]


def test_a_template_killed_from_outside_costs_one_evaluation_and_its_worker_is_replaced():
    """Children fork from the worker's template (scoring/template.py). When it is gone the
    worker cannot fork a clean child: that evaluation is a sandbox failure, never a child
    forked from the worker itself, and the pool starts a new worker with a new template."""
    with Sandbox(ScorerConfig(workers=1, timeout_s=10.0)) as box:
        assert run(box, LINEAR).status == "ok"
        worker, template = box.worker_pids()[0], box.template_pids()[0]
        assert template not in (None, worker)
        os.kill(template, signal.SIGKILL)
        assert eventually(lambda: not Path(f"/proc/{template}/stat").exists() or " Z " in Path(f"/proc/{template}/stat").read_text())
        failed = run(box, LINEAR)
        assert failed.status == "crash" and "setup" in failed.message, failed.message
        assert [run(box, LINEAR).status for _ in range(2)] == ["ok", "ok"]
        assert box.worker_pids()[0] != worker and box.template_pids()[0] != template


def test_close_leaves_no_process_and_no_folder(secret_in_environment):
    box = Sandbox(ScorerConfig(workers=2, timeout_s=3.0, memory_mb=256))
    workers, uids, scratch = box.worker_pids() + box.template_pids(), worker_uids(box), box.pool.scratch_root
    sleeper = probe_program("    import time\n    time.sleep(60)")
    in_flight = threading.Thread(target=lambda: run(box, sleeper))
    in_flight.start()
    deadline = time.monotonic() + 5
    while not candidate_processes(box) and time.monotonic() < deadline:
        time.sleep(0.01)
    children = candidate_processes(box)
    assert children  # an evaluation is running while we close
    box.close()
    closed = boot_ticks() + 1  # anything of ours started before close returned
    in_flight.join(timeout=10)
    assert not in_flight.is_alive()
    assert not any(Path(f"/proc/{pid}").exists() for pid in set(workers) | children)
    assert processes_of_uids(uids, started_before=closed) == []
    assert not scratch.exists()
    assert run(box, LINEAR).status == "crash"  # a closed sandbox refuses politely


def test_a_short_close_kills_a_busy_worker_and_its_caller_gets_a_failure_not_a_closed_descriptor():
    """Closing on a Ctrl-C (a short grace) does not wait for an evaluation in flight: its worker
    is killed, and the thread waiting on it reads EOF on pipes still open (closing them under it
    would let another file take their number) and returns a failure; then they are closed."""
    box = Sandbox(ScorerConfig(workers=1, timeout_s=30.0))
    sleeper = probe_program("    import time\n    time.sleep(60)")
    outcome: list = []

    def evaluate():
        try:
            outcome.append(run(box, sleeper))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            outcome.append(exc)

    in_flight = threading.Thread(target=evaluate)
    in_flight.start()
    deadline = time.monotonic() + 10
    while not candidate_processes(box) and time.monotonic() < deadline:
        time.sleep(0.01)
    worker = box.pool.workers[0]
    started = time.monotonic()
    box.close(grace_s=0.5)
    in_flight.join(timeout=10)
    assert time.monotonic() - started < 8.0
    assert len(outcome) == 1 and isinstance(outcome[0], RunReport) and outcome[0].status == "crash", outcome
    assert worker.process.stdout.closed and worker.process.stdin.closed


def test_garbage_collection_stops_the_workers():
    box = Sandbox(ScorerConfig(workers=1, timeout_s=2.0))
    workers, scratch = box.worker_pids(), box.pool.scratch_root
    del box
    gc.collect()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert not scratch.exists()


OWNER_SCRIPT = """
import os, sys
from evolve.config import ScorerConfig
from evolve.scoring.pool import Sandbox
box = Sandbox(ScorerConfig(workers=2, timeout_s=2.0))
print(box.pool.scratch_root, *box.worker_pids(), flush=True)
if sys.argv[1] == "crash":
    os._exit(0)  # no atexit, no finalizer: the workers must notice and tidy up on their own
"""


@pytest.mark.parametrize("how", ["exit", "crash"])
def test_workers_do_not_outlive_their_owner(how):
    out = subprocess.run([sys.executable, "-c", OWNER_SCRIPT, how], capture_output=True, text=True, timeout=120, check=True)
    scratch, *workers = out.stdout.split()
    assert eventually(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), bound=10)
    assert eventually(lambda: not Path(scratch).exists(), bound=5)


def test_an_unknown_plan_is_refused():
    with pytest.raises(ValueError, match="plan"):
        Sandbox(ScorerConfig(workers=1), plan="chroot-only")


# --------------------------------------------------------------------------- fallback plans


@pytest.fixture(scope="module", params=["userns", "basic"])
def fallback(request, secret_in_environment):
    with Sandbox(ScorerConfig(workers=1, timeout_s=2.0, memory_mb=256), plan=request.param) as box:
        yield box


def test_fallback_plans_still_isolate(fallback, listener, secret_in_environment):
    assert fallback.plan in ("userns", "basic")
    assert run(fallback, LINEAR).status == "ok"
    port, accepted = listener
    before = len(accepted)
    assert seen_bits(run(fallback, network_program(port))) == 0
    assert len(accepted) == before
    assert seen_bits(run(fallback, secret_program(secret_in_environment))) == 0
    assert seen_bits(run(fallback, data_program())) == 0
    assert seen_bits(run(fallback, SIGNAL_PROGRAM)) == 0


def test_fallback_plans_kill_what_a_program_leaves_behind(fallback):
    assert seen_bits(run(fallback, GRANDCHILD_PROGRAM)) == 1
    assert eventually(lambda: candidate_processes(fallback) == set())
    timeout = run(fallback, fit_program("import time\n    time.sleep(100)"))
    assert timeout.status == "timeout"


# --------------------------------------------------------------------------- codec


def expectation() -> Expectation:
    return Expectation.from_jobs(make_jobs(), 1)


def ok_report() -> RunReport:
    return run_jobs(LINEAR, make_jobs(), FEATURES, TARGETS)


def test_a_report_survives_the_codec_exactly():
    report = ok_report()
    decoded = decode_report(encode_report(report), expectation())
    assert decoded.status == "ok" and decoded.params == report.params
    for group, values in report.predictions.items():
        assert decoded.predictions[group].tobytes() == values.tobytes()


def test_the_codec_keeps_failures_and_their_messages():
    decoded = decode_report(encode_report(RunReport("exception", "Traceback ...\nValueError: bad")), expectation())
    assert (decoded.status, decoded.message) == ("exception", "Traceback ...\nValueError: bad")


def split_frame(frame: bytes) -> tuple[bytes, bytes]:
    _, header_len, _ = FRAME_PREFIX.unpack_from(frame)
    return frame[FRAME_PREFIX.size : FRAME_PREFIX.size + header_len], frame[FRAME_PREFIX.size + header_len :]


def rebuild(frame: bytes, header=lambda h: h, body=lambda b: b) -> bytes:
    """The frame with its header and body rewritten and its declared lengths kept honest."""
    old_header, old_body = split_frame(frame)
    new_header, new_body = header(old_header), body(old_body)
    return FRAME_PREFIX.pack(MAGIC, len(new_header), len(new_body)) + new_header + new_body


NAN = struct.pack("<d", float("nan"))


@pytest.mark.parametrize("mutate, fragment", [
    (lambda f: f[:-8], "declared"),
    (lambda f: f + b"\0", "declared"),
    (lambda f: b"EVR2" + f[4:], "magic"),
    (lambda f: rebuild(f, header=lambda h: b"{not json"), "not JSON"),
    (lambda f: rebuild(f, header=lambda h: b"[]"), "exactly"),
    (lambda f: rebuild(f, header=lambda h: h.replace(b'"ok"', b'"timeout"')), "not allowed"),
    (lambda f: rebuild(f, header=lambda h: h.replace(b'"alpha"', b'"gamma"')), "expected"),
    (lambda f: rebuild(f, header=lambda h: h.replace(b'"alpha", 5', b'"alpha", 6')), "shape"),
    (lambda f: rebuild(f, body=lambda b: b[:-8]), "too short"),
    (lambda f: rebuild(f, body=lambda b: b + bytes(8)), "trailing"),
    (lambda f: rebuild(f, body=lambda b: NAN + b[8:]), "non-finite"),
])
def test_the_codec_refuses_malformed_frames(mutate, fragment):
    with pytest.raises(FrameError, match=fragment):
        decode_report(mutate(encode_report(ok_report())), expectation())


def test_the_codec_refuses_a_failure_that_carries_data():
    frame = encode_report(RunReport("exception", "boom"))
    with pytest.raises(FrameError, match="no predictions"):
        decode_report(rebuild(frame, body=lambda b: bytes(8)), expectation())


@pytest.mark.parametrize("message, expected", [
    ("Traceback (most recent call last):\n  ...\nMemoryError\n", True),
    ("Traceback ...\nnumpy._core._exceptions._ArrayMemoryError: Unable to allocate 12 GiB\n", True),
    ("Traceback ...\nValueError: not a MemoryError at all\n", False),
])
def test_memory_errors_are_recognised_by_the_last_traceback_line(message, expected):
    assert is_memory_failure(RunReport("exception", message)) is expected


def test_a_candidate_sees_only_the_pids_of_its_workers_namespace(sandbox):
    """Root: each worker serves as pid 1 of a PID namespace of its own, so the candidate's
    parent is pid 1 and no pid it can name is a host pid of the worker or the parent."""
    if "pidns" not in sandbox.layers:
        pytest.skip(f"no PID namespace here: {sandbox.layers}")
    report = run(sandbox, fit_program('import os\n    raise RuntimeError(f"PIDS {os.getpid()} {os.getppid()}")'))
    pid, parent = map(int, report.message.split("PIDS ")[1].split()[:2])
    assert parent == 1, report.message
    assert pid not in sandbox.worker_pids() + [os.getpid()], report.message


@pytest.mark.parametrize("failure", [OSError(11, "Resource temporarily unavailable"), KeyboardInterrupt()])
def test_a_start_that_fails_at_spawning_leaves_no_scratch_behind(monkeypatch, failure):
    """The suite left /tmp/evolve-sandbox-* folders holding slot-0 and an empty worker log: a
    start that failed while spawning its second worker (no process left, Ctrl-C) skipped the
    clean-up that a worker failing to say hello got."""
    from evolve.scoring import pool as pool_module
    from evolve.scoring.pool import WorkerPool

    roots = []
    real_spawn = WorkerPool.spawn

    def spawn(self, slot):
        roots.append(self.scratch_root)
        if slot == 1:
            raise failure
        return real_spawn(self, slot)

    monkeypatch.setattr(WorkerPool, "spawn", spawn)
    expected = pool_module.SandboxError if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected):
        Sandbox(ScorerConfig(workers=2))
    assert roots and not roots[0].exists()
