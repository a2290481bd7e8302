"""The inspection commands (`evolve runs`, `evolve archive RUN ...`), export and formulas.

Two runs are used: a real offline run (shared by this file and test_report.py) and a
small archive built by hand, whose programs, failures and lineage are known exactly.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import sympy

from evolve.store.database import Archive
from evolve.cli.main import main
from evolve.config import ArchiveConfig, RunConfig, ScorerConfig, config_to_dict
from evolve.scoring.formula_jobs import formulas_isolated, parse_result
from evolve.report.formula import key, scorer_predictions, spread, stored_case, trace_job
from evolve.symbolic import Formula, FormulaJob, extract_formula
from evolve.records import ProgramRecord
from evolve.scoring.scorer import Scorer
from evolve.tasks import load_task
from tests.attacks import Listener

TASK = "parallel_scaling_law"

POWER_LAW = '''import numpy as np
from scipy.optimize import least_squares

# EVOLVE-BLOCK-START
def scaling_law_func(data_points, params):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    a, alpha, e = params
    return a * np.power(X[:, 0] / 1e9, -alpha) + e


def fit_scaling_law(data_points, loss_values):
    X = np.atleast_2d(np.asarray(data_points, dtype=float))
    y = np.asarray(loss_values, dtype=float)
    result = least_squares(lambda p: scaling_law_func(X, p) - y, np.array([0.5, 0.3, 1.0]), max_nfev=500)
    return result.x
# EVOLVE-BLOCK-END
'''

PARALLEL_LAW = POWER_LAW.replace(
    "    a, alpha, e = params\n    return a * np.power(X[:, 0] / 1e9, -alpha) + e",
    "    a, alpha, e, k = params\n    return a * np.power(X[:, 0] / 1e9 * (k * np.log(X[:, 1]) + 1), -alpha) + e",
).replace("np.array([0.5, 0.3, 1.0])", "np.array([0.5, 0.3, 1.0, 0.2])")

BROKEN = "def scaling_law_func(data_points, params:\n    return 0\n"

_RUNS: dict[str, Path] = {}


def make_real_run(tmp_path_factory) -> Path:
    """One small offline run, made once per test session and shared by the test files."""
    if "real" not in _RUNS:
        from evolve.loop import run_evolution

        run_dir = tmp_path_factory.mktemp("real") / "run"
        config = RunConfig(task=TASK, iterations=4, seed=0, run_dir=str(run_dir), proposer="offline", scorer=ScorerConfig(workers=2, timeout_s=30))
        run_evolution(config)
        _RUNS["real"] = run_dir
    return _RUNS["real"]


def make_built_run(tmp_path_factory) -> Path:
    """A hand-built run: seed -> better child -> broken grandchild, plus a second island."""
    if "built" not in _RUNS:
        run_dir = tmp_path_factory.mktemp("built") / "run"
        run_dir.mkdir()
        task = load_task(TASK)
        with Scorer(ScorerConfig(isolate=False)) as scorer:
            seed_eval = scorer.score(POWER_LAW, task, "validation")
            child_eval = scorer.score(PARALLEL_LAW, task, "validation")
            child_test = scorer.score(PARALLEL_LAW, task, "test")
            broken_eval = scorer.score(BROKEN, task, "validation")
        archive = Archive.create(run_dir / "archive.db", ArchiveConfig(islands=2), task.param_cap)
        archive.set_meta("config", config_to_dict(RunConfig(task=TASK, iterations=3, run_dir=str(run_dir))))
        archive.set_meta("task", TASK)
        archive.set_meta("started_at", 1_700_000_000.0)
        archive.set_meta("status", "finished")
        archive.set_meta("iteration", 3)
        seed = archive.add(ProgramRecord(POWER_LAW, seed_eval, explanation="seed power law"))
        child = archive.add(ProgramRecord(PARALLEL_LAW, child_eval, iteration=1, parent_id=seed.id, proposer="llm", model="m", explanation="add parallel term", prompt_tokens=100, completion_tokens=50))
        archive.set_test(child.id, child_test)
        archive.add(ProgramRecord(BROKEN, broken_eval, iteration=2, parent_id=child.id, proposer="llm", model="m", prompt_tokens=90, completion_tokens=10))
        archive.add(ProgramRecord(POWER_LAW, seed_eval, island=1, explanation="seed power law"))
        archive.close()
        _RUNS["built"] = run_dir
    return _RUNS["built"]


@pytest.fixture(scope="module")
def built_run(tmp_path_factory) -> Path:
    return make_built_run(tmp_path_factory)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    return make_real_run(tmp_path_factory)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def cli_json(capsys, *argv: str):
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def digest(path: Path) -> str:
    return hashlib.sha256((path / "archive.db").read_bytes()).hexdigest()


# ---------------------------------------------------------------- evolve runs


def test_runs_lists_every_run_with_its_best(capsys, built_run, real_run, tmp_path):
    for run in (built_run, real_run):
        link = tmp_path / "runs" / run.parent.name
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(run, target_is_directory=True)
    listed = cli_json(capsys, "runs", "--dir", tmp_path / "runs")
    assert len(listed) == 2
    by_task_status = {(o["task"], o["programs"]) for o in listed}
    assert (TASK, 4) in by_task_status
    built = next(o for o in listed if o["programs"] == 4)
    assert built["best_id"] == 2 and built["status"] == "finished" and built["iterations"] == 3
    assert built["best_test_r2"] is not None
    assert built["prompt_tokens"] + built["completion_tokens"] == 250  # no usage meta: summed from the programs
    real = next(o for o in listed if o is not built)
    assert real["law_chosen"] is True and built["law_chosen"] is False  # built by hand: it never chose
    code, out, _ = run_cli(capsys, "runs", "--dir", tmp_path / "runs")
    assert code == 0 and built_run.parent.name in out and real_run.parent.name in out
    lines = {name: next(line for line in out.splitlines() if name in line) for name in (built_run.parent.name, real_run.parent.name)}
    assert f"{built['law_id']}*" in lines[built_run.parent.name].split() and "* not chosen yet" in out
    assert f"{real['law_id']}" in lines[real_run.parent.name].split()


def test_a_run_that_never_chose_its_law_says_which_law_predict_uses(capsys, built_run, real_run):
    from evolve.cli.use_cmd import pick_law

    _, law = pick_law(built_run, None)
    err = capsys.readouterr().err
    assert law.record.id == 2 and "has not chosen its law" in err and "program 2, the best by validation" in err
    pick_law(real_run, None)
    assert capsys.readouterr().err == ""


def test_runs_in_a_missing_directory_is_a_one_line_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "runs", "--dir", tmp_path / "nowhere")
    assert code == 2
    assert err.startswith("evolve: error:") and err.count("\n") == 1


# ---------------------------------------------------------------- archive list / csv


def test_list_orders_by_validation_r2_and_filters(capsys, built_run):
    listed = cli_json(capsys, "archive", built_run, "list")
    r2 = [p["validation_r2"] if p["validation_r2"] is not None else -1 for p in listed]
    assert r2 == sorted(r2, reverse=True) and len(listed) == 4
    assert listed[0]["explanation"] == "add parallel term"
    failed = cli_json(capsys, "archive", built_run, "list", "--failed")
    assert [p["status"] for p in failed] == ["syntax_error"]
    island = cli_json(capsys, "archive", built_run, "list", "--island", "1")
    assert [p["island"] for p in island] == [1]
    assert len(cli_json(capsys, "archive", built_run, "list", "--top", "2")) == 2


def test_list_csv_export(capsys, built_run, tmp_path):
    path = tmp_path / "programs.csv"
    code, _, _ = run_cli(capsys, "archive", built_run, "list", "--csv", path)
    assert code == 0
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 4
    broken = next(r for r in rows if r["status"] == "syntax_error")
    assert broken["validation_r2"] == "" and broken["parent_id"] != ""
    best = rows[0]
    assert float(best["validation_r2"]) > float(rows[1]["validation_r2"])
    assert best["test_r2"] != "" and int(best["n_params"]) == 4


# ---------------------------------------------------------------- show / diff / lineage


def computes_the_program(text: str, code: str, task, group: str, params, target: int = 0) -> bool:
    """A shown formula (`target = expression`, numbers rounded for reading) evaluated on the
    group's train rows gives what the program itself computes there with those parameters."""
    expression = text.split(" = ", 1)[1] if " = " in text else text
    symbols = [sympy.Symbol(f, positive=True) for f in task.features]
    rows = task.train.X[task.train.groups == group]
    shown = np.broadcast_to(sympy.lambdify(symbols, sympy.sympify(expression, locals={s.name: s for s in symbols}), "numpy")(*rows.T), (len(rows),))
    namespace: dict = {}
    exec(compile(code, "<program>", "exec"), namespace)  # the tests' own programs and offline ones: trusted here
    program = np.asarray(namespace["scaling_law_func"](rows, np.asarray(params, dtype=float)), dtype=float).reshape(len(rows), -1)
    return bool(np.allclose(shown, program[:, target], rtol=1e-3))


