"""The report's plots: matplotlib (Agg) figures returned as base64 PNG strings, or None when
there is nothing to draw. Every value drawn is finite and clipped, so no prediction a law
makes can stop a report."""

from __future__ import annotations

import base64
import io
import math
import re

import numpy as np

from evolve.records import ProgramRecord
from evolve.report.analysis import SplitFit, running_best
from evolve.text import shorten

SPLIT_COLOURS = {"train": "#4c72b0", "validation": "#dd8452", "test": "#c44e52"}
MAX_GROUP_PLOTS = 12
R2_FLOOR = -1.0  # plots clip R² below this; failures are −1 anyway



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
    ax.set_title(f"The search's best validation R² over iterations: {best[-1]:.4f} at the end "
                 "(the law returned is chosen from train alone after it)", fontsize=9)
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
    values = [max(R2_FLOOR, v) if math.isfinite(v) else R2_FLOOR for v in values]
    low, high = max(R2_FLOOR, float(np.percentile(values, 10))), max(values)  # one bad elite must not wash out the rest
    if high - low < 1e-9:  # every elite scores the same (a constant law): any non-empty scale
        low, high = min(low, high) - 0.05, max(low, high)
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


def within_view(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Values clipped to ten spans around the reference data: a law that predicts ±1e308
    (or inf) is drawn at the edge of the plot instead of breaking it."""
    reference = np.asarray(reference, dtype=float)
    reference = reference[np.isfinite(reference)]
    low, high = (float(reference.min()), float(reference.max())) if len(reference) else (0.0, 1.0)
    span = max(high - low, 1e-12, abs(high) * 1e-9)
    return np.clip(np.nan_to_num(np.asarray(values, dtype=float), nan=low, posinf=high + 10 * span, neginf=low - 10 * span), low - 10 * span, high + 10 * span)


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
            ax.scatter(fit.actual[:, t], within_view(fit.predicted[:, t], fit.actual[:, t]), s=12, alpha=0.6, color=SPLIT_COLOURS[split], label=f"{split} (R² {fit.r2:.4f})")
            everything += [fit.actual[:, t], fit.predicted[:, t]]
        joined = np.concatenate([within_view(e, everything[0]) for e in everything])
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
    axis, xlabel = scale_axis(task.features, column)
    groups = sorted(set().union(*(set(f.groups.tolist()) for f in fits.values())))
    shown = groups[:MAX_GROUP_PLOTS]
    columns = min(len(shown), 4)
    rows = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for ax, group in zip(axes.flat, shown):
        draw_group(ax, fits, group, axis, len(task.features) == 1)
        label_panel(ax, shorten(group, 48), xlabel, task.targets[0])
    return finish_panels(fig, axes, len(shown), legend_space=0.04), len(shown), len(groups)


def scale_axis(features: tuple[str, ...], column: str) -> tuple[tuple[int, ...], str]:
    """The feature columns whose product is the x axis, and its label: the test split's
    column or product of columns (`params*tokens`) when its factors are all features, else
    the first of them that is, else the first feature."""
    factors = [name.strip() for name in column.split("*")]
    if all(name in features for name in factors):
        return tuple(features.index(name) for name in factors), "*".join(factors)
    first = next((name for name in factors if name in features), features[0])
    return (features.index(first),), first


def axis_values(X: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    return np.prod(X[:, list(axis)], axis=1)


def label_panel(ax, title: str, xlabel: str, ylabel: str) -> None:
    """One panel of a grid of small plots: the same small type and light grid everywhere."""
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def finish_panels(fig, axes, used: int, legend_space: float) -> str:
    """Blank the unused panels, put the first panel's legend under the grid, encode the figure."""
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, bbox_to_anchor=(0.5, 0.02 - legend_space))
    fig.tight_layout(rect=(0, legend_space, 1, 1))
    return png_base64(fig)


