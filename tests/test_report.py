"""`evolve report`: a self-contained HTML file with its sections and embedded plots."""

from __future__ import annotations

import base64
import html
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from evolve.config import ScorerConfig
from evolve.metrics import Metrics, compute_metrics, failed_metrics
from evolve.records import ProgramRecord
from evolve.report.analysis import pareto_front, split_fit
from evolve.scoring.scorer import Evaluation, Scorer
from evolve.tasks import load_task
from evolve.report.export import params_source
from evolve.store.rundir import open_read_only, run_task
from tests.test_inspect import (
    TASK,
    cli_json,
    computes_the_program,
    digest,
    make_built_run,
    make_real_run,
    run_cli,
)

SECTIONS = ("summary", "progress", "best-law", "fit", "extrapolation", "allocation", "pareto", "top", "grid", "lineage", "failures", "usage")
IMAGE = re.compile(r'<img\b[^>]*\bsrc="([^"]*)"')
BENCH = Path(__file__).resolve().parent.parent / "bench" / "report_screenshot.py"


@pytest.fixture(scope="module")
def real_report(tmp_path_factory) -> tuple[Path, str]:
    run = make_real_run(tmp_path_factory)
    output = tmp_path_factory.mktemp("report") / "report.html"
    from evolve.report.html import write_report

    before = digest(run)
    write_report(run, output)
    assert digest(run) == before  # the report reads the run, never writes it
    return output, output.read_text(encoding="utf-8")


def images(text: str) -> list[np.ndarray]:
    decoded = []
    for source in IMAGE.findall(text):
        assert source.startswith("data:image/png;base64,")
        decoded.append(mpimg.imread(io.BytesIO(base64.b64decode(source.split(",", 1)[1], validate=True)), format="png"))
    return decoded


def test_report_has_every_section_and_decodable_plots(real_report):
    _, text = real_report
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    alts = re.findall(r'<img alt="([^"]*)"', text)
    for expected in ("best validation R² over iterations", "MAP-Elites grids", "Pareto front", "predicted against actual", "formula of the best law",
                     "extrapolation with interval band"):
        assert expected in alts
    assert any(a.startswith("loss against") for a in alts)
    decoded = images(text)
    assert len(decoded) == len(alts) >= 6
    assert all(image.shape[0] > 30 and image.shape[1] > 100 for image in decoded)


def test_report_is_self_contained(real_report):
    _, text = real_report
    assert not re.search(r'\b(?:src|href)\s*=\s*"(?!data:|#)', text)
    assert "<script" not in text and "<link" not in text and "@import" not in text


def test_report_shows_the_best_law_and_its_formula(capsys, real_report, tmp_path_factory):
    _, text = real_report
    run = make_real_run(tmp_path_factory)
    best = cli_json(capsys, "archive", run, "list", "--top", "1")[0]
    assert f"#{best['id']}" in text
    assert f"{best['validation_r2']:.4f}" in text and f"{best['test_r2']:.4f}" in text
    assert "checked against the program on the group's rows" in text  # the formula was recovered and verified
    assert "LaTeX" in text and "p_{0}" not in text  # the fitted constants are in


def shown_formulas(text: str) -> tuple[str, list[str]]:
    """The group and the `target = formula` lines of the report's best law."""
    group = html.unescape(re.search(r"The law of group <b>(.*?)</b>", text).group(1))
    return group, [html.unescape(line) for line in re.findall(r'<div class="formula"><code>(.*?)</code></div>', text)]


def test_report_formula_computes_the_program(real_report, tmp_path_factory):
    _, text = real_report
    run = make_real_run(tmp_path_factory)
    with open_read_only(run) as archive:
        task, best = run_task(archive), archive.programs(failed=False, order="r2")[0]
    group, lines = shown_formulas(text)
    assert len(lines) == 1 and lines[0].startswith("loss = ")
    assert computes_the_program(lines[0], best.code, task, group, params_source(best)[1].params[group])


def test_report_pareto_front_has_test_r2_for_every_point(real_report, tmp_path_factory):
    _, text = real_report
    run = make_real_run(tmp_path_factory)
    with open_read_only(run) as archive:
        front = pareto_front(archive.programs(order="id"))
    table = text[text.index('<section id="pareto">'):text.index('<section id="top">')]
    rows = re.findall(r"<tr><td>\d+</td><td>#(\d+)</td><td>([^<]*)</td><td>([^<]*)</td>", table)
    assert [int(r[0]) for r in rows] == [r.id for r in front]
    assert all(re.fullmatch(r"-?\d+\.\d{4}", r[2]) for r in rows)  # a test R² for every point, none missing