def shown_lines(out: str, target: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith(f"{target} = ")]


def test_show_has_code_metrics_params_and_formula(capsys, built_run):
    shown = cli_json(capsys, "archive", built_run, "show", "2")
    assert shown["code"] == PARALLEL_LAW and shown["parent_id"] == 1
    assert set(shown["test"]["params"]) == {"pile", "stack"}
    formula = shown["formula"]
    assert formula["verified"] and formula["group"] == "pile"
    task = load_task(TASK)
    params = shown["test"]["params"]["pile"]
    assert computes_the_program(formula["text"][0], PARALLEL_LAW, task, "pile", params)
    assert computes_the_program(formula["expressions"][0], PARALLEL_LAW, task, "pile", params)
    assert "p0" not in formula["text"][0]  # the constants are in
    code, out, _ = run_cli(capsys, "archive", built_run, "show", "2")
    assert code == 0 and "law of group pile" in out and "scaling_law_func" in out
    assert shown_lines(out, "loss") == [f"loss = {formula['text'][0]}"]


def test_show_formula_of_an_offline_program_computes_the_program(capsys, real_run):
    """Generated programs scale their inputs, guard logs and powers and derive variables:
    the shown formula must still be the program's law, without guards that never bind."""
    task = load_task(TASK)
    for entry in cli_json(capsys, "archive", real_run, "list", "--top", "3"):
        shown = cli_json(capsys, "archive", real_run, "show", str(entry["id"]))
        formula = shown["formula"]
        assert formula is not None, entry["id"]
        params = (shown["test"] or shown["validation"])["params"][formula["group"]]
        assert computes_the_program(formula["text"][0], shown["code"], task, formula["group"], params)
        assert "1.0e-12" not in formula["text"][0]


