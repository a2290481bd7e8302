"""`evolve report RUN`: one self-contained HTML file that shows what a run found.

Everything is embedded: plots are base64 PNGs drawn with matplotlib's Agg backend,
formulas are text (and a mathtext PNG), styles are inline; nothing is fetched from the
network when the file is opened. The run database is opened read-only.

The best law's fit plots need its predictions, so its code is run through the sandboxed
Scorer (train, validation and test splits); its formula is recovered in an isolated
child process (evolve.scoring.formula_jobs). `run_code=False` skips both.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from evolve.records import ProgramRecord

SPLIT_COLOURS = {"train": "#4c72b0", "validation": "#dd8452", "test": "#c44e52"}
MAX_GROUP_PLOTS = 12
TOP_PROGRAMS = 10
R2_FLOOR = -1.0  # plots clip R² below this; failures are −1 anyway


# ---------------------------------------------------------------- analysis (no plotting)


def pareto_front(records: list[ProgramRecord]) -> list[ProgramRecord]:
    """Programs no other beats on both counts: fewer (or as many) fitted parameters and
    higher validation R². One per parameter count, fewest parameters first; copies of the
    same code (migrants) count once, as their first occurrence."""
    seen, candidates = set(), []
    for record in sorted(records, key=lambda r: r.id or 0):
        if record.ok and record.n_params is not None and record.code not in seen and math.isfinite(record.r2):
            seen.add(record.code)
            candidates.append(record)
    front, best = [], -math.inf
    for record in sorted(candidates, key=lambda r: (r.n_params, -r.r2, r.id or 0)):
        if record.r2 > best:
            front.append(record)
            best = record.r2
    return front


def distinct_best(records: list[ProgramRecord], k: int) -> list[ProgramRecord]:
    """The k best ok programs, one per distinct code (records come best first)."""
    seen, chosen = set(), []
    for record in records:
        if record.ok and record.code not in seen:
            seen.add(record.code)
            chosen.append(record)
        if len(chosen) >= k:
            break
    return chosen


def running_best(records: list[ProgramRecord]) -> tuple[list[int], list[float]]:
    """Best validation R² so far at each iteration that has programs."""
    by_iteration: dict[int, float] = {}
    for record in records:
        if record.ok:
            by_iteration[record.iteration] = max(by_iteration.get(record.iteration, -math.inf), record.r2)
    iterations, best, current = [], [], -math.inf
    for iteration in sorted(by_iteration):
        current = max(current, by_iteration[iteration])
        iterations.append(iteration)
        best.append(current)
    return iterations, best


def failure_counts(records: list[ProgramRecord]) -> list[tuple[str, int]]:
    counts = Counter(r.validation.status for r in records if not r.ok)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


@dataclass
class SplitFit:
    """The scored rows of one split in the scorer's order, with the law's predictions."""

    split: str
    X: np.ndarray
    actual: np.ndarray
    predicted: np.ndarray
    groups: np.ndarray
    r2: float


def split_fit(task, split: str, evaluation) -> SplitFit | None:
    """Pair Evaluation.predictions (sorted-group order) with the matching rows, as build_jobs orders them."""
    if not evaluation.ok or evaluation.predictions is None:
        return None
    _, rows = task.fit_and_score_rows(split)
    order = np.concatenate([np.flatnonzero(rows.groups == g) for g in rows.group_names()])
    predicted = np.asarray(evaluation.predictions, dtype=float).reshape(len(order), -1)
    return SplitFit(split, rows.X[order], rows.y[order], predicted, rows.groups[order], evaluation.metrics.r2)


def score_best(record: ProgramRecord, task, scorer_settings: dict) -> tuple[dict[str, SplitFit], str]:
    """The best law's fits on train, validation and test, run in the sandbox; and a note on failures."""
    from evolve.config import ScorerConfig
    from evolve.scoring.scorer import Scorer

    config = ScorerConfig(
        workers=2,
        timeout_s=float(scorer_settings.get("timeout_s", 60.0)),
        memory_mb=int(scorer_settings.get("memory_mb", 4096)),
    )
    fits, notes = {}, []
    try:
        with Scorer(config) as scorer:
            futures = {split: scorer.submit(record.code, task, split) for split in ("train", "validation", "test")}
            for split, future in futures.items():
                evaluation = future.result()
                fit = split_fit(task, split, evaluation)
                if fit is None:
                    notes.append(f"{split}: {evaluation.status} {evaluation.message}".strip())
                else:
                    fits[split] = fit
    except Exception as exc:  # noqa: BLE001 - a report without fit plots beats no report
        notes.append(f"the sandbox could not run the law: {type(exc).__name__}: {exc}")
    return fits, "; ".join(notes)


