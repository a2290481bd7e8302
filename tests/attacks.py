"""Hostile candidate programs and the harness that scores them, shared by the hardening tests
(tests/test_attacks.py) and the reliability benchmark (bench/reliability.py).

Every attack is a real fit-API program. It encodes what it achieved in its predictions:
`attempt()` returns 1.0 when the attack worked (it read the secret, connected, wrote the
file...) and 0.0 when it was refused, and the program predicts that value everywhere.
So a result is one of: a failure status (the sandbox stopped it), or "ok" with every
prediction 0.0 (it ran and got nothing). Placeholders such as {PORT} are filled from an
`AttackContext` the harness builds: a listener on 127.0.0.1, a secret in this process's
environment and in the initial environment of a decoy process, canary files outside the
scratch folder, a real run database, and this process's pid (with a SIGUSR1 handler
that records any signal a program manages to send).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evolve.metrics import compute_metrics
from evolve.scoring.scorer import Evaluation, Scorer, build_jobs
from evolve.tasks import Task

SECRET = "sk-hardening-secret-7f3a91"
ATTACK_TASK = "parallel_scaling_law"

PROGRAM_TEMPLATE = '''"""Attack: {name}."""
# EVOLVE-BLOCK-START
import numpy as np


def attempt():
{body}


def fit_scaling_law(data_points, loss_values):
    return [float(attempt())]


def scaling_law_func(data_points, params):
    return np.full(len(data_points), float(params[0]))
# EVOLVE-BLOCK-END
'''

GOOD_PROGRAM = '''"""A sound power law for parallel_scaling_law: L = E + A * (N * P**k) ** -alpha (4 parameters)."""
# EVOLVE-BLOCK-START
import numpy as np
from scipy.optimize import least_squares


def scaling_law_func(data_points, params):
    X = np.asarray(data_points, float)
    n, p = X[:, 0] / 1e9, X[:, 1]
    e, a, alpha, k = params
    return e + a * (n * p ** k) ** (-alpha)


def fit_scaling_law(data_points, loss_values):
    y = np.asarray(loss_values, float)
    residuals = lambda q: scaling_law_func(data_points, q) - y
    fit = least_squares(residuals, [y.min() * 0.8, 0.5, 0.3, 0.3],
                        bounds=([0, 0, 0, 0], [10, 10, 3, 3]), max_nfev=2000)
    return fit.x
# EVOLVE-BLOCK-END
'''


@dataclass(frozen=True)
class Attack:
    """One hostile program.

    expect: statuses that count as stopped; "ok" means it ran and must have got nothing
    (every prediction 0.0). control: the same program run in this process must succeed
    (predict 1.0), proving the probe could detect a success. body is the indented body
    of attempt(); program, when set, is the whole program instead of the template.
    """

    name: str
    what: str
    expect: tuple[str, ...]
    body: str = ""
    program: str = ""
    control: bool = False
    checks: tuple[str, ...] = ()  # extra outside checks: listener, files, signals, decoy, workers

    def source(self, ctx: "AttackContext") -> str:
        text = self.program or PROGRAM_TEMPLATE.replace("{body}", self.body).replace("{name}", self.name)
        for key, value in ctx.placeholders().items():
            text = text.replace("{" + key + "}", str(value))
        return text


def tried(*lines: str) -> str:
    """attempt() body: `got` starts at 0.0; each line may set it; exceptions are swallowed."""
    out = ["    got = 0.0"]
    for line in lines:
        out.append("    try:")
        out.extend("        " + part for part in line.split("\n"))
        out.append("    except BaseException:")
        out.append("        pass")
    out.append("    return got")
    return "\n".join(out)


ATTACKS: tuple[Attack, ...] = (
    Attack("network_socket", "TCP connect to a listener on 127.0.0.1", ("ok", "exception"), tried(
        "import socket\ns = socket.create_connection(('127.0.0.1', {PORT}), timeout=2)\ns.sendall(b'pwned')\ngot = 1.0"),
        control=True, checks=("listener",)),
    Attack("network_urllib", "HTTP GET with urllib to 127.0.0.1", ("ok", "exception"), tried(
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{PORT}/', timeout=2).read()\ngot = 1.0"),
        control=True, checks=("listener",)),
    Attack("network_lowlevel", "the _socket C module directly, and a UDP datagram", ("ok", "exception"), tried(
        "import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\ns.settimeout(2)\ns.connect(('127.0.0.1', {PORT}))\ngot = 1.0",
        "import socket\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nu.sendto(b'x', ('127.0.0.1', {PORT}))\ngot = 1.0"),
        control=True, checks=("listener",)),
    Attack("network_dns", "resolve example.com", ("ok", "exception"), tried(
        "import socket\nsocket.getaddrinfo('example.com', 80)\ngot = 1.0")),
    Attack("secret_environment", "the API key from os.environ", ("ok", "exception"), tried(
        "import os\nif any('{SECRET}' in v for v in os.environ.values()): got = 1.0",
        "import os\nif os.environ.get('OPENAI_API_KEY'): got = 1.0"),
        control=True),
    Attack("secret_proc_environ", "the API key from /proc/<parent>/environ and a sibling's", ("ok", "exception"), tried(
        *[f"if b'{{SECRET}}' in open('/proc/{pid}/environ', 'rb').read(): got = 1.0"
          for pid in ("{PARENT_PID}", "{DECOY_PID}", "1")],
        "import os\nif b'{SECRET}' in open(f'/proc/{os.getppid()}/environ', 'rb').read(): got = 1.0"),
        control=True),
    Attack("read_test_labels", "the task's test.csv by absolute path, with open, numpy and os.open", ("ok", "exception"), tried(
        "if 'loss' in open('{TEST_CSV}').read(): got = 1.0",
        "if np.loadtxt('{TEST_CSV}', delimiter=',', skiprows=1, usecols=(1,)).size: got = 1.0",
        "import os\nfd = os.open('{TEST_CSV}', os.O_RDONLY)\nif os.read(fd, 100): got = 1.0",
        "import pathlib\nif pathlib.Path('{TEST_CSV}').read_bytes(): got = 1.0"),
        control=True),
    Attack("read_archive_db", "a run database, as a file and through sqlite3", ("ok", "exception"), tried(
        "if open('{ARCHIVE_DB}', 'rb').read(16).startswith(b'SQLite format'): got = 1.0",
        "import sqlite3\nif sqlite3.connect('{ARCHIVE_DB}').execute('select count(*) from programs').fetchone()[0]: got = 1.0"),
        control=True),
    Attack("read_outside_scratch", "a secret file outside the scratch folder, by relative traversal too", ("ok", "exception"), tried(
        "if '{SECRET}' in open('{SECRET_FILE}').read(): got = 1.0",
        "import os\nrel = os.path.relpath('{SECRET_FILE}', os.getcwd())\nif '{SECRET}' in open(rel).read(): got = 1.0",
        "import os\nif os.listdir('{OUTSIDE_DIR}'): got = 1.0"),
        control=True),
    Attack("chroot_escape", "the classic mkdir/chroot/chdir('..') escape, then read the test labels", ("ok", "exception"), tried(
        "import os\nos.mkdir('jail')\nos.chroot('jail')\nfor _ in range(64): os.chdir('..')\nos.chroot('.')\nif 'loss' in open('{TEST_CSV}').read(): got = 1.0")),
    Attack("write_outside_scratch", "create files outside the scratch folder (absolute, /tmp, relative)", ("ok", "exception"), tried(
        "open('{OUTSIDE_DIR}/pwned.txt', 'w').write('pwned')\ngot = 1.0",
        "open('/tmp/evolve-pwned-{MARKER}', 'w').write('pwned')\ngot = 1.0",
        "import os\nrel = os.path.relpath('{OUTSIDE_DIR}/pwned-relative.txt', os.getcwd())\nopen(rel, 'w').write('pwned')\ngot = 1.0",
        "np.save('{OUTSIDE_DIR}/pwned.npy', np.zeros(3))\ngot = 1.0"),
        checks=("files",)),
    Attack("fork_bomb", "os.fork in a loop, every child forking too", ("ok", "exception", "crash", "timeout", "memory"), tried(
        "import os\nfor _ in range(100000):\n    os.fork()\n    got = 1.0")),
    Attack("spawn_processes", "os.system, subprocess, posix_spawn, multiprocessing", ("ok", "exception"), tried(
        "import os\nif os.system('true') == 0: got = 1.0",
        "import subprocess\nsubprocess.run(['true'], check=True)\ngot = 1.0",
        "import os\nos.posix_spawn('/bin/true', ['true'], {})\ngot = 1.0",
        "import multiprocessing\nq = multiprocessing.Process(target=print)\nq.start()\nq.join()\ngot = 1.0")),
    Attack("memory_bomb_array", "one 8 TB numpy array", ("memory",), "    return float(np.ones(1 << 40).sum())"),
    Attack("memory_bomb_growing", "allocate and touch 64 MB blocks until something gives", ("memory",),
           "    blocks = []\n    while True:\n        blocks.append(bytearray(64 << 20))\n    return 0.0"),
    Attack("infinite_loop_python", "while True: pass", ("timeout",), "    while True:\n        pass"),
    Attack("infinite_loop_numpy", "an eigen-decomposition of a large matrix, over and over, in C", ("timeout",),
           "    a = np.random.default_rng(0).random((1500, 1500))\n    while True:\n        np.linalg.eigvals(a)"),
    Attack("sleep_past_timeout", "time.sleep far past the timeout", ("timeout",), "    import time\n    time.sleep(3600)\n    return 1.0"),
    Attack("flood_output", "hundreds of MB on stdout and stderr, with print and os.write", ("ok",),
           "    import os, sys\n    line = '{MARKER}' * 10000\n    for _ in range(500):\n        print(line)\n"
           "        sys.stderr.write(line)\n        os.write(1, line.encode())\n        os.write(2, line.encode())\n    return 0.0"),
    Attack("huge_predictions", "predictions of 50 million rows", ("wrong_shape", "memory"), program='''"""Attack: huge predictions."""
import numpy as np


def fit_scaling_law(data_points, loss_values):
    return [0.0]


def scaling_law_func(data_points, params):
    return np.ones(50_000_000)
'''),
    Attack("forged_result", "a forged result frame on the result pipe, then os._exit(0)", ("crash",), program='''"""Attack: forged result."""
import os
import numpy as np


def fit_scaling_law(data_points, loss_values):
    from evolve.scoring.in_sandbox import RunReport
    from evolve.scoring.frames import encode_report
    fake = RunReport("ok", "", {"pile": np.ones((99, 1))}, {"pile": [1.0]})
    os.write(3, encode_report(fake) + b"trailing garbage" * 1000)
    os._exit(0)


def scaling_law_func(data_points, params):
    return np.zeros(len(data_points))
'''),
    Attack("malicious_object", "predictions as an object whose __array__ signals the parent and whose "
           "__reduce__ would write a file if ever unpickled", ("ok", "exception", "wrong_shape"), program='''"""Attack: malicious object."""
import os
import numpy as np


class Evil:
    def __init__(self, n):
        self.n = n

    def __reduce__(self):
        return (open, ("{OUTSIDE_DIR}/unpickled.txt", "w"))

    def __array__(self, dtype=None, copy=None):
        got = 0.0
        try:
            os.kill({PARENT_PID}, 10)
            got = 1.0
        except BaseException:
            pass
        return np.full(self.n, got)

    def __len__(self):
        return self.n


def fit_scaling_law(data_points, loss_values):
    return Evil(3)


def scaling_law_func(data_points, params):
    return Evil(len(data_points))
''', checks=("files", "signals")),
    Attack("signal_parent", "SIGUSR1 to the scoring process and its group, SIGKILL to the worker", ("ok", "exception"), tried(
        "import os\nos.kill({PARENT_PID}, 10)\ngot = 1.0",
        "import os\nos.killpg(os.getpgid({PARENT_PID}), 10)\ngot = 1.0",
        "import os\nos.kill(os.getppid(), 9)\ngot = 1.0"),
        checks=("signals", "workers")),
    Attack("kill_siblings", "SIGKILL to a sibling process and to the other sandbox worker; probe everyone with kill(-1, 0)",
           ("ok", "exception"), tried(
        "import os\nos.kill({DECOY_PID}, 9)\ngot = 1.0",
        "import os\nfor pid in [{WORKER_PIDS}]:\n    os.kill(pid, 9)\n    got = 1.0",
        "import os\nos.kill(-1, 0)\ngot = 1.0"),
        checks=("decoy", "workers")),
    Attack("huge_exception", "raise an exception with a 10 MB message", ("exception", "memory"),
           "    raise ValueError('{MARKER}' * 400_000)"),
    Attack("os_exit", "os._exit(0) instead of returning", ("crash",), "    import os\n    os._exit(0)"),
    Attack("sys_exit", "raise SystemExit", ("exception",), "    import sys\n    sys.exit(0)"),
    Attack("abort", "os.abort (SIGABRT)", ("crash",), "    import os\n    os.abort()"),
    Attack("monkeypatch_numpy", "replace numpy and evolve.metrics functions to fake a perfect score", ("ok",), tried(
        "import numpy, builtins\nnumpy.mean = lambda *a, **k: 0.0\nnumpy.var = lambda *a, **k: 1e300\nnumpy.isfinite = lambda *a, **k: True\n"
        "numpy.abs = lambda x, *a, **k: x * 0",
        "import evolve.metrics as m\nm.compute_metrics = lambda *a, **k: None\nm.FAILURE_R2 = 1.0",
        "import sys\nsys.modules['numpy'].linalg.lstsq = None"),
        checks=("numpy",)),
)

# A real leak of the parameter cap: returned as a dict (or more than 10 000 floats) the fitted
# parameters are not counted, so the cap is not enforced. Kept apart: it is an expected bug.
CAP_EVASION = Attack(
    "cap_evasion", "fit returns its 6 parameters as a dict on a task capped at 4", ("over_cap",), program='''"""Attack: cap evasion."""
import numpy as np


def fit_scaling_law(data_points, loss_values):
    y = np.asarray(loss_values, float)
    X = np.asarray(data_points, float)
    design = np.c_[np.ones(len(y)), np.log(X[:, 0]), np.log(X[:, 1]), np.log(X[:, 0]) ** 2,
                   np.log(X[:, 1]) ** 2, np.log(X[:, 0]) * np.log(X[:, 1])]
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    return {f"c{i}": float(c) for i, c in enumerate(coef)}


def scaling_law_func(data_points, params):
    X = np.asarray(data_points, float)
    c = [params[f"c{i}"] for i in range(6)]
    a, b = np.log(X[:, 0]), np.log(X[:, 1])
    return c[0] + c[1] * a + c[2] * b + c[3] * a ** 2 + c[4] * b ** 2 + c[5] * a * b
''')

ATTACKS_BY_NAME = {a.name: a for a in ATTACKS}


# --------------------------------------------------------------------------- the context


class Listener:
    """A TCP + UDP listener on 127.0.0.1 that answers HTTP and records every contact."""

    def __init__(self):
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self.contacts: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._serve_tcp, daemon=True), threading.Thread(target=self._serve_udp, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _serve_tcp(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                continue
            self.contacts.append("tcp")
            try:
                conn.settimeout(1)
                try:
                    conn.recv(4096)
                except OSError:
                    pass
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except OSError:
                pass
            finally:
                conn.close()

    def _serve_udp(self):
        while not self.stopping.is_set():
            try:
                self.udp.recvfrom(4096)
                self.contacts.append("udp")
            except OSError:
                continue

    def close(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=2)
        self.tcp.close()
        self.udp.close()


class AttackContext:
    """Everything an attack aims at, set up before the Scorer starts (so the secret is in
    this process's environment when the workers are spawned) and torn down by close()."""

    def __init__(self, task: Task, root: Path):
        self.task = task
        self.root = Path(root)
        self.outside = self.root / "outside"
        self.outside.mkdir(parents=True, exist_ok=True)
        self.secret_file = self.outside / "secret.txt"
        self.secret_file.write_text(SECRET)
        self.marker = f"hardening{os.getpid()}x{int(time.time() * 1000) % 10**8}"
        self.archive_db = self.root / "victim" / "archive.db"
        make_victim_archive(self.archive_db)
        self.listener = Listener()
        self.previous_key = os.environ.get("OPENAI_API_KEY")
        os.environ["OPENAI_API_KEY"] = SECRET
        self.decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                      env={"OPENAI_API_KEY": SECRET, "PATH": "/usr/bin:/bin"})
        self.signals: list[int] = []
        self.previous_handler = signal.signal(signal.SIGUSR1, lambda number, frame: self.signals.append(number))
        self.worker_pids: list[int] = []
        self.numpy_before = numpy_fingerprint()

    def placeholders(self) -> dict[str, object]:
        return {
            "PORT": self.listener.port, "SECRET": SECRET, "SECRET_FILE": self.secret_file,
            "OUTSIDE_DIR": self.outside, "TEST_CSV": (self.task.path / "test.csv").resolve(),
            "ARCHIVE_DB": self.archive_db, "PARENT_PID": os.getpid(), "DECOY_PID": self.decoy.pid,
            "MARKER": self.marker, "WORKER_PIDS": ", ".join(map(str, self.worker_pids)) or "0",
        }

    def outside_files(self) -> dict[str, bytes]:
        files = {str(p): p.read_bytes() for p in sorted(self.outside.rglob("*")) if p.is_file()}
        files.update({str(p): b"" for p in Path("/tmp").glob(f"evolve-pwned-{self.marker}*")})
        return files

    def close(self):
        self.listener.close()
        self.decoy.kill()
        self.decoy.wait()
        signal.signal(signal.SIGUSR1, self.previous_handler)
        if self.previous_key is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = self.previous_key
        for stray in Path("/tmp").glob(f"evolve-pwned-{self.marker}*"):
            stray.unlink()