def test_unknown_program_and_not_a_run_are_one_line_errors(capsys, built_run, tmp_path):
    code, _, err = run_cli(capsys, "archive", built_run, "show", "999", "--no-formula")
    assert code == 2 and "999" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "archive", tmp_path, "list")
    assert code == 2 and "not a run directory" in err
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "archive.db").write_text("not sqlite at all, just text " * 20)
    code, _, err = run_cli(capsys, "archive", fake, "list")
    assert code == 2 and err.startswith("evolve: error:") and err.count("\n") == 1


def test_diff_is_a_unified_diff_of_the_code(capsys, built_run):
    code, out, _ = run_cli(capsys, "archive", built_run, "diff", "1", "2")
    assert code == 0
    assert out.startswith("--- program 1") and "+++ program 2" in out
    assert "-    a, alpha, e = params" in out and "+    a, alpha, e, k = params" in out


def test_lineage_goes_back_to_the_seed(capsys, built_run):
    chain = cli_json(capsys, "archive", built_run, "lineage", "3")
    assert [p["id"] for p in chain] == [3, 2, 1]
    assert chain[-1]["parent_id"] is None and chain[-1]["proposer"] == "seed"
    code, out, _ = run_cli(capsys, "archive", built_run, "lineage", "3")
    assert code == 0 and "seed" in out


def test_pareto_front_is_non_dominated(capsys, real_run):
    front = cli_json(capsys, "archive", real_run, "pareto")
    listed = [p for p in cli_json(capsys, "archive", real_run, "list") if p["status"] == "ok"]
    assert front
    params = [p["n_params"] for p in front]
    r2 = [p["validation_r2"] for p in front]
    assert params == sorted(set(params)) and r2 == sorted(r2)
    for program in listed:  # every program is matched or beaten by a front member with no more parameters
        assert any(f["n_params"] <= program["n_params"] and f["validation_r2"] >= program["validation_r2"] for f in front)


# ---------------------------------------------------------------- export


def test_export_law_api_reproduces_the_stored_test_score(capsys, real_run, tmp_path):
    best = cli_json(capsys, "archive", real_run, "list", "--top", "1")[0]
    path = tmp_path / "law.py"
    code, _, _ = run_cli(capsys, "archive", real_run, "export", best["id"], "--api", "law", "-o", path)
    assert code == 0
    text = path.read_text()
    assert "stored test evaluation" in text.splitlines()[3]
    task = load_task(TASK)
    with Scorer(ScorerConfig(isolate=False)) as scorer:
        evaluation = scorer.score(text, task, "test")  # law API: no refit, embedded parameters
    assert evaluation.ok and evaluation.metrics.r2 == pytest.approx(best["test_r2"], abs=1e-9)