# ---------------------------------------------------------------- plots


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_base64(fig) -> str:
    plt = pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def clipped(values) -> np.ndarray:
    return np.maximum(np.asarray(values, dtype=float), R2_FLOOR)


def plot_progress(records: list[ProgramRecord]) -> str | None:
    proposals = [r for r in records if r.proposer != "migration"]
    ok = [r for r in proposals if r.ok]
    if not ok:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.scatter([r.iteration for r in ok], clipped([r.r2 for r in ok]), s=14, alpha=0.5, color="#4c72b0", label="program (validation R²)")
    failed = [r for r in proposals if not r.ok]
    if failed:
        ax.scatter([r.iteration for r in failed], [R2_FLOOR] * len(failed), s=14, marker="x", color="#c44e52", label="failed program")
    iterations, best = running_best(records)
    ax.step(iterations, clipped(best), where="post", color="black", linewidth=2, label="best so far")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"validation R² (clipped at {R2_FLOOR:g})")
    ax.set_title(f"Best validation R² over iterations: {best[-1]:.4f} at the end")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return png_base64(fig)


def plot_grids(grids: dict[int, dict], param_bins: int, complexity_bins: int) -> str | None:
    """One heat map per island: elite validation R² by (parameter bin, complexity bin)."""
    if not any(grids.values()):
        return None
    plt = pyplot()
    islands = sorted(grids)
    columns = min(len(islands), 5)
    rows = math.ceil(len(islands) / columns)
    values = [e.r2 for g in grids.values() for e in g.values()]
    low, high = max(R2_FLOOR, float(np.percentile(values, 10))), max(values)  # one bad elite must not wash out the rest
    if high - low < 1e-9:
        low -= 0.05
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows + 0.6), squeeze=False)
    image = None
    for ax, island in zip(axes.flat, islands):
        matrix = np.full((param_bins, complexity_bins), np.nan)
        for (p, c), elite in grids[island].items():
            if 0 <= p < param_bins and 0 <= c < complexity_bins:
                matrix[p, c] = max(R2_FLOOR, elite.r2)
        image = ax.imshow(matrix, origin="lower", cmap="viridis", vmin=low, vmax=high, aspect="auto")
        for (p, c), elite in grids[island].items():
            if 0 <= p < param_bins and 0 <= c < complexity_bins:
                ax.text(c, p, f"{elite.r2:.2f}", ha="center", va="center", fontsize=6, color="white" if elite.r2 < (low + high) / 2 else "black")
        ax.set_title(f"island {island}: {len(grids[island])} elites", fontsize=9)
        ax.set_xlabel("complexity bin (AST size)", fontsize=8)
        ax.set_ylabel("parameter bin", fontsize=8)
        ax.set_xticks(range(complexity_bins))
        ax.set_yticks(range(param_bins))
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(islands):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="elite validation R²")
    return png_base64(fig)


def plot_pareto(records: list[ProgramRecord], front: list[ProgramRecord]) -> str | None:
    ok = [r for r in records if r.ok and r.n_params is not None and r.proposer != "migration"]
    if not ok:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter([r.n_params for r in ok], clipped([r.r2 for r in ok]), s=14, alpha=0.4, color="#8c8c8c", label="program")
    ax.step([r.n_params for r in front], clipped([r.r2 for r in front]), where="post", color="#c44e52", linewidth=1.5)
    ax.scatter([r.n_params for r in front], clipped([r.r2 for r in front]), s=40, color="#c44e52", label="Pareto front", zorder=3)
    for r in front:
        ax.annotate(f"#{r.id}", (r.n_params, max(R2_FLOOR, r.r2)), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("fitted parameters per group")
    ax.set_ylabel("validation R²")
    ax.set_title("Validation R² against number of fitted parameters")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return png_base64(fig)


def plot_parity(fits: dict[str, SplitFit], targets: tuple[str, ...]) -> str | None:
    """Predicted against actual, one panel per target, coloured by split."""
    if not fits:
        return None
    plt = pyplot()
    n = len(targets)
    columns = min(n, 3)
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4 * rows), squeeze=False)
    for t, (ax, target) in enumerate(zip(axes.flat, targets)):
        everything = []
        for split in ("train", "validation", "test"):
            fit = fits.get(split)
            if fit is None:
                continue
            ax.scatter(fit.actual[:, t], fit.predicted[:, t], s=12, alpha=0.6, color=SPLIT_COLOURS[split], label=f"{split} (R² {fit.r2:.4f})")
            everything += [fit.actual[:, t], fit.predicted[:, t]]
        joined = np.concatenate(everything)
        low, high = float(joined.min()), float(joined.max())
        ax.plot([low, high], [low, high], color="black", linewidth=1, linestyle="--")
        ax.set_xlabel(f"actual {target}")
        ax.set_ylabel(f"predicted {target}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Best law: predicted against actual (train: fitted on all train rows; validation: fitted without them; test: fitted on all train rows)", fontsize=9)
    return png_base64(fig)


