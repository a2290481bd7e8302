"""The Python API on a task with several groups (parallel) and one with several targets
(domain_mixture): every call, with formulas checked against the program's own predictions."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sympy

import evolve
from evolve.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    return evolve.run("parallel_scaling_law", iterations=2, seed=0, run_dir=tmp_path_factory.mktemp("api") / "parallel", quiet=True,
                      proposer="offline", archive={"islands": 1}, scorer={"workers": 2})


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory):
    return evolve.run("domain_mixture_scaling_law", iterations=0, seed=0, run_dir=tmp_path_factory.mktemp("api") / "mix", quiet=True,
                      proposer="offline", archive={"islands": 1}, scorer={"workers": 2})


def test_version():
    assert re.match(r"\d+\.\d+", evolve.__version__)


def test_programs_frame_and_best(sft_run):
    frame = sft_run.programs()
    assert {"id", "iteration", "island", "proposer", "status", "n_params", "val_r2", "test_r2", "formula"} <= set(frame.columns)
    assert len(frame) == len(sft_run.records)
    formulas = frame.set_index("id")["formula"]
    assert formulas[sft_run.returned_id] and formulas.drop(sft_run.returned_id).isna().all()  # the returned law's, by default
    best = sft_run.best  # the law the run returned: the program of its best.py
    assert sft_run.returned_id is not None and best.record.id == sft_run.returned_id
    assert f"program {best.record.id}, task" in (sft_run.path / "best.py").read_text().splitlines()[0]
    assert sft_run.best_by_validation.record.r2 == frame["val_r2"].max()
    assert evolve.open_run(sft_run.path).best.record.id == best.record.id
    assert repr(sft_run).startswith("<evolve.Run ") and len(repr(sft_run)) < 300  # not the task's rows
    groups = sft_run.test_by_group()  # the returned law on test, one row per group, worst first
    assert set(groups["group"]) == set(sft_run.task.test.group_names())
    assert list(groups["mean_relative_error"]) == sorted(groups["mean_relative_error"], reverse=True)
    assert groups["rows"].sum() == len(sft_run.task.test.X)
    from evolve.extrapolation import stored_warnings
    from evolve.store.rundir import open_read_only

    with open_read_only(sft_run.path) as archive:  # the run's end checked its law beyond the data, as the API does
        assert stored_warnings(archive, best.record.id) == best.extrapolation_warnings()


def test_fit_predict_interval_and_formula_on_several_groups(sft_run):
    law = sft_run.best.fit()
    assert set(law.params) == set(sft_run.task.train.group_names())
    group = sft_run.task.test.group_names()[0]
    X = sft_run.task.test.X[sft_run.task.test.groups == group]
    predicted = law.predict(X, group)
    assert predicted.shape == (len(X),) and np.isfinite(predicted).all()
    with pytest.raises(evolve.LawError, match=r"^the task has \d+ groups: name one \("):
        law.predict(X)  # several groups: which one is not guessed
    low, high = law.interval(X, group, level=0.9, resamples=6)
    assert (low <= predicted).all() and (predicted <= high).all()
    narrow = law.interval(X, group, level=0.5, resamples=6)  # the calibration is kept: only the refits again
    assert (narrow[0] >= low - 1e-12).all() and (narrow[1] <= high + 1e-12).all()
    scores = law.calibration_scores(6)
    assert scores.shape == (int(sum(len(h) for _, h in sft_run.task.validation_folds())), 1) and np.isfinite(scores).all()
    per_row = law.interval(sft_run.task.test.X, sft_run.task.test.groups, level=0.9, resamples=6)  # one name per row
    assert np.allclose(per_row[0][sft_run.task.test.groups == group], low)
    cached = sorted((sft_run.path / "cache").glob("interval-*.npz"))
    assert len(cached) == 1  # the calibration is kept in the run's folder for the next session
    again = evolve.open_run(sft_run.path).law(law.id).fit()
    again._calibration = None  # a fresh Law reads the kept calibration: it cannot calibrate again
    assert np.array_equal(again.interval(X, group, level=0.9, resamples=6)[0], low)
    cached[0].write_bytes(b"not an npz")  # a damaged cache is ignored and written afresh
    assert np.array_equal(evolve.open_run(sft_run.path).law(law.id).fit().interval(X, group, level=0.9, resamples=6)[1], high)
    assert len(list((sft_run.path / "cache").glob("interval-*.npz"))) == 1
    from evolve.intervals import load_scores

    assert load_scores(cached[0], 1) is not None  # written afresh, not left damaged
    flaky = evolve.open_run(sft_run.path).law(law.id).fit()
    flaky.cache_dir = sft_run.path / "cache-flaky"
    real_batch = flaky._batch
    flaky._batch = lambda jobs, calls=[]: None if calls.append(1) or len(calls) == 9 else real_batch(jobs)  # a calibration batch (after the group's own 7) fails
    flaky.interval(X, group, level=0.9, resamples=6)
    assert not list(flaky.cache_dir.glob("*.npz"))  # a calibration missing refits is not kept for later sessions
    flaky._batch = lambda jobs, calls=[]: None if calls.append(1) or len(calls) == 1 else real_batch(jobs)  # the fit fails once
    with pytest.raises(evolve.LawError, match="passed when tried again"):
        flaky.interval(X, group, level=0.9, resamples=6)  # an error, not an interval of uninitialised memory
    expression = law.sympy(group)
    symbols = [sympy.Symbol(f, positive=True) for f in sft_run.task.features]
    rows = sft_run.task.train.X[sft_run.task.train.groups == group]
    from_formula = sympy.lambdify(symbols, expression, "numpy")(*rows.T)
    assert np.allclose(from_formula, law.predict(rows, group), rtol=1e-6)
    assert "Max" not in str(expression) or "1.0e-12" not in str(expression)
    assert isinstance(law.latex(group), str)
    with pytest.raises(evolve.LawError, match="does not apply"):
        law.optimal(compute=1e22, group=group)


def test_several_targets(mixture_run):
    law = mixture_run.best.fit()
    group = mixture_run.task.train.group_names()[0]
    X = mixture_run.task.test.X[mixture_run.task.test.groups == group]
    predicted = law.predict(X, group)
    assert predicted.shape == (len(X), len(mixture_run.task.targets))
    expressions = law.sympy(group)
    assert isinstance(expressions, list) and len(expressions) == len(mixture_run.task.targets)
    low, high = law.interval(X, group, resamples=6)
    assert low.shape == predicted.shape and (high >= low).all()


def test_the_seed_laws_are_scored_on_test_beside_the_top(tmp_path):
    """The reference a user compares the returned law with: the seeds' test R² is stored
    even when they are not among the top re-scored (a new user had to score them by hand)."""
    run = evolve.run("parallel_scaling_law", iterations=2, seed=0, run_dir=tmp_path / "run", quiet=True, proposer="offline",
                     archive={"islands": 1}, scorer={"workers": 2}, top_k_test=1)
    frame = run.programs()
    seeds = frame[(frame.proposer == "seed") & (frame.status == "ok")]
    assert len(seeds) >= 2 and seeds.test_r2.notna().all()
    assert frame.test_r2.notna().sum() <= 1 + len(seeds)  # the top one and the seeds only


def test_the_rows_a_level_needs_are_counted_at_once_even_near_one():
    """`--interval 0.999999999` counted up to a billion to say how many rows it needed."""
    import time

    from evolve.api import rows_needed

    assert [rows_needed(level) for level in (0.5, 0.8, 0.9, 0.95, 0.99)] == [1, 4, 9, 19, 99]
    started = time.monotonic()
    assert rows_needed(1 - 1e-9) >= 999_999_999
    assert time.monotonic() - started < 1.0


def test_conformal_multiplier_is_the_finite_sample_quantile():
    from evolve.intervals import conformal_multiplier

    scores = np.arange(1, 20, dtype=float).reshape(-1, 1)  # 19 scores: the 18th smallest at 90%
    multiplier, enough = conformal_multiplier(scores, 0.9)
    assert multiplier.tolist() == [18.0] and enough
    multiplier, enough = conformal_multiplier(scores[:5], 0.9)  # too few for 90%: the largest, flagged
    assert multiplier.tolist() == [5.0] and not enough
    multiplier, enough = conformal_multiplier(scores[:3] / 100, 0.9)  # too few, and small: no narrower than normal errors
    assert multiplier.tolist() == [pytest.approx(1.6448536)] and not enough


def test_a_task_with_one_group_needs_no_group_name_and_a_tiny_one_warns_its_interval_is_unsure(tmp_path):
    """A new user's 7-row CSV: 3 validation rows calibrate a 90% interval that needs 9, so
    the interval says its level is not guaranteed and is no narrower than normal errors of
    its scale would need (it was a tenth of the law's residuals and covered none of its rows)."""
    import csv

    from evolve.tasks import create_task_folder

    with open(tmp_path / "tiny.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["params", "tokens", "loss"])
        for k, n in enumerate(np.geomspace(1e7, 1e9, 7)):
            writer.writerow([n, 20 * n, 1.8 + 400 / n**0.34 + 0.004 * (-1) ** k])
    create_task_folder(tmp_path / "tiny", tmp_path / "tiny.csv", ["params", "tokens"], ["loss"], test_column="params", test_fraction=0.2)
    run = evolve.run(str(tmp_path / "tiny"), iterations=0, seed=0, run_dir=tmp_path / "run", quiet=True, proposer="offline",
                     archive={"islands": 1}, scorer={"workers": 1})
    law = run.best.fit()
    X = run.task.train.X
    assert np.array_equal(law.predict(X), law.predict(X, "all_data"))  # the only group, by default
    with pytest.warns(evolve.IntervalWarning, match="calibrated on 3 validation row"):
        low, high = law.interval(X, resamples=6)
    residual = np.abs(law.predict(X) - run.task.train.y.ravel())
    assert np.median(high - low) > np.median(residual)  # not a sliver inside the law's own errors
    from evolve.cli.main import main

    (tmp_path / "new.csv").write_text("params,tokens\n2e9,4e10\n")
    assert main(["predict", str(tmp_path / "run"), "--csv", str(tmp_path / "new.csv"), "-o", str(tmp_path / "out.csv")]) == 0
    header = (tmp_path / "out.csv").read_text().splitlines()[0]
    assert header == "params,tokens,predicted_loss"  # no group column the user never had


def test_export_is_standalone(sft_run, tmp_path):
    law = sft_run.best.fit()
    path = law.export(tmp_path / "law.py")
    text = path.read_text()
    assert not re.search(r"^\s*(from evolve|import evolve)", text, re.M)
    assert "come from Law.fit(): each group fitted on all its training rows" in text and "come from the stored" not in text
    assert "other groups have their own constants" in text  # sft has 42 groups
    script = f"""
import sys, numpy as np
sys.modules['evolve'] = None  # evolve cannot be imported
namespace = {{}}
exec(open({str(path)!r}).read(), namespace)
X = np.array({sft_run.task.train.X[:6].tolist()})
y = np.array({sft_run.task.train.y[:6, 0].tolist()})
p = namespace['fit_scaling_law'](X, y)
print(np.asarray(namespace['scaling_law_func'](X, p)).shape)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_optimal_on_a_law_in_size_and_data(tmp_path):
    run = evolve.run("data_constrained_scaling_law", iterations=0, seed=0, run_dir=tmp_path / "dc", quiet=True,
                     proposer="offline", archive={"islands": 1})
    law = run.best.fit()
    group = run.task.train.group_names()[0]
    small, large = law.optimal(compute=1e20, group=group), law.optimal(compute=1e22, group=group)
    single = law.export(tmp_path / "dc_law.py").read_text()
    assert "# The law of group" in single and "other groups" not in single  # one group: no other constants to speak of
    assert small["N"] * small["D"] * 6 == pytest.approx(1e20, rel=1e-6)
    assert large["loss"] <= small["loss"]
    assert isinstance(small["within_data"], bool) and small["negative_loss"] is False  # losses stay positive here
    assert law.optimal(compute=1e20) == small  # one group: it need not be named
    far = law.optimal(compute=1e40, group=group)  # 1e18 times beyond the data's compute
    assert far["within_data"] is False
    from evolve.report.law_plots import plot_allocation
    from evolve.report.law_view import allocation

    shown = allocation(law, group)  # what the report draws: iso-loss over (N, D), optimal points on their compute lines
    assert shown.loss.shape == (len(shown.D), len(shown.N)) and np.isfinite(shown.loss).any()
    for point in shown.optimal:
        assert 6 * point["N"] * point["D"] == pytest.approx(point["compute"], rel=1e-6)
        row = [point["N"] if f == "params" else point["D"] if f == "tokens" else shown.held[f] for f in run.task.features]
        assert point["loss"] == pytest.approx(float(np.ravel(law.predict(np.array([row]), group))[0]), rel=1e-6)
    assert plot_allocation(shown, "loss") is not None
    from evolve.report.law_plots import plot_extrapolation
    from evolve.report.law_view import extrapolations, sweep_feature

    (curve,) = extrapolations(law, [group])  # a slice: the other features held at one train row
    j, train = sweep_feature(run.task), run.task.train.X[run.task.train.groups == group]
    others = [i for i, f in enumerate(run.task.features) if i != j]
    same = np.all(train[:, others] == [curve.held[run.task.features[i]] for i in others], axis=1)
    assert same.any() and (curve.train_on_slice == same).all()  # drawn solid: the rows the curve predicts
    assert not curve.train_on_slice.all()  # this data set's rows differ in the held features: the rest drawn apart
    assert len(curve.test_on_slice) == len(curve.test_x)
    assert plot_extrapolation([curve], "loss") is not None


def test_one_message_for_an_unknown_group_everywhere(tmp_path, capsys):
    """The API, `evolve predict` and `evolve optimize` refuse a group the task lacks in the same words."""
    run = evolve.run("data_constrained_scaling_law", iterations=0, seed=0, run_dir=tmp_path / "dc", quiet=True,
                     proposer="offline", archive={"islands": 1})
    with pytest.raises(evolve.LawError, match=r"^unknown group 'nope' \(the task's groups: "):
        run.best.predict(np.array([[1e9, 1e10, 1e10]]), "nope")
    assert main(["optimize", str(run.path), "--compute", "1e22", "--group", "nope"]) == 2
    assert "unknown group 'nope' (the task's groups: " in capsys.readouterr().err
    assert main(["optimize", str(run.path), "--compute", "1e22"]) == 0
    shown = capsys.readouterr()
    assert "minimise predicted loss" in shown.out.replace("\n", " ") and "warning" not in shown.err
    from types import SimpleNamespace

    from evolve.cli.use_cmd import rises_with_scale

    train = run.task.train  # new-user trial: optimize minimised an accuracy without a word
    assert not rises_with_scale(run.task, 1, 2)
    assert rises_with_scale(SimpleNamespace(train=SimpleNamespace(X=train.X, y=-train.y)), 1, 2)


def test_predict_and_optimize_commands(sft_run, tmp_path, capsys):
    rows = tmp_path / "new.csv"
    lines = (ROOT / "tasks/parallel_scaling_law/test.csv").read_text().splitlines()[:4]
    rows.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.csv"
    assert main(["predict", str(sft_run.path), "--csv", str(rows), "--interval", "0.9", "-o", str(out)]) == 0
    given, written = list(csv.DictReader(rows.open())), list(csv.DictReader(out.open()))
    header = out.read_text().splitlines()[0].split(",")
    assert header == lines[0].split(",") + ["predicted_loss", "loss_low", "loss_high"]  # the input's columns kept, in order
    assert [{k: w[k] for k in g} for g, w in zip(given, written)] == given and len(written) == 3
    assert all(float(w["loss_low"]) <= float(w["predicted_loss"]) <= float(w["loss_high"]) for w in written)
    again = tmp_path / "again.csv"  # the output read back in, without --interval: its old bounds are not kept
    assert main(["predict", str(sft_run.path), "--csv", str(out), "-o", str(again)]) == 0
    rewritten = list(csv.DictReader(again.open()))
    assert [r["loss_low"] for r in rewritten] == [""] * 3 and [r["predicted_loss"] for r in rewritten] == [w["predicted_loss"] for w in written]
    assert "left empty" in capsys.readouterr().err
    started = time.monotonic()
    bare = tmp_path / "bare.csv"
    bare.write_text("num_params,parallel_size\n545340552,8\n")
    assert main(["predict", str(sft_run.path), "--csv", str(bare), "--group", "no-such-group"]) == 2
    assert "unknown group 'no-such-group'" in capsys.readouterr().err and time.monotonic() - started < 5  # before any fit
    bare.write_text("num_params,parallel_size,group\n545340552,8,nope\n545340552,4,also-not\n")
    assert main(["predict", str(sft_run.path), "--csv", str(bare)]) == 2
    err = capsys.readouterr().err
    assert f"{bare}: unknown groups 'also-not', 'nope' (the task's groups: " in err and len(err.strip().splitlines()) == 1
    assert main(["optimize", str(sft_run.path), "--compute", "1e22"]) == 2  # no size and data features: one line
    assert "does not apply" in capsys.readouterr().err


def test_readme_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes law.py where it runs
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## Python API.*?```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace("iterations=100", "iterations=0").replace('"runs/sft"', repr(str(tmp_path / "sft")))
    namespace: dict = {}
    exec(compile(code, "README", "exec"), namespace)


def test_predict_notes_a_prediction_across_zero_from_every_train_value():
    """`evolve predict` says so when the law predicts a negative loss (a new user saw −2801
    printed with no word), and says nothing for a target whose train values take both signs."""
    from types import SimpleNamespace

    from evolve.cli.use_cmd import across_zero

    task = SimpleNamespace(targets=("loss", "delta"), train=SimpleNamespace(y=np.array([[2.0, -1.0], [3.0, 1.0], [0.0, 0.5]])))
    notes = across_zero(task, np.array([[-2801.0, -5.0], [2.5, 9.0], [-1.0, 0.0]]))
    assert notes == ["2 row(s) have predicted loss below zero, where no train row has it: the law is past anything its data hold there"]
    assert across_zero(task, np.array([[1.0, -5.0]])) == []
