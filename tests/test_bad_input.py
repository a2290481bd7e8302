"""Bad input: every user mistake is one line on stderr naming the problem and a non-zero exit
of the `evolve` command, and changes nothing already stored. Malformed CSVs and random
program text are generated with hypothesis: a CSV is refused with a one-line TaskError and
never another exception; a program always comes back as a status, never an exception.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evolve.config import ArchiveConfig, RunConfig, ScorerConfig
from evolve.loop import run_evolution
from evolve.scoring.in_sandbox import GroupJob, run_jobs
from evolve.scoring.scorer import FAILURE_STATUSES, Scorer
from evolve.tasks import TaskError, create_task_folder, load_task, read_rows
from tests.attacks import ATTACK_TASK, GOOD_PROGRAM

RUN_STATUSES = ("ok", "syntax_error", "missing_function", "exception", "nan", "wrong_shape", "timeout", "crash", "memory")


def evolve(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve", *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


def snapshot(folder: Path) -> dict[str, object]:
    """Every file's bytes (SQLite's own -wal/-shm side files, which a read-only open of a WAL
    database may create, only by whether the WAL holds anything) and every stored row."""
    files: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        name = str(path.relative_to(folder))
        if name.endswith("-shm"):
            continue
        files[name] = (path.stat().st_size == 0) if name.endswith("-wal") else path.read_bytes()
    files = {k: v for k, v in files.items() if v is not True}  # an empty WAL is no change
    with sqlite3.connect(f"file:{folder / 'archive.db'}?mode=ro", uri=True) as conn:
        files["rows"] = conn.execute("select * from programs order by id").fetchall()
        files["meta"] = conn.execute("select * from meta order by key").fetchall()
    return files


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """A finished run whose every byte must survive the bad commands below."""
    root = tmp_path_factory.mktemp("stored")
    good = root / "good.py"
    good.write_text(GOOD_PROGRAM)
    config = RunConfig(task=ATTACK_TASK, iterations=2, proposer="offline", seed=0, seed_laws=(str(good),),
                       run_dir=str(root / "run"), archive=ArchiveConfig(islands=1), top_k_test=1,
                       scorer=ScorerConfig(workers=1, timeout_s=20))
    summary = run_evolution(config)
    return Path(summary.run_dir)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("evolve: error:") or lines[0].startswith("evolve "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])


GOOD_CSV = "group,x,y\n" + "".join(f"g{g},{x},{1 + 1 / x}\n" for g in (1, 2) for x in range(1, 9))

BAD_CSVS = {
    "missing_column": ("group,x,z\n" + "g,1,2\n" * 6, "no target column 'y'"),
    "text_in_numeric": (GOOD_CSV.replace("g1,3,", "g1,three,"), "not a number"),
    "nan": (GOOD_CSV.replace("g2,4,", "g2,nan,"), "finite"),
    "empty_group": (GOOD_CSV.replace("g1,5,", ",5,"), "empty group"),
    "no_rows": ("group,x,y\n", "no data rows"),
}


def bad_input_cases(tmp: Path, run_dir: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """name -> (evolve arguments, fragments the one-line error must contain)."""
    cases: dict[str, tuple[list[str], tuple[str, ...]]] = {}
    cases["unknown_task_run"] = (["run", "no_such_task", "--run-dir", tmp / "new-run", "--quiet"], ("unknown task", "no_such_task"))
    good = tmp / "good.py"
    good.write_text(GOOD_PROGRAM)
    cases["unknown_task_eval"] = (["eval", good, "--task", "no_such_task"], ("unknown task",))
    cases["missing_program_eval"] = (["eval", tmp / "absent.py", "--task", ATTACK_TASK], ("absent.py",))
    cases["missing_csv"] = (["tasks", "new", tmp / "task-missing", "--csv", tmp / "absent.csv", "--features", "x", "--targets", "y"], ("absent.csv",))
    cases["missing_csv_with_group_column"] = (["tasks", "new", tmp / "task-missing-g", "--csv", tmp / "absent.csv", "--features", "x",
                                               "--targets", "y", "--group-column", "group"], ("absent.csv",))
    for name, (text, fragment) in BAD_CSVS.items():
        path = tmp / f"{name}.csv"
        path.write_text(text)
        cases[f"csv_{name}"] = (["tasks", "new", tmp / f"task-{name}", "--csv", path, "--features", "x", "--targets", "y",
                                 "--group-column", "group"], (fragment,))
    broken_toml = tmp / "broken.toml"
    broken_toml.write_text("iterations = [1,\n[model\n")
    cases["config_not_toml"] = (["run", ATTACK_TASK, "--config", broken_toml, "--run-dir", tmp / "r1", "--quiet"], ("not valid toml",))
    unknown_key = tmp / "unknown.toml"
    unknown_key.write_text("iterations = 3\n[scorer]\nworkerz = 2\n")
    cases["config_unknown_key"] = (["run", ATTACK_TASK, "--config", unknown_key, "--run-dir", tmp / "r2", "--quiet"], ("workerz",))
    wrong_type = tmp / "wrong.toml"
    wrong_type.write_text("iterations = 'many'\n")
    cases["config_wrong_type"] = (["run", ATTACK_TASK, "--config", wrong_type, "--run-dir", tmp / "r3", "--quiet"], ("iterations",))
    cases["config_missing"] = (["run", ATTACK_TASK, "--config", tmp / "absent.toml", "--run-dir", tmp / "r4", "--quiet"], ("absent.toml",))
    no_functions = tmp / "no_functions.py"
    no_functions.write_text("import numpy as np\n\ndef helper(x):\n    return x\n")
    cases["seed_law_missing_functions"] = (["run", ATTACK_TASK, "--seed-law", no_functions, "--run-dir", tmp / "r5", "--iterations", "1",
                                            "--proposer", "offline", "--quiet"], ("no_functions.py",))
    syntax = tmp / "syntax.py"
    syntax.write_text("def fit_scaling_law(x, y:\n    return 1\n")
    cases["seed_law_syntax_error"] = (["run", ATTACK_TASK, "--seed-law", syntax, "--run-dir", tmp / "r6", "--iterations", "1",
                                       "--proposer", "offline", "--quiet"], ("syntax.py", "line 1"))
    cases["seed_law_missing_file"] = (["run", ATTACK_TASK, "--seed-law", tmp / "absent_seed.py", "--run-dir", tmp / "r7", "--iterations", "1",
                                       "--proposer", "offline", "--quiet"], ("absent_seed.py",))
    cases["unknown_resume_dir"] = (["run", "--resume", tmp / "no-such-run", "--quiet"], ("no-such-run",))
    cases["existing_run_dir"] = (["run", ATTACK_TASK, "--run-dir", run_dir, "--quiet"], ("already holds a run",))
    cases["unknown_run_archive"] = (["archive", tmp / "no-such-run", "list"], ("no-such-run",))
    cases["unknown_program_id"] = (["archive", run_dir, "show", "99999"], ("99999",))
    cases["unknown_run_report"] = (["report", tmp / "no-such-run"], ("no-such-run",))
    return cases


with tempfile.TemporaryDirectory() as _names_only:
    CASE_NAMES = sorted(bad_input_cases(Path(_names_only), Path("run")))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_line_and_changes_nothing_stored(name, stored_run, tmp_path):
    args, fragments = bad_input_cases(tmp_path, stored_run)[name]
    before = snapshot(stored_run)
    result = evolve(*args, cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    assert snapshot(stored_run) == before
    for made in ("task-missing", "task-missing-g", *[f"task-{n}" for n in BAD_CSVS]):
        assert not (tmp_path / made / "task.toml").exists()  # a refused CSV leaves no task behind


def test_a_refused_seed_law_leaves_no_run_behind(tmp_path):
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def fit_scaling_law(x, y:\n    return 1\n")
    result = evolve("run", ATTACK_TASK, "--seed-law", syntax, "--run-dir", tmp_path / "run", "--iterations", "1", "--proposer", "offline", "--quiet")
    assert_one_line_error(result, "syntax.py")
    assert not (tmp_path / "run" / "archive.db").exists()


# --------------------------------------------------------------------------- hypothesis: CSV

CELL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e309", "abc", " 1 ", "1,5", '"', "\x00", "é", "0x10", "1_000"]),
    st.text(max_size=6),
)
HEADER = st.lists(st.sampled_from(["group", "x", "y", "z", "", "x ", "Y"]), min_size=0, max_size=5)


@st.composite
def csv_text(draw) -> bytes:
    header = draw(HEADER)
    rows = draw(st.lists(st.lists(CELL, min_size=0, max_size=len(header) + 1), max_size=12))
    lines = [",".join(header)] + [",".join(r) for r in rows]
    return ("\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))).encode("utf-8", "surrogatepass")


def check_csv_is_accepted_or_one_line_error(data: bytes, group_column: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "data.csv"
        csv_path.write_bytes(data)
        folder = Path(tmp) / "task"
        try:
            task = create_task_folder(folder, csv_path, ["x"], ["y"], group_column=group_column)
        except TaskError as exc:
            assert "\n" not in str(exc) and str(exc).strip()
            assert not (folder / "task.toml").exists()
        else:  # accepted: it must be a real, loadable task
            assert load_task(folder).features == ("x",) and len(task.train) > 0
        try:
            rows = read_rows(csv_path, ("x",), ("y",))
        except TaskError as exc:
            assert "\n" not in str(exc) and str(exc).strip()
        else:
            assert np.all(np.isfinite(rows.X)) and np.all(np.isfinite(rows.y))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=csv_text(), group_column=st.sampled_from([None, "group", "absent"]))
def test_malformed_csv_is_a_one_line_task_error(data, group_column):
    check_csv_is_accepted_or_one_line_error(data, group_column)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(data=st.binary(max_size=200), group_column=st.sampled_from([None, "group", "absent"]))
def test_any_bytes_as_a_csv_is_a_one_line_task_error(data, group_column):
    check_csv_is_accepted_or_one_line_error(data, group_column)


def test_a_csv_that_is_not_utf8_with_a_group_column_is_a_one_line_error(tmp_path):
    csv_path = tmp_path / "latin1.csv"
    csv_path.write_bytes(b"\x80\x81group,x,y\n")
    result = evolve("tasks", "new", tmp_path / "task", "--csv", csv_path, "--features", "x", "--targets", "y", "--group-column", "group")
    assert_one_line_error(result, "latin1.csv")
    with pytest.raises(TaskError):
        create_task_folder(tmp_path / "task2", csv_path, ["x"], ["y"], group_column="group")


# --------------------------------------------------------------------------- hypothesis: programs

FRAGMENTS = [
    "import numpy as np",
    "def fit_scaling_law(data_points, loss_values):\n    return [1.0]",
    "def fit_scaling_law(data_points, loss_values):\n    return np.polyfit(data_points[:, 0], loss_values, 1)",
    "def fit_scaling_law(data_points, loss_values, group=None):\n    raise RuntimeError(group)",
    "def fit_scaling_law(*a):\n    return None",
    "def scaling_law_func(data_points, params):\n    return np.full(len(data_points), float(params[0]))",
    "def scaling_law_func(data_points, params):\n    return np.polyval(params, data_points[:, 0])",
    "def scaling_law_func(data_points, params):\n    return np.full(len(data_points), np.nan)",
    "def scaling_law_func(data_points, params):\n    return 'not numbers'",
    "def scaling_law_func(data_points, params):\n    return np.ones((2, len(data_points), 3))",
    "def scaling_law_func(data_points, params):\n    return [[object()]]",
    "def scaling_law_func(x, p):\n    return scaling_law_func(x, p)",
    "def law(input_data, group):\n    return [{'loss': 1.0} for _ in input_data]",
    "def law(input_data, group):\n    return None",
    "scaling_law_func = 3",
    "fit_scaling_law = lambda x, y: [0.0]",
    "raise SystemExit(3)",
    "raise KeyboardInterrupt",
    "import sys\nsys.setrecursionlimit(50)",
    "class fit_scaling_law:\n    pass",
    "x = 1 / 0",
    "# EVOLVE-BLOCK-START",
    "# EVOLVE-BLOCK-END",
    "def fit_scaling_law(data_points, loss_values):\n    yield 1",
    "def scaling_law_func(data_points, params):\n    return np.full(len(data_points), 1e308) * 10",
]
PROGRAM_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(FRAGMENTS), max_size=6).map("\n\n".join),
    st.tuples(st.lists(st.sampled_from(FRAGMENTS), max_size=5).map("\n\n".join), st.text(max_size=20)).map(lambda t: t[0] + t[1]),
)


def small_jobs() -> list[GroupJob]:
    x = np.arange(1.0, 11.0).reshape(-1, 1)
    return [GroupJob("a", x[:8], 1 + 1 / x[:8], x[8:]), GroupJob("b", x[:6], 2 + 1 / x[:6], x[6:])]


@settings(max_examples=60, deadline=None)
@given(text=PROGRAM_TEXT)
def test_any_program_text_is_a_status_in_process(text):
    report = run_jobs(text, small_jobs(), ("x",), ("loss",))
    assert report.status in RUN_STATUSES
    if report.status == "ok":
        assert set(report.predictions) == {"a", "b"}
        assert all(np.all(np.isfinite(p)) for p in report.predictions.values())


@pytest.fixture(scope="module")
def fuzz_scorer():
    with Scorer(ScorerConfig(workers=1, timeout_s=5, memory_mb=512)) as scorer:
        yield scorer


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=PROGRAM_TEXT)
def test_any_program_text_is_a_status_in_the_sandbox(text, fuzz_scorer):
    task = load_task(ATTACK_TASK)
    evaluation = fuzz_scorer.score(text, task, "validation")
    assert evaluation.status in ("ok", *FAILURE_STATUSES)
    assert evaluation.ok or evaluation.rank_r2 == -1.0


def test_a_ctrl_c_names_a_run_to_resume_only_where_one_was_stored(tmp_path, monkeypatch, capsys):
    """A Ctrl-C before a run's archive exists (or in another command) has nothing to resume:
    a new-user trial was told to `evolve run --resume RUN` for a folder that did not exist."""
    import evolve.cli.run_cmd as run_cmd
    from evolve.cli.main import main

    def interrupted(run_dir):
        def stop(*args, **kwargs):
            exc = KeyboardInterrupt()
            if run_dir is not None:
                exc.run_dir = str(run_dir)
            raise exc
        return stop

    stored = tmp_path / "stored"
    stored.mkdir()
    (stored / "archive.db").write_bytes(b"")
    for run_dir, expected in ((None, "evolve: interrupted\n"), (tmp_path / "never", "evolve: interrupted; nothing of the run was stored\n"),
                              (stored, f"evolve: interrupted; resume with `evolve run --resume {stored}`\n")):
        monkeypatch.setattr(run_cmd, "run_evolution", interrupted(run_dir))
        assert main(["run", "sft_scaling_law", "--iterations", "1", "--run-dir", str(tmp_path / "x")]) == 130
        assert capsys.readouterr().err.endswith(expected)


def test_a_fault_of_evolve_itself_is_one_line_with_the_traceback_on_request(tmp_path, monkeypatch, capsys):
    """Attack round 6 stopped `evolve run` with a Python traceback (a fault in the offline
    grammar's reading of a parent): any fault that is not the input's is one line naming it
    as evolve's, with its own exit code; EVOLVE_TRACEBACK=1 shows where."""
    import evolve.cli.run_cmd as run_cmd
    from evolve.cli.main import EXIT_INTERNAL_ERROR, main

    def broken(*args, **kwargs):
        raise AttributeError("'int' object has no attribute 'get'\n\x1b[31mred")

    monkeypatch.setattr(run_cmd, "run_evolution", broken)
    monkeypatch.delenv("EVOLVE_TRACEBACK", raising=False)
    assert main(["run", "sft_scaling_law", "--iterations", "1", "--run-dir", str(tmp_path / "x")]) == EXIT_INTERNAL_ERROR
    err = capsys.readouterr().err
    assert err.startswith("evolve: internal error: AttributeError: 'int' object has no attribute 'get'")
    assert err.count("\n") == 1 and "\x1b" not in err and "Traceback" not in err
    monkeypatch.setenv("EVOLVE_TRACEBACK", "1")
    with pytest.raises(AttributeError):
        main(["run", "sft_scaling_law", "--iterations", "1", "--run-dir", str(tmp_path / "y")])


def test_a_proposer_fault_costs_one_child_not_the_run(tmp_path):
    """A proposer that raises on one request (it reads programs a model wrote) stores that
    child as a proposal without code, with the reason, and the run goes on to the end."""
    from evolve.propose.offline import OfflineProposer
    from evolve.status import Status

    calls = []
    original = OfflineProposer.propose

    def sometimes_broken(self, request):
        calls.append(request.seed)
        if len(calls) == 2:
            raise AttributeError("'int' object has no attribute 'get'")
        return original(self, request)

    config = RunConfig(task=ATTACK_TASK, iterations=4, seed=0, proposer="offline", run_dir=str(tmp_path / "run"),
                       scorer=ScorerConfig(workers=1), archive=ArchiveConfig())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OfflineProposer, "propose", sometimes_broken)
        summary = run_evolution(config)
    assert summary.iterations == 4
    from evolve.store.database import Archive

    with Archive.open(Path(config.run_dir) / "archive.db", readonly=True) as archive:
        failed = [p for p in archive.programs(order="id") if p.validation.status == Status.NO_CODE]
    assert len(failed) == 1 and "offline proposer failed: AttributeError" in failed[0].validation.message
