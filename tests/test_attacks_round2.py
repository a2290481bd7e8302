"""Attack suite, round 2 (issue 14): holes judged from OUTSIDE the sandbox.

Every hostile program lives in tests/attack_programs/ (one file per attack). Most first
disable the in-process audit hook: the hook keeps its blocked prefixes in a tuple that is
also the module global `BLOCKED_EVENT_PREFIXES` of the worker's `__main__`
(evolve.sandbox_child); a numpy `__array_interface__` view at `id(tuple)` rewrites its
ob_size to 0, and its `PATH_EVENTS` dict is simply cleared. After that only the kernel
layers stand, and each test checks a guarantee of docs/sandbox.md by its effects: what
the host sees (ipcs, /proc, the score the parent computed, the CLI's output), or, where
the only witness is the candidate itself, what it reports in its exception message (the
one piece of text a candidate sends back; `evolve eval --json` shows it).

Programs are driven through the CLI (`python -m evolve.cli`), or through the thin shim
below where a test needs a Scorer with custom limits or the workers' pids. These tests
FAIL on the code they were written against wherever a hole exists; they pass once it is
fixed. Nothing here harms the machine: memory is bounded (8 x 200 MB), survivors time
themselves out and are SIGKILLed by marker at teardown, IPC objects are removed.
"""

from __future__ import annotations

import csv
import ctypes
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.attacks import pids_named, private_mb, proc_status

try:  # the package is moving to subpackages
    from evolve.scoring.scorer import Scorer  # type: ignore[import-not-found]
except ImportError:
    from evolve.scorer import Scorer
try:
    from evolve.config import ScorerConfig
except ImportError:  # pragma: no cover
    from evolve.scoring.config import ScorerConfig  # type: ignore[import-not-found]
try:
    from evolve.tasks import load_task
except ImportError:  # pragma: no cover
    from evolve.scoring.tasks import load_task  # type: ignore[import-not-found]

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux only"),
    pytest.mark.skipif(os.geteuid() != 0, reason="these attacks target the root plan"),
]

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "attack_programs"
TWO_FOLD_TASK = "data_constrained_scaling_law"  # folds = 2 under [validation]
UID_RANGE = range(61_000, 62_000)
# The audit hook is advisory and can no longer be switched off from inside (test_01). To test the
# kernel layers beneath it, as the attacks below mean to, those runs switch it off from outside.
HOOK_OFF = {"EVOLVE_SANDBOX_AUDIT_HOOK": "0"}

UNHOOK = '''
def unhook():
    """Disable the sandbox's audit hook from inside: empty its blocked-prefix tuple in place
    (numpy view of the tuple object's header at id()), clear its path-event table."""
    for name in ("__main__", "evolve.sandbox_child"):
        module = sys.modules.get(name)
        prefixes = getattr(module, "BLOCKED_EVENT_PREFIXES", None)
        if prefixes is None:
            continue

        class Raw:
            def __init__(self, address, n):
                self.__array_interface__ = {"data": (address, False), "shape": (n,), "typestr": "<i8", "version": 3}

        header = sys.modules["numpy"].asarray(Raw(id(prefixes), 3))  # ob_refcnt, ob_type, ob_size (the real numpy:
        # under formula extraction the program's `np` is a symbolic stand-in)
        header[2] = 0
        getattr(module, "PATH_EVENTS", {}).clear()
'''


# --------------------------------------------------------------------------- helpers


def program(name: str, tmp_path: Path, **subs) -> Path:
    text = (PROGRAMS / f"{name}.py").read_text().replace("__UNHOOK__", UNHOOK)
    for key, value in subs.items():
        text = text.replace(f"__{key}__", str(value))
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path


def cli(*args: str, env: dict | None = None, timeout: float = 90.0) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "evolve", *args], cwd=ROOT, env=full_env,
                          capture_output=True, timeout=timeout)


def eval_json(path: Path, task: str = TWO_FOLD_TASK, split: str = "validation", timeout_s: float = 20.0,
              env: dict | None = None) -> dict:
    done = cli("eval", str(path), "--task", task, "--split", split, "--timeout", str(timeout_s), "--json", env=env)
    assert done.stdout, done.stderr.decode(errors="replace")[-2000:]
    return json.loads(done.stdout)