def test_export_law_api_without_test_uses_validation_params(capsys, built_run, tmp_path):
    path = tmp_path / "seed_law.py"
    assert run_cli(capsys, "archive", built_run, "export", "1", "--api", "law", "-o", path)[0] == 0
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 - our own exported program
    assert "validation evaluation" in path.read_text().splitlines()[3]
    rows = [{"num_params": 1e9, "parallel_size": 1.0}, {"num_params": 4e9, "parallel_size": 2.0}]
    predicted = namespace["law"](rows, "pile")
    a, alpha, e = namespace["FITTED_PARAMS"]["pile"]
    assert predicted[0]["loss"] == pytest.approx(a * 1.0**-alpha + e)
    assert predicted[1]["loss"] == pytest.approx(a * 4.0**-alpha + e)
    with pytest.raises(KeyError, match="known groups"):
        namespace["law"](rows, "nope")


def test_export_fit_api_runs_and_lists_params(capsys, built_run):
    code, out, _ = run_cli(capsys, "archive", built_run, "export", "2")
    assert code == 0 and out.startswith("# Law exported from run")
    namespace: dict = {}
    exec(compile(out, "export", "exec"), namespace)  # noqa: S102 - our own exported program
    assert set(namespace["FITTED_PARAMS"]) == {"pile", "stack"}
    task = load_task(TASK)
    with Scorer(ScorerConfig(isolate=False)) as scorer:
        assert scorer.score(out, task, "validation").ok


def test_export_of_a_failed_program_is_an_error(capsys, built_run):
    code, _, err = run_cli(capsys, "archive", built_run, "export", "3", "--api", "law")
    assert code == 2 and "cannot be exported" in err


def test_inspection_never_changes_the_database(capsys, built_run, tmp_path):
    before = digest(built_run)
    for argv in (["list"], ["show", "2", "--no-formula"], ["diff", "1", "2"], ["lineage", "3"], ["pareto"], ["export", "2", "-o", tmp_path / "x.py"]):
        assert run_cli(capsys, "archive", built_run, *argv)[0] == 0
    assert digest(built_run) == before


# ---------------------------------------------------------------- formulas


def test_formula_maps_numpy_to_sympy_and_checks_itself():
    code = POWER_LAW.replace("return a * np.power(X[:, 0] / 1e9, -alpha) + e", "return np.where(X[:, 1] > 2, a, 0.0) + np.clip(e, 0, None) + np.exp(-alpha) * np.log10(X[:, 0])")
    rows = [[1e9, 1.0], [2e9, 4.0], [3e9, 8.0]]
    formula = extract_formula(FormulaJob(code, ("num_params", "parallel_size"), 1, 3, [0.5, 0.2, 1.0], rows))
    assert formula is not None and formula.verified
    assert "Piecewise" in formula.expressions[0] and "log" in formula.expressions[0]


def test_formula_with_cancelling_constants_is_shown_and_computes_the_program():
    """c = 2.57e9 with a·x^-1e-11 = -2.57e9 (a log written as a power with a vanishing
    exponent, as the offline grammar finds on datablations): the value keeps only the last
    digits of 2.57e9, and the shown formula must still be recovered, computing what the
    program computes."""
    from evolve.formula_display import fitted_law, same_values, values_on

    code = POWER_LAW.replace("return a * np.power(X[:, 0] / 1e9, -alpha) + e",
                             "return a * np.power(np.maximum(X[:, 0] / 1e9, 1e-12), -alpha) + e")
    rows = np.array([[1e8, 1.0], [1e9, 2.0], [1e10, 4.0], [3e11, 8.0]])
    params = [-2565587544.2170438, 1.1552713439480971e-11, 2565587546.842936441]
    formula = extract_formula(FormulaJob(code, ("num_params", "parallel_size"), 1, 3, params, rows.tolist()))
    assert formula is not None and formula.verified
    laws = fitted_law(formula, ("num_params", "parallel_size"), params, rows)
    assert laws is not None and "Max" not in str(laws[0])
    a, alpha, e = params
    program = a * np.power(rows[:, 0] / 1e9, -alpha) + e
    assert same_values(values_on(laws[0], ("num_params", "parallel_size"), rows), program, 1e-6)