def plot_groups(fits: dict[str, SplitFit], task, column: str) -> tuple[str | None, int, int]:
    """Loss against the main scale variable per group: data by split and the law's predictions."""
    if not fits:
        return None, 0, 0
    plt = pyplot()
    j = task.features.index(column)
    groups = sorted(set().union(*(set(f.groups.tolist()) for f in fits.values())))
    shown = groups[:MAX_GROUP_PLOTS]
    columns = min(len(shown), 4)
    rows = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for ax, group in zip(axes.flat, shown):
        draw_group(ax, fits, group, j, len(task.features) == 1)
        ax.set_title(shorten_label(group), fontsize=8)
        ax.set_xlabel(column, fontsize=8)
        ax.set_ylabel(task.targets[0], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return png_base64(fig), len(shown), len(groups)


def draw_group(ax, fits: dict[str, SplitFit], group: str, j: int, single_feature: bool) -> None:
    train, validation, test = fits.get("train"), fits.get("validation"), fits.get("test")
    held_out_x = set()
    if validation is not None:
        mask = validation.groups == group
        held_out_x = set(validation.X[mask, j].tolist())
        ax.scatter(validation.X[mask, j], validation.actual[mask, 0], s=22, color=SPLIT_COLOURS["validation"], label="validation data")
        ax.scatter(validation.X[mask, j], validation.predicted[mask, 0], s=40, facecolors="none", edgecolors=SPLIT_COLOURS["validation"], label="prediction (fit without validation)")
    curve_x, curve_y = [], []
    for fit, name in ((train, "train"), (test, "test")):
        if fit is None:
            continue
        mask = fit.groups == group
        x = fit.X[mask, j]
        if name == "train":
            keep = np.array([v not in held_out_x for v in x.tolist()], dtype=bool)
            ax.scatter(x[keep], fit.actual[mask, 0][keep], s=14, color=SPLIT_COLOURS["train"], label="train data")
        else:
            ax.scatter(x, fit.actual[mask, 0], s=22, marker="s", color=SPLIT_COLOURS["test"], label="test data")
        curve_x += x.tolist()
        curve_y += fit.predicted[mask, 0].tolist()
    if curve_x:
        order = np.argsort(curve_x)
        xs, ys = np.asarray(curve_x)[order], np.asarray(curve_y)[order]
        if single_feature:
            ax.plot(xs, ys, color="black", linewidth=1.2, label="law (fit on all train)")
        else:
            ax.scatter(xs, ys, s=12, marker="x", color="black", label="law (fit on all train)")
        if xs.min() > 0 and xs.max() / xs.min() > 50:
            ax.set_xscale("log")


def shorten_label(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_lineage(chain: list[ProgramRecord]) -> str | None:
    """Validation R² along the ancestry, seed first."""
    steps = list(reversed(chain))
    if len(steps) < 2:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    xs = list(range(len(steps)))
    ax.plot(xs, clipped([r.r2 for r in steps]), marker="o", color="#4c72b0")
    for x, r in zip(xs, steps):
        ax.annotate(f"#{r.id}\n{r.proposer}", (x, max(R2_FLOOR, r.r2)), textcoords="offset points", xytext=(0, 6), fontsize=6, ha="center")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(r.iteration) for r in steps], fontsize=7)
    ax.set_xlabel("iteration of each ancestor (seed on the left)")
    ax.set_ylabel("validation R²")
    ax.set_title("Lineage of the best program")
    ax.grid(alpha=0.3)
    return png_base64(fig)