def reported(evaluation: dict) -> dict | None:
    """What the candidate reported about itself in its exception message, if anything."""
    match = re.search(r"REPORT(\{.*\})", evaluation.get("message", ""))
    return json.loads(match.group(1)) if match else None


def kill_named(marker: str) -> None:
    for pid in pids_named(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def shm_keys() -> set[int]:
    keys = set()
    for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]:
        keys.add(int(line.split()[0]))
    return keys


def ipc_keys(kind: str) -> set[int]:
    return {int(line.split()[0]) for line in Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]}


def remove_ipc(key: int) -> None:
    for flag in ("-M", "-S", "-Q"):
        subprocess.run(["ipcrm", flag, str(key)], capture_output=True)


def fresh_key() -> int:
    return 0x0E000000 + secrets.randbelow(0x00FFFFFF)


@pytest.fixture
def marker():
    name = "evatk" + secrets.token_hex(4)
    yield name
    kill_named(name)


@pytest.fixture
def ipc_key():
    key = fresh_key()
    yield key
    remove_ipc(key)


@pytest.fixture(scope="module")
def scorer():
    saved = os.environ.get("EVOLVE_SANDBOX_AUDIT_HOOK")
    os.environ.update(HOOK_OFF)
    try:
        with Scorer(ScorerConfig(workers=1, timeout_s=20.0)) as s:
            yield s
    finally:
        os.environ.pop("EVOLVE_SANDBOX_AUDIT_HOOK") if saved is None else os.environ.update(EVOLVE_SANDBOX_AUDIT_HOOK=saved)


@pytest.fixture(scope="module")
def two_fold_task():
    return load_task(TWO_FOLD_TASK)


# --------------------------------------------------------------------------- 1. audit hook


def test_01_the_audit_hook_cannot_be_switched_off_from_inside(tmp_path):
    """docs/sandbox.md: the hook refuses sockets, ctypes, signals to others and fork. A
    candidate that rewrites the hook's prefix tuple must still be refused all of them."""
    evaluation = eval_json(program("hook_disable", tmp_path))
    got = reported(evaluation) or {}
    assert got.get("socket") is not True, got
    assert not isinstance(got.get("ctypes_getpid"), int), got
    assert got.get("kill_parent") is not True, got
    assert got.get("fork") is not True, got


# --------------------------------------------------------------------------- 2. shared IPC


def test_02a_rows_stored_in_sysv_shm_by_one_candidate_do_not_reach_a_later_one(tmp_path, ipc_key, two_fold_task, scorer):
    """Candidate A, scored on test (fit on ALL train rows), stores them in SysV shared memory;
    candidate B, scored later on validation, looks its held-out rows up there. B must not
    score like an oracle; the host must not see A's segment after A's evaluation."""
    before = shm_keys()
    writer = program("ipc_store_rows", tmp_path, KEY=ipc_key).read_text()
    reader = program("ipc_read_rows", tmp_path, KEY=ipc_key).read_text()
    scorer.score(writer, two_fold_task, "test")
    left = shm_keys() - before
    reading = scorer.score(reader, two_fold_task, "validation")
    baseline = scorer.score((PROGRAMS / "mean_baseline.py").read_text(), two_fold_task, "validation")
    assert not (reading.ok and reading.metrics.r2 > 0.99), f"B scored validation R² {reading.metrics.r2:.6f} from A's rows"
    assert reading.metrics.r2 <= baseline.metrics.r2 + 1e-6, (reading.metrics.r2, baseline.metrics.r2)
    assert left == set(), f"SysV segments left on the host after the evaluation: {sorted(map(hex, left))}"


def test_02b_fold_one_cannot_pass_its_rows_to_fold_two(tmp_path, ipc_key, two_fold_task, scorer):
    """On a 2-fold task fold 1 fits on fold 2's held-out rows. A program that stores them in
    fold 1 and looks them up in fold 2 must score exactly like the same law without the leak."""
    attack = scorer.score(program("ipc_store_rows", tmp_path, KEY=ipc_key).read_text(), two_fold_task, "validation")
    baseline = scorer.score((PROGRAMS / "mean_baseline.py").read_text(), two_fold_task, "validation")
    assert attack.metrics.r2 <= baseline.metrics.r2 + 1e-6, (
        f"fold leak: R² {attack.metrics.r2:.4f} vs {baseline.metrics.r2:.4f} for the same law without it")