def test_a_power_with_a_vanishing_exponent_is_shown_as_the_log_it_computes():
    """4.09e9*x**-6.985e-11 - (4.09e9 - 2.5) is 2.5 - 0.2857*log(x) to six digits: the
    displayed formula shows the log, computes the same values, and an ordinary power law
    is left as it is."""
    from evolve.formula_display import rounded, same_values, values_on
    from evolve.symbolic import feature_symbols

    x = feature_symbols(("x",))[0]
    rows = np.geomspace(1e7, 1e10, 20).reshape(-1, 1)
    hidden_log = sympy.Float(4.09e9, 17) * x ** sympy.Float(-6.985e-11, 17) - sympy.Float(4.09e9 - 2.5, 17)
    shown = rounded(hidden_log, ("x",), rows)
    assert shown.has(sympy.log) and not any(abs(float(n)) > 1e6 for n in shown.atoms(sympy.Float))
    assert same_values(values_on(shown, ("x",), rows), values_on(hidden_log, ("x",), rows), 1e-4)
    power_law = sympy.Float(3.2, 17) * x ** sympy.Float(-0.3, 17) + 1.5
    assert not rounded(power_law, ("x",), rows).has(sympy.log)


def test_formula_is_none_when_the_program_cannot_be_traced_or_lies():
    data_dependent = POWER_LAW.replace("    a, alpha, e = params\n", "    a, alpha, e = [float(v) for v in params]\n")
    assert extract_formula(FormulaJob(data_dependent, ("num_params", "parallel_size"), 1, 3, None, None)) is None
    assert extract_formula(FormulaJob(BROKEN, ("num_params", "parallel_size"), 1, 3, None, None)) is None
    # tracing takes one branch of a Python `if`; the check on real rows catches the other
    branching = POWER_LAW.replace("    a, alpha, e = params\n", "    a, alpha, e = params\n    if len(X) > 1:\n        return X[:, 0] * 0 + e\n")
    rows = [[1e9, 1.0], [2e9, 4.0]]
    assert extract_formula(FormulaJob(branching, ("num_params", "parallel_size"), 1, 3, [0.5, 0.2, 1.0], rows)) is None


def test_isolated_formulas_survive_a_hanging_program(real_run):
    task = load_task(TASK)
    with Archive.open(real_run / "archive.db", readonly=True) as archive:
        best = archive.best()
    hanging = dataclasses.replace(best, code=best.code.replace("def scaling_law_func(data_points, params):", "def scaling_law_func(data_points, params):\n    while True:\n        pass"))
    cases = [stored_case(hanging, task), stored_case(best, task)]
    assert all(cases)
    with Scorer(ScorerConfig(workers=1)) as scorer:  # the check's predictions, made as scoring makes them
        expected = scorer_predictions(cases[1:], task, scorer)[key(cases[1])][spread(cases[1].rows)]
    results = formulas_isolated([trace_job(c, task) for c in cases], seconds_per_program=4.0, expected=[None, expected])
    assert results[0] is None and results[1] is not None and results[1].verified


SECRET = "sk-formula-secret-5c1e27"
TEST_CSV = Path(__file__).resolve().parent.parent / "tasks" / "sft_scaling_law" / "test.csv"
SPY_TEMPLATE = """import os
import socket

def attempt():
{attempt}

def scaling_law_func(data_points, params):
    try:
        got = attempt()
    except BaseException:
        got = b""
    marker = int.from_bytes(bytes(got)[:6], "big")  # 0 when it got nothing
    return params[0] * data_points[:, 0] + marker
"""
SPIES = {
    "secret": "    return os.environ.get('OPENAI_API_KEY', '').encode()",
    "test_csv": "    with open({csv!r}, 'rb') as handle:\n        return handle.read()",
    "network": "    with socket.create_connection(('127.0.0.1', {port}), timeout=2) as s:\n        return b'reached'",
    "write_outside": "    with open({outside!r}, 'w') as handle:\n        handle.write('escaped')\n    return b'wrote'",
}


def spy_job(attempt: str) -> FormulaJob:
    return FormulaJob(SPY_TEMPLATE.format(attempt=attempt), ("num_params", "parallel_size"), 1, 1)