def plot_failures(counts: list[tuple[str, int]]) -> str | None:
    if not counts:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(counts) + 1.2))
    names = [k for k, _ in counts][::-1]
    ax.barh(names, [v for _, v in counts][::-1], color="#c44e52")
    ax.set_xlabel("failed programs")
    ax.set_title("Failures by kind")
    return png_base64(fig)


def plot_tokens(records: list[ProgramRecord]) -> str | None:
    spent = sorted((r.iteration, r.prompt_tokens, r.completion_tokens) for r in records if r.prompt_tokens or r.completion_tokens)
    if not spent:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    iterations = [s[0] for s in spent]
    ax.plot(iterations, np.cumsum([s[1] for s in spent]), label="prompt tokens")
    ax.plot(iterations, np.cumsum([s[2] for s in spent]), label="completion tokens")
    ax.set_xlabel("iteration")
    ax.set_ylabel("tokens (cumulative)")
    ax.set_title("Tokens spent")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png_base64(fig)


def formula_image(latex: tuple[str, ...], targets: tuple[str, ...]) -> str | None:
    """The formula drawn with matplotlib's mathtext; None when mathtext cannot parse it."""
    plt = pyplot()
    lines = [f"{t} = ${tex}$" if len(targets) > 1 else f"${tex}$" for t, tex in zip(targets, latex)]
    fig = plt.figure(figsize=(8, 0.8 * len(lines) + 0.2))
    for i, line in enumerate(lines):
        fig.text(0.01, 1 - (i + 0.5) / len(lines), line, fontsize=20, va="center")
    try:
        return png_base64(fig)
    except (ValueError, RuntimeError):
        plt.close(fig)
        return None


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


def gather(run: Path, run_code: bool) -> Report:
    from evolve.store.rundir import open_read_only as open_run, run_task, tokens_of

    with open_run(run) as archive:
        task = run_task(archive)
        records = archive.programs(order="id")
        ranked = archive.programs(failed=False, order="r2")
        best = ranked[0] if ranked else None
        grids = {i: archive.grid(i) for i in range(archive.config.islands)}
        chain = archive.lineage(best.id) if best else []
        meta = {key: archive.get_meta(key) for key in ("config", "task", "started_at", "finished_at", "status", "iteration")}
        param_bins, complexity_bins = archive.config.param_bins, archive.config.complexity_bins
        usage = archive.get_meta("usage") or tokens_of(records)
    report = Report(
        run=str(run), task=task, meta=meta, records=records, best=best, front=pareto_front(records),
        top=distinct_best(ranked, TOP_PROGRAMS), chain=chain, failures=failure_counts(records),
        usage=usage, ran_code=run_code,
    )  # fmt: skip
    if run_code and best is not None:
        from evolve.scoring.formula_jobs import formulas_for

        report.formulas = formulas_for(unique_by_id([best, *report.front, *report.top]), task)
        report.fits, report.fit_note = score_best(best, task, (meta.get("config") or {}).get("scorer", {}))
    draw_plots(report, grids, param_bins, complexity_bins)
    return report


def unique_by_id(records: list[ProgramRecord]) -> list[ProgramRecord]:
    return list({r.id: r for r in records}.values())


def draw_plots(report: Report, grids: dict, param_bins: int, complexity_bins: int) -> None:
    task = report.task
    column = task.validation.column or task.features[0]
    plots = {
        "progress": plot_progress(report.records),
        "grids": plot_grids(grids, param_bins, complexity_bins),
        "pareto": plot_pareto(report.records, report.front),
        "parity": plot_parity(report.fits, task.targets),
        "lineage": plot_lineage(report.chain),
        "failures": plot_failures(report.failures),
        "tokens": plot_tokens(report.records),
    }
    plots["groups"], shown, total = plot_groups(report.fits, task, column)
    formula = report.formulas.get(report.best.id) if report.best else None
    plots["formula"] = formula_image(formula.latex, task.targets) if formula else None
    report.plots = plots
    report.groups_shown = (shown, total)


# ---------------------------------------------------------------- rendering


def fmt_r2(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4f}"


def fmt_time(stamp) -> str:
    return "—" if not stamp else datetime.fromtimestamp(float(stamp)).strftime("%Y-%m-%d %H:%M:%S")


def r2_on_test(record: ProgramRecord) -> float | None:
    return record.test.metrics.r2 if record.test is not None and record.test.ok else None