def make_victim_archive(path: Path) -> None:
    """A real run database with one program, as a target to read."""
    from evolve.store.database import Archive
    from evolve.config import ArchiveConfig
    from evolve.metrics import failed_metrics
    from evolve.records import ProgramRecord

    path.parent.mkdir(parents=True, exist_ok=True)
    with Archive.create(path, ArchiveConfig(islands=1), 4) as archive:
        archive.add(ProgramRecord(code=GOOD_PROGRAM, validation=Evaluation("exception", "validation", failed_metrics(1), "x")))


def numpy_fingerprint() -> dict[str, object]:
    """Identities of the numpy and evolve.metrics functions an attack might patch, and a result."""
    import evolve.metrics as metrics

    names = ("mean", "var", "isfinite", "abs", "asarray", "sum")
    ids = {name: id(getattr(np, name)) for name in names}
    ids["compute_metrics"] = id(metrics.compute_metrics)
    ids["lstsq"] = id(np.linalg.lstsq)
    ids["value"] = float(np.mean(np.arange(10.0)))
    return ids


# --------------------------------------------------------------------------- the harness


def processes_of_uids(uids: set[int], started_before: int | None = None) -> list[int]:
    """Processes running as these uids; with `started_before` (`boot_ticks()`), only those
    started earlier: a slot uid a closed sandbox released can be taken at once by another
    sandbox on the machine (a parallel test, a user's run), whose processes are not ours."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            started = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[19])
        except (OSError, IndexError, ValueError):
            continue
        if started_before is not None and started >= started_before:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) in uids:
                pids.append(int(entry))
    return pids


def boot_ticks() -> int:
    """Now, in the unit of /proc/PID/stat's start time (clock ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def descendants(root_pids: list[int], spare: list[int] = ()) -> set[int]:
    """Every process below the roots, except the spared ones and what is below them."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), set(root_pids)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found - set(spare)
        found |= frontier
    return found


def candidate_processes(sandbox) -> set[int]:
    """The processes below a sandbox's workers but their templates: the candidates' own."""
    return descendants(sandbox.worker_pids(), sandbox.template_pids())


def leftover_processes(scorer: Scorer) -> list[int]:
    """Processes still running for candidates: any process of a slot uid, or below a worker."""
    sandbox = scorer.sandbox
    uids = {w.hello["uid"] for w in sandbox.pool.workers.values() if w.hello.get("uid") is not None}
    return sorted(set(processes_of_uids(uids)) | candidate_processes(sandbox))


def in_process_prediction(program: str, task: Task, ctx: "AttackContext | None" = None) -> float:
    """The control: the program run in this process, unsandboxed; 1.0 means the probe works.
    With ctx, waits until the listener has recorded the control's own contacts."""
    from evolve.scoring.in_sandbox import run_jobs

    contacts = len(ctx.listener.contacts) if ctx is not None else 0
    jobs, _ = build_jobs(task, "validation")
    report = run_jobs(program, jobs, task.features, task.targets)
    assert report.status == "ok", report.message
    if ctx is not None and "{PORT}" in program.replace(str(ctx.listener.port), "{PORT}"):
        deadline = time.monotonic() + 3
        while len(ctx.listener.contacts) == contacts and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
    return float(max(p.max() for p in report.predictions.values()))