def eventually(condition, seconds: float = 3.0) -> bool:
    """The listener records a contact on its own thread, just after the client connected."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(condition())


def marker_of(data: bytes) -> str:
    return str(int.from_bytes(data[:6], "big"))


@pytest.fixture()
def listener():
    """A 127.0.0.1 listener that records every contact."""
    server = Listener()
    yield server.port, server.contacts
    server.close()


def test_isolated_formulas_get_no_secret_network_or_files(monkeypatch, listener, tmp_path):
    """Each spy encodes what it got into its formula; sandboxed it gets nothing, while the same
    probe run in-process (the control) does get through, so the check can see a success."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    port, contacts = listener
    outside = tmp_path / "escaped.txt"
    attempts = {name: body.format(csv=str(TEST_CSV), port=port, outside=str(outside)) for name, body in SPIES.items()}
    jobs = [spy_job(a) for a in attempts.values()] + [spy_job("    return b''")]
    results = formulas_isolated(jobs, seconds_per_program=10.0)
    clean = extract_formula(jobs[-1]).expressions
    assert all(r is not None for r in results), results
    assert [r.expressions for r in results] == [clean] * len(jobs)  # every spy got nothing and the parent kept going
    assert not eventually(lambda: contacts, 0.5) and not outside.exists()
    leaks = (marker_of(SECRET.encode()), marker_of(TEST_CSV.read_bytes()), marker_of(b"reached"))
    assert not any(leak in text for r in results for text in r.expressions + r.latex for leak in leaks)
    controls = {name: extract_formula(spy_job(attempts[name])).expressions[0] for name in ("secret", "test_csv", "network")}
    assert marker_of(SECRET.encode()) in controls["secret"] and marker_of(TEST_CSV.read_bytes()) in controls["test_csv"]
    assert marker_of(b"reached") in controls["network"] and eventually(lambda: contacts)
    assert os.environ["OPENAI_API_KEY"] == SECRET and formulas_isolated([jobs[-1]])[0].expressions == clean


LINGERING = """import os, time

def scaling_law_func(data_points, params):
    import _posixsubprocess
    error_read, error_write = os.pipe()
    pid = _posixsubprocess.fork_exec(  # a new session running Python code, unseen by audit hooks
        [b"/nonexistent"], [b"/nonexistent"], True, (), None, None, -1, -1, -1, -1, -1, -1,
        error_read, error_write, True, True, -1, None, None, None, -1, lambda: time.sleep(60), False)
    return params[0] * data_points[:, 0] + pid
"""


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="only the root plan runs programs under a slot uid to sweep")
def test_a_process_a_program_leaves_behind_is_killed():
    formula = formulas_isolated([FormulaJob(LINGERING, ("num_params",), 1, 1)], seconds_per_program=10.0)[0]
    if formula is None:
        return  # the sandbox refused the fork outright (RLIMIT_NPROC 1): nothing to leave behind
    pid = int(formula.expressions[0].rsplit("+", 1)[1])
    assert pid > 0 and eventually(lambda: not running(pid))


def test_isolated_formula_results_are_validated():
    assert parse_result(b'{"expressions": ["p0"], "latex": ["p_{0}"], "verified": true}', 1) == Formula(("p0",), ("p_{0}",), True)
    for line in (b"null", b"[", b"[" * 100_000, b'{"expressions": ["p0"], "latex": ["p_{0}"], "verified": 1}',
                 b'{"expressions": ["p0", "p1"], "latex": ["p_{0}"], "verified": true}',
                 b'{"expressions": [1], "latex": ["p_{0}"], "verified": true, "x": 0}',
                 b'{"expressions": ["' + b"p" * 300_000 + b'"], "latex": ["p"], "verified": true}'):
        assert parse_result(line, 1) is None


def test_formula_predictions_match_the_scorer(real_run):
    """The recovered formula with one group's fitted parameters gives the scorer's predictions."""
    task = load_task(TASK)
    with Archive.open(real_run / "archive.db", readonly=True) as archive:
        best = archive.best()
    case = stored_case(best, task)
    with Scorer(ScorerConfig(workers=1)) as scorer:
        expected = scorer_predictions([case], task, scorer)[key(case)]
    formula = formulas_isolated([trace_job(case, task)], expected=[expected[spread(case.rows)]])[0]
    assert formula is not None and formula.verified
    with Scorer(ScorerConfig(isolate=False)) as scorer:
        evaluation = scorer.score(best.code, task, "test")
    groups = task.test.group_names()
    offset = 0
    for group in groups:  # predictions come in sorted-group order
        rows = task.test.X[task.test.groups == group]
        params = evaluation.params[group]
        symbols = [sympy.Symbol(f, positive=True) for f in task.features] + [sympy.Symbol(f"p{i}", real=True) for i in range(len(params))]
        expression = sympy.sympify(formula.expressions[0], locals={s.name: s for s in symbols})
        function = sympy.lambdify(symbols, expression, modules="numpy")
        expected = evaluation.predictions[offset : offset + len(rows), 0]
        assert np.allclose(np.broadcast_to(function(*rows.T, *params), expected.shape), expected, rtol=1e-6)
        offset += len(rows)