def render(report: Report) -> str:
    from jinja2 import Environment, StrictUndefined

    environment = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["r2"] = fmt_r2
    environment.filters["time"] = fmt_time
    environment.globals["r2_on_test"] = r2_on_test
    template = environment.from_string(TEMPLATE)
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


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1250px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
pre, code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.85em; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 0.8em; overflow-x: auto; }
.note { color: #666; font-size: 0.9em; }
.formula { font-size: 1.05em; background: #fbfbef; border: 1px solid #e6e6c8; padding: 0.5em; overflow-x: auto; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="note">Task <b>{{ r.task.name }}</b> ({{ r.task.features | join(", ") }} &rarr; {{ r.task.targets | join(", ") }}). Run directory <code>{{ r.run }}</code>.
Selection used validation R² only; test R² is for reporting.</p>

<section id="summary">
<h2>Summary</h2>
<table>
<tr><th>status</th><td>{{ r.meta.status or "—" }}</td></tr>
<tr><th>started / finished</th><td>{{ r.meta.started_at | time }} / {{ r.meta.finished_at | time }}</td></tr>
<tr><th>iterations</th><td>{{ r.meta.iteration if r.meta.iteration is not none else "—" }}</td></tr>
<tr><th>programs</th><td>{{ r.records | length }} ({{ n_failed }} failed)</td></tr>
{% if best %}
<tr><th>best program</th><td>#{{ best.id }} (iteration {{ best.iteration }}, {{ best.proposer }}): validation R² {{ best.r2 | r2 }}, test R² {{ r2_on_test(best) | r2 }}, {{ best.n_params }} fitted parameters per group</td></tr>
{% endif %}
<tr><th>tokens</th><td>{{ "{:,}".format(total_tokens) }}{% if r.usage.get("cost_usd") %} (${{ "%.4f" | format(r.usage.get("cost_usd")) }}){% endif %}</td></tr>
</table>
</section>

<section id="progress">
<h2>Best validation R² over iterations</h2>
{% if r.plots.progress %}<img alt="best validation R² over iterations" src="data:image/png;base64,{{ r.plots.progress }}">{% else %}<p class="note">No program scored yet.</p>{% endif %}
</section>

<section id="best-law">
<h2>The best law</h2>
{% if best %}
<p>Program #{{ best.id }}{% if best.explanation %}: {{ best.explanation }}{% endif %}</p>
{% if best_formula %}
<p>Formula{% if not best_formula.verified %} (not checked on data){% else %} (checked against the program on data){% endif %}, over the features and the fitted parameters p0, p1, …:</p>
{% if r.plots.formula %}<img alt="formula of the best law" src="data:image/png;base64,{{ r.plots.formula }}">{% endif %}
{% for expression in best_formula.expressions %}<div class="formula"><code>{{ r.task.targets[loop.index0] }} = {{ expression }}</code></div>{% endfor %}
<p class="note">LaTeX:</p>
{% for latex in best_formula.latex %}<pre>{{ latex }}</pre>{% endfor %}
{% elif r.ran_code %}<p class="note">The formula could not be recovered from the code.</p>
{% else %}<p class="note">Programs were not run for this report (--no-exec): no formula.</p>{% endif %}
<details{% if params | length <= 12 %} open{% endif %}><summary>fitted parameters of {{ params | length }} group(s), from the stored {{ params_note }}</summary>
<table><tr><th>group</th><th>parameters</th></tr>
{% for group, values in params.items() %}<tr><td>{{ group }}</td><td><code>{% if values is none %}(not numeric){% else %}{% for v in values %}{{ "%.6g" | format(v) }}{% if not loop.last %}, {% endif %}{% endfor %}{% endif %}</code></td></tr>
{% endfor %}</table>
</details>
<details><summary>code</summary><pre>{{ best.code }}</pre></details>
{% else %}<p class="note">No program succeeded.</p>{% endif %}
</section>

<section id="fit">
<h2>Fit of the best law</h2>
{% if r.fit_note %}<p class="note">{{ r.fit_note }}</p>{% endif %}
{% if r.plots.parity %}<img alt="predicted against actual" src="data:image/png;base64,{{ r.plots.parity }}">{% endif %}
{% if r.plots.groups %}
<p class="note">{{ r.task.targets[0] }} against {{ column }} per group ({{ r.groups_shown[0] }} of {{ r.groups_shown[1] }} groups shown{% if r.task.targets | length > 1 %}; first target only{% endif %}).</p>
<img alt="loss against {{ column }} per group" src="data:image/png;base64,{{ r.plots.groups }}">
{% endif %}
{% if not r.ran_code %}<p class="note">Programs were not run for this report (--no-exec): no fit plots.</p>{% endif %}
</section>

<section id="pareto">
<h2>Pareto front: validation R² against fitted parameters</h2>
{% if r.plots.pareto %}<img alt="Pareto front" src="data:image/png;base64,{{ r.plots.pareto }}">{% endif %}
<table><tr><th>params</th><th>id</th><th>validation R²</th><th>test R²</th><th>formula</th></tr>
{% for p in r.front %}<tr><td>{{ p.n_params }}</td><td>#{{ p.id }}</td><td>{{ p.r2 | r2 }}</td><td>{{ r2_on_test(p) | r2 }}</td><td><code>{% if r.formulas.get(p.id) %}{{ r.formulas[p.id].expressions | join("; ") }}{% else %}—{% endif %}</code></td></tr>
{% endfor %}</table>
</section>

<section id="top">
<h2>Top programs</h2>
<table><tr><th>id</th><th>iteration</th><th>island</th><th>proposer</th><th>params</th><th>validation R²</th><th>test R²</th><th>formula</th></tr>
{% for p in r.top %}<tr><td>#{{ p.id }}</td><td>{{ p.iteration }}</td><td>{{ p.island }}</td><td>{{ p.proposer }}</td><td>{{ p.n_params }}</td><td>{{ p.r2 | r2 }}</td><td>{{ r2_on_test(p) | r2 }}</td><td><code>{% if r.formulas.get(p.id) %}{{ r.formulas[p.id].expressions | join("; ") }}{% else %}—{% endif %}</code></td></tr>
{% endfor %}</table>
</section>

<section id="grid">
<h2>MAP-Elites grid per island</h2>
{% if r.plots.grids %}<img alt="MAP-Elites grids" src="data:image/png;base64,{{ r.plots.grids }}">{% else %}<p class="note">The grid is empty.</p>{% endif %}
</section>

<section id="lineage">
<h2>Lineage of the best program</h2>
{% if r.plots.lineage %}<img alt="lineage of the best program" src="data:image/png;base64,{{ r.plots.lineage }}">{% endif %}
<table><tr><th>id</th><th>iteration</th><th>island</th><th>proposer</th><th>validation R²</th><th>explanation</th></tr>
{% for p in r.chain %}<tr><td>#{{ p.id }}</td><td>{{ p.iteration }}</td><td>{{ p.island }}</td><td>{{ p.proposer }}</td><td>{{ p.r2 | r2 }}</td><td>{{ p.explanation }}</td></tr>
{% endfor %}</table>
</section>

<section id="failures">
<h2>Failures by kind</h2>
{% if r.plots.failures %}<img alt="failures by kind" src="data:image/png;base64,{{ r.plots.failures }}">
<table><tr><th>kind</th><th>programs</th></tr>{% for kind, count in r.failures %}<tr><td>{{ kind }}</td><td>{{ count }}</td></tr>{% endfor %}</table>
{% else %}<p class="note">No program failed.</p>{% endif %}
</section>

<section id="usage">
<h2>Tokens and cost</h2>
{% if total_tokens %}
<table><tr><th>model</th><th>prompt tokens</th><th>completion tokens</th><th>cost (USD)</th></tr>
{% for model, u in (r.usage.get("per_model") or {}).items() %}<tr><td>{{ model }}</td><td>{{ u.get("prompt_tokens", 0) }}</td><td>{{ u.get("completion_tokens", 0) }}</td><td>{{ "%.4f" | format(u.get("cost_usd") or 0) }}</td></tr>
{% endfor %}<tr><th>total</th><th>{{ r.usage.get("prompt_tokens", 0) }}</th><th>{{ r.usage.get("completion_tokens", 0) }}</th><th>{{ "%.4f" | format(r.usage.get("cost_usd") or 0) }}</th></tr></table>
{% if r.plots.tokens %}<img alt="tokens spent" src="data:image/png;base64,{{ r.plots.tokens }}">{% endif %}
{% else %}<p class="note">No language-model tokens were spent (offline proposer).</p>{% endif %}
</section>
</body>
</html>
"""
