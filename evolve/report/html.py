"""`evolve report RUN`: one self-contained HTML file that shows what a run found.

Everything is embedded: plots are base64 PNGs drawn with matplotlib's Agg backend,
formulas are text (and a mathtext PNG), styles are inline; nothing is fetched from the
network when the file is opened. The run database is opened read-only.

The best law's fit plots need its predictions, so its code is run through the sandboxed
Scorer (train, validation and test splits); its formula is recovered in an isolated
child process (evolve.scoring.formula_jobs). `run_code=False` skips both.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path


from evolve.metrics import worst_first
from evolve.records import ProgramRecord
from evolve.report.analysis import distinct_best, failure_counts, front_test_r2, pareto_front, report_scorer_config, score_best
from evolve.report.law_plots import plot_allocation, plot_extrapolation, plot_pareto_front
from evolve.report.plots import (
    formula_image,
    plot_failures,
    plot_grids,
    plot_groups,
    plot_lineage,
    plot_parity,
    plot_progress,
    plot_tokens,
)
from evolve.text import format_r2, format_timestamp, safe_text

TOP_PROGRAMS = 10


# ---------------------------------------------------------------- gathering


@dataclass
class Report:
    """Everything the template shows; plots are base64 PNG strings or None."""

    run: str
    task: object
    meta: dict
    records: list[ProgramRecord]
    best: ProgramRecord | None
    front: list[ProgramRecord]
    top: list[ProgramRecord]
    chain: list[ProgramRecord]
    failures: list[tuple[str, int]]
    usage: dict
    formulas: dict = field(default_factory=dict)
    fits: dict = field(default_factory=dict)
    fit_note: str = ""
    plots: dict = field(default_factory=dict)
    groups_shown: tuple[int, int] = (0, 0)
    ran_code: bool = True
    front_test: dict = field(default_factory=dict)  # test R² of each Pareto program, for reporting
    curves: list = field(default_factory=list)  # law_view.Extrapolation of the best law
    curve_note: str = ""
    allocation: object = None  # law_view.Allocation, or None with allocation_note saying why
    allocation_note: str = ""
    test_groups: list = field(default_factory=list)  # (group, scores) of the best law on test, worst first (metrics.group_scores)
    beyond: list | None = None  # what the run's end found the best law doing beyond the data (evolve.extrapolation); None: not checked


def gather(run: Path, run_code: bool) -> Report:
    from evolve.extrapolation import stored_warnings
    from evolve.store.rundir import open_read_only as open_run, returned_law, run_task, tokens_of

    with open_run(run) as archive:
        task = run_task(archive)
        records = archive.programs(order="id")
        ranked = archive.programs(failed=False, order="r2")
        best = returned_law(archive)  # the law the run returned (best.py), as `evolve run` printed it
        grids = {i: archive.grid(i) for i in range(archive.config.islands)}
        chain = archive.lineage(best.id) if best else []
        meta = {key: archive.get_meta(key) for key in ("config", "task", "started_at", "finished_at", "status", "iteration")}
        param_bins, complexity_bins = archive.config.param_bins, archive.config.complexity_bins
        usage = archive.get_meta("usage") or tokens_of(records)
        beyond = stored_warnings(archive, best.id if best else None)
    report = Report(
        run=str(run), task=task, meta=meta, records=records, best=best, front=pareto_front(records),
        top=distinct_best(ranked, TOP_PROGRAMS), chain=chain, failures=failure_counts(records),
        usage=usage, ran_code=run_code, beyond=beyond, test_groups=worst_first(best.test.by_group if best and best.test else {}),
    )  # fmt: skip
    settings = (meta.get("config") or {}).get("scorer", {})
    report.front_test = front_test_r2(report.front, task, settings if run_code else None)
    if run_code and best is not None:
        from evolve.report.formula import formulas_of_records

        report.formulas = formulas_of_records(unique_by_id([best, *report.front, *report.top]), task, report_scorer_config(settings))
        report.fits, report.fit_note = score_best(best, task, settings)
        ask_the_law(report, best, task, settings, Path(run))
    elif not run_code:
        report.curve_note = report.allocation_note = "programs were not run for this report (--no-exec)"
    draw_plots(report, grids, param_bins, complexity_bins)
    return report


def ask_the_law(report: Report, best: ProgramRecord, task, settings: dict, run: Path) -> None:
    """The best law's extrapolation band and, for laws in size and data, its allocation
    (the band's calibration is kept in the run's cache folder, as `evolve predict` keeps it)."""
    from evolve.api import CACHE_FOLDER, Law, LawError
    from evolve.report.law_view import law_views

    try:
        law = Law(best, task, report_scorer_config(settings), cache_dir=run / CACHE_FOLDER).fit()
        report.curves, report.curve_note, report.allocation, report.allocation_note = law_views(law)
    except LawError as exc:
        report.curve_note = report.allocation_note = f"the law could not be refitted: {exc}"


def unique_by_id(records: list[ProgramRecord]) -> list[ProgramRecord]:
    return list({r.id: r for r in records}.values())


def draw_plots(report: Report, grids: dict, param_bins: int, complexity_bins: int) -> None:
    task = report.task
    column = task.validation.column or task.features[0]
    plots = {
        "progress": plot_progress(report.records),
        "grids": plot_grids(grids, param_bins, complexity_bins),
        "pareto": plot_pareto_front(report.front, report.front_test),
        "extrapolation": plot_extrapolation(report.curves, task.targets[0]),
        "allocation": plot_allocation(report.allocation, task.targets[0]),
        "parity": plot_parity(report.fits, task.targets),
        "lineage": plot_lineage(report.chain),
        "failures": plot_failures(report.failures),
        "tokens": plot_tokens(report.records),
    }
    plots["groups"], shown, total = plot_groups(report.fits, task, column)
    formula = report.formulas.get(report.best.id) if report.best else None
    plots["formula"] = formula_image(formula.latex, task.targets) if formula else None  # the shown (rounded) formula
    report.plots = plots
    report.groups_shown = (shown, total)


# ---------------------------------------------------------------- rendering


def r2_on_test(record: ProgramRecord) -> float | None:
    return record.test.metrics.r2 if record.test is not None and record.test.ok else None


def render(report: Report) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    environment = Environment(loader=PackageLoader("evolve.report", "templates"), autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              finalize=lambda value: safe_text(value, limit=0) if isinstance(value, str) else value)  # every string shown: no controls, bidi or escapes
    environment.filters["r2"] = format_r2
    environment.filters["time"] = format_timestamp
    environment.filters["safe_text"] = safe_text
    environment.globals["r2_on_test"] = r2_on_test
    template = environment.get_template("report.html.j2")
    best = report.best
    params_note, params = "", {}
    if best is not None:
        from evolve.report.export import params_source

        params_note, evaluation = params_source(best)
        params = dict(sorted(evaluation.params.items()))
    column = report.task.validation.column or report.task.features[0]
    return template.render(
        r=report,
        best=best,
        column=column,
        params=params,
        params_note=params_note,
        best_formula=report.formulas.get(best.id) if best else None,
        total_tokens=int(report.usage.get("prompt_tokens", 0) or 0) + int(report.usage.get("completion_tokens", 0) or 0),
        n_failed=sum(1 for rec in report.records if not rec.ok),
        title=html.escape(f"evolve report: {Path(report.run).name}"),
    )


def write_report(run: Path, output: Path, run_code: bool = True) -> Path:
    """Gather, plot and write the HTML file; returns its path."""
    report = gather(run, run_code)
    text = render(report)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return output