FORGER = """import os

def scaling_law_func(data_points, params):
    forged = b'{"expressions": ["forged"], "latex": ["forged"], "verified": true}\\n' * 8
    for fd in range(3, 64):  # the result pipe, wherever it is
        try:
            os.write(fd, forged)
        except OSError:
            pass
    return params[0] * data_points[:, 0]
"""


def test_a_program_cannot_forge_the_formulas_of_the_programs_after_it():
    clean = spy_job("    return b''")
    results = formulas_isolated([FormulaJob(FORGER, ("num_params", "parallel_size"), 1, 1), clean, clean], seconds_per_program=10.0)
    expected = extract_formula(clean).expressions
    assert results[1] is not None and results[2] is not None
    assert results[1].expressions == expected and results[2].expressions == expected
    assert results[0] is None or results[0].expressions in (("forged",), expected)  # its own line is its own business


def test_eval_says_how_many_validation_folds_it_averaged(capsys):
    seed = Path(__file__).resolve().parent.parent / "tasks" / "data_constrained_scaling_law" / "seeds" / "baseline.py"
    report = cli_json(capsys, "eval", seed, "--task", "data_constrained_scaling_law")
    assert report["folds"] == 2 and report["split"] == "validation" and report["status"] == "ok"
    assert cli_json(capsys, "eval", seed, "--task", "data_constrained_scaling_law", "--split", "test")["folds"] == 1
    code, out, _ = run_cli(capsys, "eval", seed, "--task", "data_constrained_scaling_law")
    assert code == 0 and "mean over 2 folds" in " ".join(out.split())