def test_02c_sem_msg_mqueue_and_keyring_do_not_outlive_a_candidate(tmp_path, ipc_key, scorer, two_fold_task):
    """SysV semaphores and message queues, POSIX message queues and the slot uid's user
    keyring: what candidate A leaves, a later candidate B must not find, nor the host."""
    desc = "evatk" + secrets.token_hex(4)
    sem_before, msg_before = ipc_keys("sem"), ipc_keys("msg")
    scorer.score(program("ipc_persist_put", tmp_path, KEY=ipc_key, KEYDESC=desc).read_text(), two_fold_task, "validation")
    left = {"sem": ipc_keys("sem") - sem_before, "msg": ipc_keys("msg") - msg_before}
    found = reported(dataclass_dict(scorer.score(program("ipc_persist_get", tmp_path, KEY=ipc_key, KEYDESC=desc).read_text(),
                                                 two_fold_task, "validation"))) or {}
    leaked = {k: found[k] for k in ("sem", "msg", "mq", "keyring") if found.get(k)}
    assert leaked == {}, f"a later candidate found: {found}"
    assert left == {"sem": set(), "msg": set()}, left


def dataclass_dict(evaluation) -> dict:
    return {"message": evaluation.message, "status": evaluation.status}


# --------------------------------------------------------------------------- 3. outliving


def test_03_no_process_of_the_candidate_outlives_evolve_eval(tmp_path, marker):
    """A double-forked, setsid survivor SIGSTOPs every other process of the slot uid in a
    tight loop, freezing the worker's kill(-1) helper as soon as it has become that uid (a
    race it wins about 2 times in 3). When `evolve eval` has returned, no process of the
    candidate may exist. Up to 8 rounds; the first survivor fails the test."""
    path = program("outlive_stopper", tmp_path, MARK=marker)
    for round_ in range(8):
        started = time.monotonic()
        done = cli("eval", str(path), "--task", TWO_FOLD_TASK, "--timeout", "5", "--json", env=HOOK_OFF, timeout=120)
        survivors = pids_named(marker)
        uids = {p: proc_status(str(p)).get("Uid", "?") for p in survivors}
        assert survivors == [], (f"round {round_}: survivor(s) {uids} (pid: real/effective/saved/fs uid) after "
                                 f"`evolve eval` returned (rc {done.returncode}, {time.monotonic() - started:.1f} s)")


# --------------------------------------------------------------------------- 4. memory


def test_04_memory_is_bounded_per_candidate_not_per_process(tmp_path, marker, two_fold_task, monkeypatch):
    """memory_mb = 256; eight processes of one candidate each touch 200 MB. Measured from
    outside (private memory of every process named by the candidate), the candidate's total
    must stay within memory_mb."""
    text = program("memory_fanout", tmp_path, MARK=marker).read_text()
    peak, stop = [0.0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], sum(private_mb(p) for p in pids_named(marker)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    monkeypatch.setenv("EVOLVE_SANDBOX_AUDIT_HOOK", "0")
    with Scorer(ScorerConfig(workers=1, timeout_s=8.0, memory_mb=256)) as s:
        sampler.start()
        try:
            s.score(text, two_fold_task, "train")
        finally:
            stop.set()
            sampler.join()
    assert peak[0] <= 256 * 1.1, f"the candidate's processes held {peak[0]:.0f} MB at once with memory_mb = 256"


# --------------------------------------------------------------------------- 5. parameter cap


def test_05a_coefficients_hidden_in_a_module_global_count_against_the_cap(tmp_path):
    evaluation = eval_json(program("param_stash", tmp_path))
    cap = 7
    assert not (evaluation["status"] == "ok" and (evaluation["n_params"] or 0) <= cap), (
        f"10 fitted coefficients used, {evaluation['n_params']} counted, status {evaluation['status']}")


def test_05b_nan_and_infinite_parameters_are_a_failure_and_eval_json_is_strict(tmp_path):
    done = cli("eval", str(program("nan_params", tmp_path)), "--task", TWO_FOLD_TASK, "--json")

    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    evaluation = json.loads(done.stdout, parse_constant=refuse)  # NaN / Infinity are not JSON
    assert evaluation["status"] != "ok", evaluation["params"]


# --------------------------------------------------------------------------- 6. parent trusting program text


CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


def test_06a_terminal_escapes_in_a_message_never_reach_the_terminal_raw(tmp_path):
    done = cli("eval", str(program("message_escapes", tmp_path)), "--task", TWO_FOLD_TASK)
    for name, stream in (("stdout", done.stdout), ("stderr", done.stderr)):
        bad = CONTROL.findall(stream)
        assert not bad, f"{name} carries raw control bytes {sorted(set(bad))[:8]}"
    assert not re.search(rb"(^|\r|\n)\s*all\s+R2 1\.000000", done.stdout), "a forged metrics line starts a line"


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "utf-8"}, {"LC_ALL": "C", "PYTHONIOENCODING": "ascii:strict"},
                                 {"LC_ALL": "C"}], ids=["utf8-strict", "ascii-strict", "lc-all-c"])