def draw_group(ax, fits: dict[str, SplitFit], group: str, axis: tuple[int, ...], single_feature: bool) -> None:
    """One group's panel. Validation rows are train rows held out: each is drawn once, as
    validation (matched on all its features and its value, not on the x axis alone)."""
    train, validation, test = fits.get("train"), fits.get("validation"), fits.get("test")
    held_out: set[tuple] = set()
    if validation is not None:
        mask = validation.groups == group
        held_out = set(map(tuple, np.column_stack([validation.X[mask], validation.actual[mask, :1]]).tolist()))
        x = axis_values(validation.X[mask], axis)
        ax.scatter(x, validation.actual[mask, 0], s=22, color=SPLIT_COLOURS["validation"], label="validation data")
        ax.scatter(x, within_view(validation.predicted[mask, 0], validation.actual[mask, 0]), s=40, facecolors="none", edgecolors=SPLIT_COLOURS["validation"], label="prediction (fit without validation)")
    curve_x, curve_y = [], []
    for fit, name in ((train, "train"), (test, "test")):
        if fit is None:
            continue
        mask = fit.groups == group
        x = axis_values(fit.X[mask], axis)
        if name == "train":
            rows = np.column_stack([fit.X[mask], fit.actual[mask, :1]]).tolist()
            keep = np.array([tuple(row) not in held_out for row in rows], dtype=bool)
            ax.scatter(x[keep], fit.actual[mask, 0][keep], s=14, color=SPLIT_COLOURS["train"], label="train data")
        else:
            ax.scatter(x, fit.actual[mask, 0], s=22, marker="s", color=SPLIT_COLOURS["test"], label="test data")
        curve_x += x.tolist()
        curve_y += within_view(fit.predicted[mask, 0], fit.actual[mask, 0]).tolist()
    if curve_x:
        order = np.argsort(curve_x)
        xs, ys = np.asarray(curve_x)[order], np.asarray(curve_y)[order]
        if single_feature:
            ax.plot(xs, ys, color="black", linewidth=1.2, label="law (fit on all train)")
        else:
            ax.scatter(xs, ys, s=12, marker="x", color="black", label="law (fit on all train)")
        if xs.min() > 0 and xs.max() / xs.min() > 50:
            ax.set_xscale("log")


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


MATHTEXT_TEXT_ESCAPES = {"asciitilde": "~", "asciicircum": r"\^{}", "backslash": r"}\backslash\text{"}


def mathtext(latex: str) -> str:
    r"""LaTeX as matplotlib's mathtext draws it: mathtext has no `\textasciitilde`,
    `\textasciicircum` or `\textbackslash` (it printed a tab and the command's letters for a
    column named `a~b`), so those escapes of a name (evolve.symbolic.latex_name) become the
    forms it knows; the LaTeX shown as text keeps LaTeX's own."""
    return re.sub(r"\\text(asciitilde|asciicircum|backslash)\{\}", lambda m: MATHTEXT_TEXT_ESCAPES[m.group(1)], latex)


def plain_text(text: str) -> str:
    """Text matplotlib draws as it is: a `$` would start mathematics."""
    return text.replace("$", r"\$")


def formula_image(latex: tuple[str, ...], targets: tuple[str, ...]) -> str | None:
    """The formula drawn with matplotlib's mathtext; None when mathtext cannot parse it, or
    when it is longer than the sandbox lets a traced formula's LaTeX be: this LaTeX is made
    again in the parent, from the formula (a 400-term sum gave 14,752 characters, a 15 s
    render and a 1.1 MB image, attack round 4)."""
    from evolve.scoring.formula_jobs import MAX_LATEX_CHARS

    if any(len(tex) > MAX_LATEX_CHARS for tex in latex):
        return None
    plt = pyplot()
    lines = [f"{plain_text(t)} = ${mathtext(tex)}$" if len(targets) > 1 else f"${mathtext(tex)}$" for t, tex in zip(targets, latex)]
    fig = plt.figure(figsize=(8, 0.8 * len(lines) + 0.2))
    for i, line in enumerate(lines):
        fig.text(0.01, 1 - (i + 0.5) / len(lines), line, fontsize=20, va="center")
    try:
        return png_base64(fig)
    except (ValueError, RuntimeError):
        plt.close(fig)
        return None