def test_eval_of_a_broken_program_names_the_file(capsys, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def scaling_law_func(x, p:\n    return 1\n")
    code, _, err = run_cli(capsys, "eval", bad, "--task", TASK)
    assert code == 2 and err.strip() == f"evolve: error: {bad}: line 1: '(' was never closed"


def test_a_rounded_whole_number_prints_its_decimal_value():
    # 37995.15 rounds to "3.8e+04" at 4 digits (trailing zeros dropped); a 2-digit binary Float
    # of that text is 38016, which the display printed as a whole number: 2.2e-4 off on the rows.
    import numpy as np
    import sympy

    from evolve.formula_display import rounded
    from evolve.symbolic import feature_symbols

    (tokens,) = feature_symbols(("tokens",))
    rows = np.geomspace(1e9, 1e11, 20)[:, None]
    shown = rounded(sympy.Float(37995.15, 17) / tokens**0.5 + sympy.Float(1.7, 17), ("tokens",), rows)
    assert "38016" not in str(shown)
    full = 37995.15 / rows[:, 0] ** 0.5 + 1.7
    values = sympy.lambdify([tokens], shown, "numpy")(rows[:, 0])
    assert np.allclose(values, full, rtol=1e-4, atol=0)


def test_export_to_stdout_and_lineage_keep_program_text_harmless_and_whole(capsys, tmp_path):
    """Attack hunt 2026-12-04: `archive export ID` wrote a program's ESC, BEL and U+202E raw to
    the terminal (show and diff sanitized them). New-user trial: lineage cut the proposer's
    note at 70 characters even through a pipe."""
    task = load_task(TASK)
    hostile = POWER_LAW.replace("def scaling_law_func", "# \x1b]0;owned\x07 \u202e\x1b[2J\ndef scaling_law_func", 1)
    note = "widen the exponent term and add an offset " * 4 + "END"
    with Scorer(ScorerConfig(isolate=False)) as scorer:
        evaluation = scorer.score(hostile, task, "validation")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    archive = Archive.create(run_dir / "archive.db", ArchiveConfig(islands=1), task.param_cap)
    archive.set_meta("config", config_to_dict(RunConfig(task=TASK, iterations=1, run_dir=str(run_dir))))
    archive.set_meta("task", TASK)
    seed = archive.add(ProgramRecord(POWER_LAW, evaluation, explanation="seed"))
    child = archive.add(ProgramRecord(hostile, evaluation, iteration=1, parent_id=seed.id, proposer="llm", explanation=note))
    archive.close()
    code, out, _ = run_cli(capsys, "archive", run_dir, "export", child.id)
    assert code == 0 and "scaling_law_func" in out
    assert not any(c in out for c in "\x1b\x07\u202e")
    path = tmp_path / "law.py"
    assert run_cli(capsys, "archive", run_dir, "export", child.id, "-o", path)[0] == 0
    code, out, _ = run_cli(capsys, "archive", run_dir, "lineage", child.id)
    assert code == 0 and "END" in out.replace("\n", " ").replace("│", " ")


def test_a_guard_that_binds_just_beyond_the_data_is_kept_and_a_flat_power_is_shown_as_one():
    """A new user's law held `Max(0, tokens/params - 1)`: it never binds where every run has
    more tokens than parameters, and the shown formula dropped it, so below that line it
    computed another law (complex numbers at params 1e9, tokens 1e7). Guards go only where
    they clear the rows moved three decades beyond them; a fitted exponent of 2.8e-21 is
    shown as nothing, the value unchanged."""
    import sympy

    from evolve.formula_display import drop_idle_guards, rounded
    from evolve.symbolic import feature_symbols

    params, tokens = feature_symbols(("params", "tokens"))
    rows = np.array([[n, n * r] for n in (1e7, 1e8, 1e9) for r in (2.0, 20.0, 200.0)])
    law = (2.0 - sympy.exp(-sympy.Max(0, tokens / params - 1))) * sympy.Max(sympy.Float(1e-12), sympy.Float(8e-12) * tokens) ** -0.5
    shown = drop_idle_guards(law, [params, tokens], rows)
    assert shown.has(sympy.Max(0, tokens / params - 1))  # binds at 10x fewer tokens: kept
    assert not shown.has(sympy.Float(1e-12))  # binds below 0.125 tokens only: dropped
    flat = rounded(tokens ** sympy.Float(2.845e-21) * params ** sympy.Float(-0.25) + 1, ("params", "tokens"), rows)
    assert "e-21" not in str(flat) and not flat.has(tokens)


def test_latex_keeps_a_column_name_s_spaces_and_escapes_its_specials():
    """`\\mathrm{N (params)}` rendered as "N(params)", a function call to a reader; `%` or `#`
    in a column name broke the LaTeX."""
    from evolve.symbolic import feature_symbols, latex_of

    n, acc = feature_symbols(("N (params)", "acc % #1"))
    text = latex_of(2 * n**0.5 + acc, ("N (params)", "acc % #1"))
    assert r"\text{N (params)}" in text and r"\text{acc \% \#1}" in text


def test_show_gives_test_per_group_worst_first(capsys, built_run):
    """The pooled test R² hides one group gone wrong: show has each group's own errors."""
    task = load_task(TASK)
    with Scorer(ScorerConfig(isolate=False)) as scorer:
        evaluation = scorer.score(PARALLEL_LAW, task, "test")
    by_group = cli_json(capsys, "archive", built_run, "show", "2")["test"]["by_group"]
    assert set(by_group) == set(task.test.group_names())
    start = 0
    for group in task.test.group_names():  # the official order: sorted, rows concatenated
        truth = task.test.y[task.test.groups == group][:, 0]
        predicted = evaluation.predictions[start: start + len(truth)].reshape(-1)
        start += len(truth)
        relative = np.abs(predicted - truth) / np.abs(truth)
        assert by_group[group]["rows"] == len(truth)
        assert by_group[group]["mean_relative_error"] == pytest.approx(relative.mean())
        assert by_group[group]["max_relative_error"] == pytest.approx(relative.max())
        own_r2 = 1 - np.mean((predicted - truth) ** 2) / np.var(truth)
        assert by_group[group]["r2"] == pytest.approx(own_r2)
    _, out, _ = run_cli(capsys, "archive", built_run, "show", "2")
    table = out[out.index("test per group, worst first"):]
    worst = max(by_group, key=lambda g: by_group[g]["mean_relative_error"])
    assert table.index(worst) < table.index(min(by_group, key=lambda g: by_group[g]["mean_relative_error"]))


def test_group_scores_leave_r2_out_where_a_group_has_too_few_rows():
    from evolve.metrics import group_scores

    scores = group_scores({"b": np.array([2.0, 4.0, 6.0]), "a": np.array([1.5])}, np.array([1.0, 2.0, 4.0, 8.0]))
    assert scores["a"] == {"rows": 1, "r2": None, "mean_relative_error": 0.5, "max_relative_error": 0.5}
    assert scores["b"]["rows"] == 3 and scores["b"]["max_relative_error"] == 0.25
    assert scores["b"]["r2"] == pytest.approx(1 - np.mean([0, 0, 4]) / np.var([2.0, 4.0, 8.0]))