def test_06b_a_lone_surrogate_in_a_message_does_not_crash_eval(tmp_path, env):
    done = cli("eval", str(program("message_surrogate", tmp_path)), "--task", TWO_FOLD_TASK, env=env)
    assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")[-1500:]
    assert done.returncode == 1, (done.returncode, done.stderr[-500:])  # the program failed; eval did not


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """One run whose seeds are the text/report attacks plus two sound laws."""
    tmp = tmp_path_factory.mktemp("hostile_run")
    names = ["message_escapes", "message_surrogate", "message_csv_formula", "extraction_liar",
             "huge_train_predictions", "formula_killer", "plain_power_law"]
    seeds = []
    for name in names:
        seeds += ["--seed-law", str(program(name, tmp))]
    run_dir = tmp / "run"
    done = cli("run", TWO_FOLD_TASK, "--iterations", "0", "--proposer", "offline", "--run-dir", str(run_dir),
               "--workers", "2", "--islands", "1", "--quiet", *seeds, timeout=300)
    assert (run_dir / "archive.db").exists(), done.stderr.decode(errors="replace")[-2000:]
    listing = json.loads(cli("archive", str(run_dir), "list", "--json").stdout)
    ids = {}
    for row in listing:
        detail = json.loads(cli("archive", str(run_dir), "show", str(row["id"]), "--json", "--no-formula").stdout)
        for name in names:
            if name in (detail.get("explanation") or ""):
                ids.setdefault(name, row["id"])
    yield run_dir, ids
    kill_named("evatkkiller")


def test_06c_archive_list_csv_neutralises_spreadsheet_formulas(hostile_run, tmp_path):
    run_dir, _ = hostile_run
    out = tmp_path / "list.csv"
    cli("archive", str(run_dir), "list", "--csv", str(out))
    with open(out, newline="") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    dangerous = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r") and not re.fullmatch(r"-?[\d.eE+-]+", c)]
    lines = [line for c in cells for line in c.splitlines()[1:] if line[:1] in ("=", "+", "@")]
    assert dangerous == [] and lines == [], (dangerous[:3], lines[:3])


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "utf-8"}, {"LC_ALL": "C", "PYTHONIOENCODING": "ascii:strict"}],
                         ids=["utf8-strict", "ascii-strict"])
def test_06d_a_lone_surrogate_does_not_crash_archive_show(hostile_run, env):
    run_dir, ids = hostile_run
    done = cli("archive", str(run_dir), "show", str(ids["message_surrogate"]), "--no-formula", env=env)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")[-1500:]


def test_06e_escapes_stored_in_the_archive_do_not_reach_the_terminal_through_show(hostile_run):
    run_dir, ids = hostile_run
    done = cli("archive", str(run_dir), "show", str(ids["message_escapes"]), "--no-formula")
    bad = CONTROL.findall(done.stdout)
    assert not bad, f"archive show prints raw control bytes {sorted(set(bad))[:8]}"


def test_06f_a_program_that_detects_extraction_gets_no_checked_formula(hostile_run):
    """The liar scores as an honest mean, but answers 1234.5 under extraction (symbolic input
    or the checker's module name); the checker confirms it against the same lie."""
    run_dir, ids = hostile_run
    shown = json.loads(cli("archive", str(run_dir), "show", str(ids["extraction_liar"]), "--json").stdout)
    formula = shown.get("formula") or {}
    assert not (formula.get("verified") and "1234.5" in " ".join(formula.get("expressions", []))), formula


