"""A user's own data: a CSV becomes a task, the task runs with no seed law, and what a new
user hit on the way (truncated tables, broken pipes, resume surprises, failed starts that
left folders behind) stays fixed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest

from evolve.cli.run_cmd import run_command
from evolve.propose.seeds import default_seeds
from evolve.tasks import create_task_folder, load_task, shipped_task_names

BROKEN_SEED = '''
def fit_scaling_law(data_points, loss_values):
    raise RuntimeError("this seed never fits")


def scaling_law_func(data_points, params):
    return data_points[:, 0]
'''


def evolve(*args, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def write_csv(path: Path, groups=("small", "large"), sizes=6) -> Path:
    """A Chinchilla-shaped grid per group (values computed, noise-free: this tests plumbing, not
    discovery)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "params", "tokens", "loss"])
        for shift, group in enumerate(groups):
            for n in np.geomspace(1e7, 1e9, sizes):
                for d in np.geomspace(1e9, 1e11, sizes):
                    writer.writerow([group, n, d, 1.7 + 0.1 * shift + 400 / n**0.34 + 410 / d**0.28])
    return path


@pytest.fixture(scope="module")
def user_task(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own")
    folder = root / "chinchilla_like"
    create_task_folder(folder, write_csv(root / "runs.csv"), ["params", "tokens"], ["loss"], group_column="model",
                       test_column="params*tokens", test_fraction=0.2, param_cap=6)
    return folder


def test_tasks_new_splits_by_a_product_of_columns_and_records_how(user_task):
    task = load_task(user_task)
    compute = task.test.X[:, 0] * task.test.X[:, 1]
    for group in task.train.group_names():
        train = task.train.X[task.train.groups == group]
        assert compute[task.test.groups == group].min() >= (train[:, 0] * train[:, 1]).max()
    text = (user_task / "task.toml").read_text()
    assert 'column = "params*tokens"' in text and 'rule = "auto"' in text and "param_cap = 6" in text
    assert task.param_cap == 6 and task.validation.column == "params*tokens"


def test_auto_validation_reads_train_only(user_task, tmp_path):
    """The automatic rule must not move when the test rows change (it may not read them)."""
    before = load_task(user_task).validation
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("train.csv", "task.toml"):
        (copy / name).write_text((user_task / name).read_text())
    lines = (user_task / "test.csv").read_text().splitlines()
    (copy / "test.csv").write_text("\n".join(lines[:1] + [line.rsplit(",", 1)[0] + ",99.0" for line in lines[1:]]) + "\n")
    assert load_task(copy).validation == before


@pytest.mark.parametrize("args, fragment", [
    (["--features", "params,loss", "--targets", "loss"], "both a feature and a target"),
    (["--features", "params", "--targets", "loss", "--test-largest", "params", "abc"], "must be a number"),
    (["--features", "params", "--targets", "loss", "--test-largest", "flops", "0.2"], "no column (for --test-largest) 'flops'"),
    (["--features", "params", "--targets", "loss", "--validation", "0.3:x"], "fold count"),
])
def test_tasks_new_refuses_with_one_line(tmp_path, args, fragment):
    result = evolve("tasks", "new", tmp_path / "t", "--csv", write_csv(tmp_path / "d.csv"), *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr
    assert not (tmp_path / "t").exists()


def test_a_group_too_small_to_split_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    write_csv(path)
    with open(path, "a", newline="") as handle:
        csv.writer(handle).writerow(["lonely", 1e8, 1e10, 3.0])
    result = evolve("tasks", "new", tmp_path / "t", "--csv", path, "--features", "params,tokens", "--targets", "loss", "--group-column", "model")
    assert result.returncode == 2 and "lonely" in result.stderr and not (tmp_path / "t").exists()


def test_generic_seeds_fit_any_features_and_targets():
    for name in shipped_task_names():
        task = load_task(name)
        seeds = default_seeds(task)
        assert seeds and seeds[0][0].startswith("power_law_with_offset"), name  # "... without X" where the cap trims it
        assert all("def fit_scaling_law" in code and "def scaling_law_func" in code for _, code in seeds)


def test_a_task_without_seed_laws_runs_and_says_so(user_task, tmp_path):
    result = evolve("run", user_task, "--iterations", "3", "--seed", "0", "--run-dir", tmp_path / "run", "--islands", "1", "--workers", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "generic" in result.stderr and "power_law_with_offset" in result.stderr
    assert result.stderr.index("run directory") < result.stderr.index("  seed ")  # the header first: the seeds belong to the run it names
    assert "choosing the law from train alone" in result.stderr  # the minutes after the search are not silent
    assert "scoring the top" in result.stderr and "writing best.py" in result.stderr  # nor one line for all of them
    assert (tmp_path / "run" / "best.py").is_file()
    assert "asking the chosen law beyond the data" in result.stderr
    shown = json.loads(evolve("archive", tmp_path / "run", "show", best_id(tmp_path / "run"), "--json", "--no-formula").stdout)
    assert shown["extrapolation_warnings"] == []  # the true law keeps its trend: nothing to warn about
    text = evolve("archive", tmp_path / "run", "show", best_id(tmp_path / "run"), "--no-formula").stdout
    assert "the law keeps train's trends along every scale feature" in text


def best_id(run: Path) -> int:
    return int((run / "best.py").read_text().split("program ", 1)[1].split(",", 1)[0])


def test_a_failed_start_leaves_no_run_folder(user_task, tmp_path):
    seed = tmp_path / "broken.py"
    seed.write_text(BROKEN_SEED)
    result = evolve("run", user_task, "--seed-law", seed, "--iterations", "2", "--run-dir", tmp_path / "run", "--quiet", "--islands", "1", "--workers", "1")
    assert result.returncode == 2 and "no seed law scored" in result.stderr and "this seed never fits" in result.stderr
    assert not (tmp_path / "run").exists()


def test_resume_keeps_the_run_s_own_iterations_and_refuses_fixed_flags(user_task, tmp_path):
    run = tmp_path / "run"
    first = evolve("run", user_task, "--iterations", "2", "--seed", "1", "--run-dir", run, "--quiet", "--islands", "1", "--workers", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    again = evolve("run", "--resume", run, "--quiet")
    assert again.returncode == 0 and "2 iterations" in again.stdout  # not extended to the default 50
    refused = evolve("run", "--resume", run, "--islands", "3", "--quiet")
    assert refused.returncode == 2 and "--islands" in refused.stderr
    from evolve.store.rundir import resume_run, run_overview

    _, archive, _ = resume_run(run, iterations=5)  # --resume RUN --iterations 5: the run's plan is 5 from now on
    archive.close()
    assert run_overview(run, run / "archive.db")["planned_iterations"] == 5
    _, archive, _ = resume_run(run)
    archive.close()
    assert run_overview(run, run / "archive.db")["planned_iterations"] == 5
    fewer = evolve("run", "--resume", run, "--iterations", "1", "--quiet")  # a run cannot be un-run
    assert fewer.returncode == 2 and "already run 2 iterations" in fewer.stderr and "Traceback" not in fewer.stderr
    assert run_overview(run, run / "archive.db")["planned_iterations"] == 5  # refused: nothing changed


def test_tables_keep_whole_names_when_piped():
    result = evolve("tasks")
    assert result.returncode == 0
    for name in shipped_task_names():
        assert name in result.stdout
    assert "…" not in result.stdout


def test_tasks_lists_the_user_s_task_folders_and_names_a_broken_one(user_task, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "task.toml").write_text("features = \n")
    result = evolve("tasks", "--dir", user_task.parent)
    assert result.returncode == 0 and str(user_task) in result.stdout and "params, tokens → loss" in result.stdout
    listed = json.loads(evolve("tasks", "--json", cwd=user_task.parent).stdout)
    assert [s["path"] for s in listed if "path" in s] == ["chinchilla_like"]
    result = evolve("tasks", cwd=tmp_path)
    assert result.returncode == 0 and "not a usable task" in result.stderr and "broken" in result.stderr
    assert "Traceback" not in result.stderr
    missing = evolve("tasks", "--dir", tmp_path / "nowhere")
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1


def test_a_closed_pipe_is_a_quiet_exit():
    process = subprocess.Popen(f"{sys.executable} -m evolve tasks --json | head -c 10", shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=120)
    assert out == "[\n  {\n    \"" [:10] and "Error" not in err and "Traceback" not in err


def test_runs_takes_a_folder_and_says_when_it_has_none(tmp_path):
    result = evolve("runs", tmp_path)
    assert result.returncode == 0 and "no runs" in result.stdout
    assert json.loads(evolve("runs", tmp_path, "--json").stdout) == []


def test_version_and_help_for_every_run_option():
    result = evolve("--version")
    assert result.returncode == 0 and "evolve" in result.stdout
    for param in run_command.params:
        if isinstance(param, click.Option):
            assert param.help, param.name


def grid_power_law_sse(X: np.ndarray, y: np.ndarray, steps: int = 61) -> float:
    """The least squares of c + Σ a_i x_i^(-b_i), exponents on a grid over [0, 3], the linear
    coefficients solved exactly: an independent reference for the generic seed's fit."""
    import itertools

    scaled = X / np.exp(np.mean(np.log(X), axis=0))
    best = np.inf
    for b in itertools.product(np.linspace(0.0, 3.0, steps), repeat=X.shape[1]):
        design = np.column_stack([np.ones(len(X)), scaled ** -np.asarray(b)])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        best = min(best, float(np.sum((design @ coef - y) ** 2)))
    return best


def test_the_generic_power_law_is_the_plain_additive_power_law_and_its_fit_converges():
    """On real data (the held-out benchmark's misfitting set, 207 runs, 2 features), the
    generic seed's fit reaches the least squares of c + Σ a_i x_i^(-b_i) (the law the benchmark
    calls the plain power law) found by an exhaustive exponent grid, to within the grid step."""
    from evolve.scoring.in_sandbox import load_namespace

    task = load_task(Path(__file__).resolve().parents[1] / "bench" / "heldout" / "misfitting_openlm")
    code = dict(default_seeds(task))["power_law_with_offset"]
    namespace = load_namespace(code)
    X, y = np.asarray(task.train.X, float), np.asarray(task.train.y, float)[:, 0]
    fitted = np.asarray(namespace["scaling_law_func"](X.copy(), namespace["fit_scaling_law"](X.copy(), y.copy())))
    assert np.ravel(namespace["fit_scaling_law"](X.copy(), y.copy())).size == 2 * X.shape[1] + 1
    assert float(np.sum((fitted - y) ** 2)) <= grid_power_law_sse(X, y) * (1 + 1e-6)



def test_evolve_tasks_counts_train_rows_as_tasks_new_does(user_task, capsys):
    """`evolve tasks new` says "N train rows (V of them held out ...)"; `evolve tasks` showed
    N - V under "train" (a new-user trial read the two as disagreeing)."""
    import json

    from evolve.cli.main import main
    from evolve.tasks import load_task

    task = load_task(user_task)
    summary = task.summary()
    assert summary["train_rows"] == len(task.train) and summary["fit_rows"] + summary["validation_rows"] == len(task.train)
    assert main(["tasks", "--json", "--dir", str(Path(user_task).parent)]) == 0
    listed = [s for s in json.loads(capsys.readouterr().out) if s["name"] == task.name]
    assert listed and listed[0]["train_rows"] == len(task.train)


def test_feature_names_never_collide_with_the_generated_code_s_names(tmp_path):
    """New-user trial 2026-12-04: a column named `C` became the variable `c` and overwrote the
    constant the generated law unpacks as `c` (seeds scored R² -2e24); `N (params)` and
    `N params` both became `n_params`, so the search used one of the two. Identifiers are
    distinct and never a parameter, keyword or builtin name, and the seeds fit."""
    from evolve.config import ScorerConfig
    from evolve.propose.grammar import task_context
    from evolve.scoring.scorer import Scorer

    source = write_csv(tmp_path / "runs.csv")
    scores = {}
    for header in ("params,tokens", "C,N params"):  # the same numbers under plain and colliding names
        renamed = tmp_path / f"{header}.csv"
        renamed.write_text(source.read_text().replace("model,params,tokens,loss", f"model,{header},loss", 1))
        folder = tmp_path / header.replace(",", "_").replace(" ", "_")
        create_task_folder(folder, renamed, header.split(","), ["loss"], group_column="model", test_column=header.split(",")[0], test_fraction=0.2)
        task = load_task(str(folder))
        idents = [f.ident for f in task_context(task).features]
        assert len(set(idents)) == 2 and "c" not in idents
        with Scorer(ScorerConfig(isolate=False)) as scorer:
            scores[header] = {name: scorer.score(code, task, "validation") for name, code in default_seeds(task)}
    plain, colliding = scores.values()
    assert plain.keys() == colliding.keys() and all(e.ok for e in colliding.values())
    for name in plain:
        assert colliding[name].metrics.r2 == pytest.approx(plain[name].metrics.r2, abs=1e-9), name
    from evolve.propose.grammar import feature_identifiers

    assert feature_identifiers(("N (params)", "N params", "len", "if", "a1")) == ["n_params", "n_params_2", "x_len", "x_if", "x_a1"]


def test_an_unrecovered_formula_shows_the_code_that_computes_the_law():
    """New-user trial: with no formula, `evolve run` printed the grammar's scaling_law_func,
    a dispatcher that shows nothing of the law; it prints the predict_ functions now."""
    from evolve.cli.run_cmd import law_source

    task = load_task("sft_scaling_law")
    (_, generated), *_ = default_seeds(task)
    shown = law_source(generated)
    assert "def predict_" in shown and "def scaling_law_func" not in shown and " = p" in shown
    assert law_source(BROKEN_SEED).startswith("def scaling_law_func")