@dataclass
class AttackOutcome:
    name: str
    what: str
    status: str
    got: str  # "nothing" or what leaked
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems


def got_something(evaluation: Evaluation) -> bool:
    return evaluation.ok and evaluation.predictions is not None and bool(np.any(evaluation.predictions != 0.0))


def run_attack(attack: Attack, scorer: Scorer, ctx: AttackContext, baseline: Evaluation) -> AttackOutcome:
    """Score one attack and check everything around it; problems lists what went wrong."""
    ctx.worker_pids = scorer.sandbox.worker_pids()
    workers_before = list(ctx.worker_pids)
    files_before = ctx.outside_files()
    contacts_before = len(ctx.listener.contacts)
    signals_before = len(ctx.signals)
    started = time.monotonic()
    evaluation = scorer.score(attack.source(ctx), ctx.task, "validation")
    seconds = time.monotonic() - started
    time.sleep(0.3)  # let a stray signal or connection arrive before looking
    problems = []
    if evaluation.status not in attack.expect:
        problems.append(f"status {evaluation.status!r} not in {attack.expect} ({evaluation.message[-300:]})")
    leaked = got_something(evaluation)
    if leaked:
        problems.append("the program's predictions say the attack worked")
    if len(evaluation.message) > 5_000:
        problems.append(f"a message of {len(evaluation.message)} characters came back")
    if evaluation.ok:
        _, truth = build_jobs(ctx.task, "validation")
        honest = compute_metrics(evaluation.predictions, truth)
        if honest.r2 != evaluation.metrics.r2:
            problems.append(f"metrics {evaluation.metrics.r2} differ from an honest recomputation {honest.r2}")
    if len(ctx.listener.contacts) != contacts_before:
        problems.append(f"the listener was contacted: {ctx.listener.contacts[contacts_before:]}")
    if ctx.outside_files() != files_before:
        problems.append("files outside the scratch folder changed")
    if len(ctx.signals) != signals_before:
        problems.append("this process received a signal from the program")
    if ctx.decoy.poll() is not None:
        problems.append("the decoy sibling process was killed")
    if scorer.sandbox.worker_pids() != workers_before:
        problems.append("a sandbox worker was replaced (it was killed or broken)")
    if numpy_fingerprint() != ctx.numpy_before:
        problems.append("numpy or evolve.metrics changed in the parent")
    leftovers = leftover_processes(scorer)
    if leftovers:
        problems.append(f"processes left over: {leftovers}")
    after = scorer.score(GOOD_PROGRAM, ctx.task, "validation")
    if not after.ok or after.metrics.r2 != baseline.metrics.r2:
        problems.append(f"a normal program scores differently afterwards: {after.status} {after.metrics.r2} vs {baseline.metrics.r2}")
    return AttackOutcome(attack.name, attack.what, evaluation.status, "SOMETHING" if leaked else "nothing", problems, seconds)