def test_06g_report_survives_huge_predictions_and_a_formula_killer(hostile_run, tmp_path):
    """`report` must finish; the plain law's formula must still be recovered although the
    formula killer (extracted in the same call) SIGKILLs the formula uid's processes."""
    run_dir, ids = hostile_run
    out = tmp_path / "report.html"
    started = time.monotonic()
    done = cli("report", str(run_dir), "--output", str(out), timeout=120)
    seconds = time.monotonic() - started
    assert done.returncode == 0 and out.exists(), done.stderr.decode(errors="replace")[-2000:]
    assert seconds < 60, seconds
    html = out.read_text()
    row = re.search(rf"<tr><td>#{ids['plain_power_law']}</td>.*?</tr>", html)
    assert row and "<code>—</code>" not in row.group(0), row.group(0) if row else "the plain law is not in the report"


def test_06h_a_huge_formula_does_not_make_report_slow_or_crash(tmp_path):
    """A law that writes a forged 60 KB 'verified' formula line on its extraction pipe, next
    to a plain law: `report` must finish in under 60 s, and must not show the forged formula."""
    run_dir = tmp_path / "run"
    cli("run", TWO_FOLD_TASK, "--iterations", "0", "--proposer", "offline", "--run-dir", str(run_dir), "--quiet",
        "--islands", "1", "--seed-law", str(program("forged_formula_line", tmp_path)),
        "--seed-law", str(program("plain_power_law", tmp_path)), timeout=300)
    started = time.monotonic()
    try:
        done = cli("report", str(run_dir), "--output", str(tmp_path / "r.html"), timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("report did not finish in 90 s")
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-600:]
    assert seconds < 60, seconds
    html = (tmp_path / "r.html").read_text()
    assert "FORGED" not in html, "a formula line written by the program itself is in the report"


@pytest.mark.slow  # ~35 s (sympy traces 2500 terms): only with EVOLVE_SLOW_TESTS=1, to keep the file under 2 min
@pytest.mark.skipif(not os.environ.get("EVOLVE_SLOW_TESTS"), reason="slow: set EVOLVE_SLOW_TESTS=1")
def test_06j_a_2500_term_law_does_not_make_report_slow(tmp_path):
    run_dir = tmp_path / "run"
    cli("run", TWO_FOLD_TASK, "--iterations", "0", "--proposer", "offline", "--run-dir", str(run_dir), "--quiet",
        "--islands", "1", "--seed-law", str(program("long_formula", tmp_path)),
        "--seed-law", str(program("plain_power_law", tmp_path)), timeout=300)
    started = time.monotonic()
    done = cli("report", str(run_dir), "--output", str(tmp_path / "r.html"), timeout=120)
    assert done.returncode == 0 and time.monotonic() - started < 60, done.stderr.decode(errors="replace")[-600:]


def test_06i_report_of_a_run_whose_only_law_is_a_constant_does_not_crash(tmp_path):
    """One seed predicting a constant (R² < 0 on every split), five islands: `report` dies in
    matplotlib ("minvalue must be less than or equal to maxvalue") today."""
    run_dir = tmp_path / "run"
    cli("run", TWO_FOLD_TASK, "--iterations", "0", "--proposer", "offline", "--run-dir", str(run_dir), "--quiet",
        "--seed-law", str(PROGRAMS / "mean_baseline.py"), timeout=300)
    done = cli("report", str(run_dir), "--output", str(tmp_path / "r.html"), timeout=90)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-600:]


# --------------------------------------------------------------------------- 7. one deadline per candidate


def test_07_one_deadline_per_candidate_across_its_folds(tmp_path):
    timeout = 3.0
    evaluation = eval_json(program("fold_sleeper", tmp_path, SLEEP=timeout - 0.6), timeout_s=timeout)
    assert evaluation["status"] == "timeout" or evaluation["seconds"] <= timeout + 0.5, (
        f"status {evaluation['status']} after {evaluation['seconds']:.2f} s with timeout_s = {timeout}")