def test_report_extrapolates_with_a_band_and_says_where_allocation_does_not_apply(real_report):
    _, text = real_report
    section = text[text.index('<section id="extrapolation">'):text.index('<section id="allocation">')]
    assert "extrapolation with interval band" in section and "2 of 2 groups shown" in section
    assert "Beyond the data (up to 100x the largest train value of each scale feature)" in section  # the run's end checked it
    allocation = text[text.index('<section id="allocation">'):text.index('<section id="pareto">')]
    assert "Does not apply here" in allocation and "model-size and a data feature" in allocation


def test_report_of_a_task_with_several_targets(tmp_path):
    import evolve

    run = evolve.run("domain_mixture_scaling_law", iterations=0, seed=0, run_dir=tmp_path / "mix", quiet=True, proposer="offline",
                     archive={"islands": 1}, scorer={"workers": 2})
    from evolve.report.html import write_report

    text = write_report(run.path, tmp_path / "report.html").read_text()
    group, lines = shown_formulas(text)
    best = run.best.record
    params = params_source(best)[1].params[group]
    assert [line.split(" = ")[0] for line in lines] == list(run.task.targets)
    for k, line in enumerate(lines):
        assert computes_the_program(line, best.code, run.task, group, params, target=k)
    assert "extrapolation with interval band" in text and len(images(text)) == len(re.findall(r"<img alt=", text))


def test_report_without_running_code_shows_failures_and_tokens(capsys, tmp_path_factory, tmp_path):
    run = make_built_run(tmp_path_factory)
    output = tmp_path / "out.html"
    code, out, _ = run_cli(capsys, "report", run, "-o", output, "--no-exec")
    assert code == 0 and str(output) in out
    text = output.read_text()
    alts = re.findall(r'<img alt="([^"]*)"', text)
    assert "failures by kind" in alts and "tokens spent" in alts and "lineage of the best program" in alts
    assert "predicted against actual" not in alts and "formula of the best law" not in alts
    assert "syntax_error" in text and "--no-exec" in text
    assert len(images(text)) == len(alts)


def test_report_of_a_missing_run_is_a_one_line_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "report", tmp_path / "missing")
    assert code == 2 and err.startswith("evolve: error:") and err.count("\n") == 1


def test_split_fit_pairs_predictions_with_their_rows():
    """Predictions come in sorted-group order; paired rows must reproduce the scorer's R²."""
    from tests.test_inspect import PARALLEL_LAW

    task = load_task(TASK)
    with Scorer(ScorerConfig(isolate=False)) as scorer:
        for split in ("train", "validation", "test"):
            evaluation = scorer.score(PARALLEL_LAW, task, split)
            fit = split_fit(task, split, evaluation)
            assert fit is not None and len(fit.groups) == len(fit.actual) == len(fit.predicted)
            assert list(fit.groups) == sorted(fit.groups)
            assert compute_metrics(fit.predicted, fit.actual).r2 == pytest.approx(evaluation.metrics.r2, abs=1e-12)


def record(rid: int, n_params: int | None, r2: float, code: str | None = None, status: str = "ok") -> ProgramRecord:
    metrics = failed_metrics(1) if status != "ok" else Metrics(r2, 1 - r2, 0.0, 1 / (2 - r2), (r2,), (1 - r2,), (0.0,))
    evaluation = Evaluation(status, "validation", metrics, n_params=n_params)
    return ProgramRecord(code or f"PROGRAM = {rid}", evaluation, id=rid)


def test_pareto_front_keeps_only_non_dominated_programs():
    records = [
        record(1, 3, 0.90),
        record(2, 3, 0.95),  # beats 1 at the same size
        record(3, 5, 0.93),  # more parameters, worse: dominated by 2
        record(4, 6, 0.99),
        record(5, 2, 0.50),
        record(6, 6, 0.99, code="PROGRAM  =  4  # the same program as 4, laid out otherwise"),  # counted once
        record(7, 1, 0.99, status="nan"),  # failures never count
    ]
    front = pareto_front(records)
    assert [(r.id, r.n_params) for r in front] == [(5, 2), (2, 3), (4, 6)]
    assert [round(r.r2, 6) for r in front] == [0.5, 0.95, 0.99]


@pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(), reason="chromium is not installed")
@pytest.mark.skipif(os.environ.get("EVOLVE_BROWSER_TEST") != "1", reason="slow (about 15 s): set EVOLVE_BROWSER_TEST=1")
def test_report_renders_in_headless_chromium(real_report, tmp_path):
    path, _ = real_report
    done = subprocess.run([sys.executable, str(BENCH), str(path), "-o", str(tmp_path / "shot.png")], check=False, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout.splitlines()[-1]


def test_the_group_plot_puts_the_split_column_on_its_axis_and_every_train_row_on_it():
    # a params*tokens split: the x axis is the product it names, not params under that label;
    # a train row sharing params with a validation row (another tokens value) is still drawn
    from evolve.report.analysis import SplitFit
    from evolve.report.plots import axis_values, draw_group, pyplot, scale_axis

    assert scale_axis(("params", "tokens"), "params*tokens") == ((0, 1), "params*tokens")
    assert scale_axis(("params", "tokens"), "compute") == ((0,), "params")  # not a feature: the first feature
    assert scale_axis(("lr", "tokens"), "params*tokens") == ((1,), "tokens")
    X = np.array([[1e8, 1e9], [1e8, 2e9], [2e8, 4e9], [4e8, 8e9]])
    y = np.array([[3.0], [2.9], [2.7], [2.5]])
    groups = np.array(["a"] * 4, dtype=object)
    train = SplitFit("train", X[:3], y[:3], y[:3], groups[:3], 1.0)
    validation = SplitFit("validation", X[1:2], y[1:2], y[1:2], groups[1:2], 1.0)  # held out from train
    test = SplitFit("test", X[3:], y[3:], y[3:], groups[3:], 1.0)
    ax = pyplot().subplots()[1]
    draw_group(ax, {"train": train, "validation": validation, "test": test}, "a", (0, 1), False)
    drawn = {c.get_label(): c.get_offsets()[:, 0].tolist() for c in ax.collections}
    assert drawn["train data"] == [1e17, 8e17]  # row 0 shares params with the validation row: kept
    assert drawn["validation data"] == [2e17] and drawn["test data"] == [3.2e18]
    assert axis_values(X, (0, 1)).tolist() == (X[:, 0] * X[:, 1]).tolist()


def test_a_formula_image_is_not_drawn_past_the_latex_cap():
    """The parent makes a law's LaTeX again from its formula, past the sandbox's check of
    the child's: a 400-term sum took 15 s to draw into a 1.1 MB image (attack round 4)."""
    from evolve.report.plots import formula_image
    from evolve.scoring.formula_jobs import MAX_LATEX_CHARS

    assert formula_image(("x^{2}",), ("loss",)) is not None
    assert formula_image(("x + " * (MAX_LATEX_CHARS // 4) + "1",), ("loss",)) is None


def test_the_formula_image_draws_every_character_of_a_column_name():
    """mathtext has no \\textasciitilde, \\textasciicircum or \\textbackslash: a column named
    `a~b` was drawn as a tab and the command's letters. The image uses the forms it knows,
    and a `$` in a target name does not start mathematics."""
    from matplotlib.mathtext import MathTextParser

    from evolve.report.plots import formula_image, mathtext
    from evolve.symbolic import latex_name

    def drawn(latex: str) -> str:
        return "".join(chr(glyph[2]) for glyph in MathTextParser("path").parse(f"${latex}$").glyphs)

    name = latex_name("a~b^c\\d $e")
    assert drawn(mathtext(name)) == "a~b^c\\d $e"
    assert drawn(mathtext(latex_name("x\\textasciitilde{}"))) == "x\\textasciitilde{}"  # a name's own text stays text
    assert formula_image((name + r" \cdot 2",), ("loss",)) is not None
    assert formula_image((name, name), ("l$1", "l2")) is not None


def test_the_extrapolation_slice_holds_the_other_features_where_test_lies():
    """Of the train rows at the largest swept value, the slice holds the others at their
    largest (it held tokens at 1e10 with every test point near 3e11)."""
    import numpy as np

    from evolve.report.law_view import slice_row

    train = np.array([[1e9, 1e10], [1e9, 3e11], [1e8, 5e11], [1e9, 1e11]])
    assert slice_row(train, 0).tolist() == [1e9, 3e11]