def attack_scorer_config(timeout_s: float = 3.0, workers: int = 2):
    from evolve.config import ScorerConfig

    return ScorerConfig(workers=workers, timeout_s=timeout_s, memory_mb=256, max_output_mb=8)


def run_all_attacks(task: Task, root: Path, attacks=ATTACKS) -> list[AttackOutcome]:
    """Every attack through one Scorer, with its controls; for the benchmark."""
    ctx = AttackContext(task, root)
    outcomes = []
    try:
        with Scorer(attack_scorer_config()) as scorer:
            ctx.worker_pids = scorer.sandbox.worker_pids()
            baseline = scorer.score(GOOD_PROGRAM, task, "validation")
            for attack in attacks:
                outcome = run_attack(attack, scorer, ctx, baseline)
                if attack.control and in_process_prediction(attack.source(ctx), task, ctx) != 1.0:
                    outcome.problems.append("control failed: the probe cannot detect a success")
                outcomes.append(outcome)
    finally:
        ctx.close()
    return outcomes


# --------------------------------------------------------------------------- archive helpers


def archive_rows(db: Path) -> list[tuple]:
    """Every stored program as a plain row (None when the file is missing)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute("select * from programs order by id").fetchall()


def integrity(db: Path) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute("pragma integrity_check").fetchone()[0]


def write_file(folder: Path, name: str, text: str) -> Path:
    path = Path(folder) / name
    path.write_text(text)
    return path


def fresh_tmp(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# --------------------------------------------------------------------------- kill drivers

# Runs `evolve` (cli.main) in a process that SIGKILLs itself at a chosen moment:
#   argv: KIND N cli-args...   KIND is one of
#   db_write  - inside the N-th program insert, after the row is written, before COMMIT
#   scoring   - 0.2 s into the N-th sandbox evaluation (a worker is busy with a child)
#   created   - right after the run database is created, before its settings are stored
KILL_DRIVER = r'''
import os, signal, sys, threading
kind, n = sys.argv[1], int(sys.argv[2])
calls = [0]

def due():
    calls[0] += 1
    return calls[0] == n

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if kind == "db_write":
    import evolve.store.database as archive
    original = archive.insert_program
    def insert_program(connection, row):
        new_id = original(connection, row)
        if due():
            die()
        return new_id
    archive.insert_program = insert_program
elif kind == "scoring":
    import evolve.scoring.pool as sandbox
    original = sandbox.Sandbox.run
    def run(self, *args, **kwargs):
        if due():
            threading.Timer(0.2, die).start()
        return original(self, *args, **kwargs)
    sandbox.Sandbox.run = run
elif kind == "created":
    import evolve.store.database as archive
    original = archive.Archive.create.__func__
    def create(cls, *args, **kwargs):
        made = original(cls, *args, **kwargs)
        if due():
            die()
        return made
    archive.Archive.create = classmethod(create)
else:
    raise SystemExit(f"unknown kill kind {kind}")
from evolve.cli.main import main
sys.exit(main(sys.argv[3:]))
'''


def sandbox_processes_under(root: Path) -> list[int]:
    """Live sandbox workers (and their children) whose scratch folder is under `root`:
    the processes of runs started with TMPDIR=root."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "evolve.scoring.worker" in cmdline and str(root) in cmdline and state != "Z":
            found.append(int(entry))
    return found