# --------------------------------------------------------------------------- 8 and more: the kernel probe


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """One evaluation of kernel_probe, with a TCP and an abstract unix listener on the host,
    an API key in the CLI's environment and a key in this session's keyring."""
    tmp = tmp_path_factory.mktemp("probe")
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    tcp.settimeout(0.2)
    abstract_name = "evatk-" + secrets.token_hex(6)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(b"\0" + abstract_name.encode())
    unix.listen(4)
    unix.settimeout(0.2)
    keydesc = "evatk-" + secrets.token_hex(4)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    payload = b"sk-session-keyring-secret"
    key = libc.syscall(248, b"user", keydesc.encode(), payload, len(payload), -3)  # add_key to @s
    path = program("kernel_probe", tmp, TEST_PID=os.getpid(), PORT=tcp.getsockname()[1], ABSTRACT=abstract_name,
                   KEYDESC=keydesc)
    try:
        evaluation = eval_json(path, env={"OPENAI_API_KEY": "sk-secret-round2", **HOOK_OFF})
        contacts = []
        for listener in (tcp, unix):
            try:
                conn, _ = listener.accept()
                contacts.append(conn.recv(16))
            except OSError:
                pass
    finally:
        tcp.close()
        unix.close()
        if key > 0:
            libc.syscall(250, 21, key)  # KEYCTL_INVALIDATE
    got = reported(evaluation)
    assert got is not None and "error" not in got, evaluation["message"][-1500:]  # the probe itself ran
    return got, contacts


def test_08a_pidfd_open_on_host_pids_is_refused(probe):
    got, _ = probe
    for name in ("pidfd_open_1", "pidfd_open_worker", "pidfd_open_test"):
        assert not isinstance(got[name], int) or got[name] < 0, f"{name} gave fd {got[name]}"


def test_08b_host_pids_cannot_be_enumerated_with_kill_0(probe):
    got, _ = probe
    assert got["kill0_sees"] == [] and got["kill0_visible_pids_below_4096"] <= 8, (
        got["kill0_sees"], got["kill0_visible_pids_below_4096"])


def test_09_no_ptrace_of_the_worker(probe):
    assert probe[0]["ptrace_attach_worker"] != 0


def test_10_no_signal_to_the_worker(probe):
    assert probe[0]["sigcont_worker"] is False


def test_11_proc_cannot_be_mounted(probe):
    assert probe[0]["mount_proc"] is False and probe[0]["proc_listing"] == 0


def test_12_rlimits_cannot_be_raised(probe):
    assert probe[0]["raise_nproc"] is not True


def test_13_no_new_user_namespace(probe):
    assert probe[0]["unshare_user"] is False


def test_14_no_io_uring(probe):
    """No seccomp filter: io_uring (a large kernel attack surface, and a path around
    syscall-level filters) is available to candidates."""
    got = probe[0]["io_uring_setup"]
    assert not isinstance(got, int) or got < 0, f"io_uring_setup gave fd {got}"


def test_15_no_userfaultfd(probe):
    """userfaultfd (user-mode) is the classic primitive for winning kernel races."""
    got = probe[0]["userfaultfd"]
    assert not isinstance(got, int) or got < 0, f"userfaultfd gave fd {got}"


def test_16_no_tcp_to_the_host_listener(probe):
    got, contacts = probe
    assert got["tcp_listener"] is not True and b"pwned" not in contacts


def test_17_no_abstract_unix_socket_of_the_host(probe):
    got, contacts = probe
    assert got["abstract_unix"] is not True and b"pwned" not in contacts


def test_18_only_stdio_and_the_result_pipe_are_inherited(probe):
    fds = probe[0]["open_fds"]
    assert [fd for fd, _, _ in fds] == [0, 1, 2, 3], fds
    assert all(mode.startswith("0o2") for fd, mode, _ in fds if fd < 3), fds  # /dev/null, a char device


def test_19_the_hosts_session_keyring_is_out_of_reach(probe):
    """The evaluation child inherits the session keyring of whoever started evolve; a key
    in it must not be readable by the candidate."""
    assert "sk-session" not in str(probe[0]["session_key"]), probe[0]["session_key"]


def test_20_the_api_key_is_not_in_the_candidates_environment(probe):
    assert probe[0]["env_has_key"] is False