def wait_until(condition, timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()


def stored_programs(db: Path) -> list[tuple]:
    """(id, code, status, val_r2, parent_id, island) of every stored program; [] when unreadable."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("select id, code, status, val_r2, parent_id, island from programs order by id").fetchall()
    except sqlite3.Error:
        return []


_REPLIES = __import__("itertools").count()


def llm_reply(request: dict) -> str:
    """A fake model's reply: the good law with a slightly different starting point each time."""
    block = GOOD_PROGRAM.split("# EVOLVE-BLOCK-START\n")[1].split("# EVOLVE-BLOCK-END")[0]
    start = f"{0.2 + 0.01 * (next(_REPLIES) % 20):.3f}"
    return "A shared power law in N * P**k.\n\n```python\n" + block.replace("0.3, 0.3]", f"{start}, 0.3]") + "```\n"

# processes as seen from outside the sandbox (/proc), for the attack tests that count them


def proc_status(pid: str) -> dict:
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    except OSError:
        pass
    return fields


def pids_named(marker: str) -> list[int]:
    """Live processes whose comm is `marker` (the attacks name their processes)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == marker[:15]:
                    if proc_status(entry).get("State", "Z")[0] != "Z":
                        found.append(int(entry))
            except OSError:
                continue
    return found


def private_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    kb = sum(int(line.split()[1]) for line in text.splitlines() if line.startswith(("Private_Dirty:", "Private_Clean:")))
    return kb / 1024
