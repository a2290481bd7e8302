"""The report's plots of what the best law says beyond the data: its extrapolation with the
interval band, iso-loss / iso-compute curves in model size and data, and the Pareto front
with validation and test R² for every point shown. Base64 PNGs, or None."""

from __future__ import annotations

import math

import numpy as np

from evolve.report.law_view import BAND_LEVEL, Allocation, Extrapolation
from evolve.report.plots import R2_FLOOR, SPLIT_COLOURS, finish_panels, label_panel, png_base64, pyplot, within_view
from evolve.text import shorten


def plot_extrapolation(curves: list[Extrapolation], target: str) -> str | None:
    if not curves:
        return None
    plt = pyplot()
    columns = min(len(curves), 2)
    rows = math.ceil(len(curves) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.6 * columns, 3.8 * rows), squeeze=False)
    for ax, c in zip(axes.flat, curves):
        reference = np.concatenate([c.train_y, c.test_y])
        ax.fill_between(c.xs, within_view(c.low, reference), within_view(c.high, reference), color="#4c72b0", alpha=0.2,
                        label=f"{BAND_LEVEL:.0%} interval")
        ax.plot(c.xs, within_view(c.center, reference), color="black", linewidth=1.3, label="law (fit on all train)")
        draw_rows(ax, c.train_x, c.train_y, c.train_on_slice, dict(s=12, color=SPLIT_COLOURS["train"], zorder=3), "train")
        if len(c.test_x):
            middle = (c.test_low + c.test_high) / 2
            ax.errorbar(c.test_x, within_view(middle, reference), yerr=np.abs(c.test_high - c.test_low) / 2, fmt="none",
                        ecolor=SPLIT_COLOURS["test"], alpha=0.6, label="interval at each test point (its own inputs)")
            draw_rows(ax, c.test_x, c.test_y, c.test_on_slice, dict(s=22, marker="s", color=SPLIT_COLOURS["test"], zorder=4), "test")
        ax.axvline(c.train_max, color="#888888", linestyle=":", linewidth=1)
        if c.log_x:
            ax.set_xscale("log")
        held = ", ".join(f"{k}={v:.3g}" for k, v in c.held.items())
        label_panel(ax, shorten(f"{c.group}" + (f" ({held})" if held else ""), 70), c.feature + " (dotted: largest train value)", target)
    return finish_panels(fig, axes, len(curves), legend_space=0.05)


def draw_rows(ax, x: np.ndarray, y: np.ndarray, on: np.ndarray, style: dict, split: str) -> None:
    """Rows on the curve's slice solid, rows at other values of the held features faded
    (the curve is not their prediction); a legend entry only for what is drawn."""
    on = on if len(on) == len(x) else np.ones(len(x), dtype=bool)
    if on.any():
        ax.scatter(x[on], y[on], label=f"{split} data on this slice" if not on.all() else f"{split} data", **style)
    if (~on).any():
        ax.scatter(x[~on], y[~on], alpha=0.25, label=f"{split} data at other held values", **style)


def plot_allocation(a: Allocation | None, target: str) -> str | None:
    """Iso-loss contours over log N, log D; iso-compute lines C = 6·N·D; the optimal points."""
    if a is None:
        return None
    finite = np.isfinite(a.loss)
    if finite.sum() < 4:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    values = a.loss[finite]
    levels = np.unique(np.quantile(values, np.linspace(0.04, 0.96, 12)))  # by area: a law that blows up in one corner keeps its contours apart
    if len(levels) < 2:
        levels = np.array([values.min(), values.min() + 1e-9])
    low, high = float(levels[0]), float(levels[-1])
    shown = np.clip(np.where(finite, a.loss, high), low - 1e-12, high + 1e-12)
    contours = ax.contour(a.N, a.D, shown, levels=levels, cmap="viridis", linewidths=1)
    ax.clabel(contours, fontsize=6, fmt="%.3g")
    for c in sorted({o["compute"] for o in a.optimal}):
        ax.plot(a.N, c / (6 * a.N), color="#aaaaaa", linestyle="--", linewidth=0.8)
        ax.annotate(f"C={c:.1e}", (a.N[-1], c / (6 * a.N[-1])), fontsize=6, color="#666666", xytext=(-40, 4), textcoords="offset points")
    if a.optimal:
        ax.plot([o["N"] for o in a.optimal], [o["D"] for o in a.optimal], marker="*", markersize=9, color="#c44e52", label="compute-optimal (lowest loss on each C)")
    ax.scatter(a.train_N, a.train_D, s=8, color=SPLIT_COLOURS["train"], alpha=0.6, label="train runs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(min(a.N[0], *[o["N"] for o in a.optimal]), max(a.N[-1], *[o["N"] for o in a.optimal]))
    ax.set_ylim(min(a.D[0], *[o["D"] for o in a.optimal]), max(a.D[-1], *[o["D"] for o in a.optimal]))
    ax.set_xlabel(f"model size ({a.size_feature})")
    ax.set_ylabel(f"data ({a.data_feature})")
    held = ", ".join(f"{k}={v:.3g}" for k, v in a.held.items())
    ax.set_title(shorten(f"Iso-loss ({target}) and iso-compute (dashed) curves, group {a.group}" + (f"; {held}" if held else ""), 110), fontsize=9)
    ax.grid(alpha=0.2, which="both")
    ax.legend(fontsize=7, loc="lower left")
    return png_base64(fig)


def plot_pareto_front(front: list, test_r2: dict) -> str | None:
    """Each front program at its parameter count: validation R² (what chose it) and test R²
    (reporting only), joined, so every point shown has both."""
    if not front:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [r.n_params for r in front]
    val = [max(R2_FLOOR, r.r2) for r in front]
    ax.step(xs, val, where="post", color="#4c72b0", linewidth=1.2)
    ax.scatter(xs, val, s=40, color="#4c72b0", label="validation R²", zorder=3)
    tests = [(r.n_params, test_r2.get(r.id)) for r in front]
    known = [(x, max(R2_FLOOR, t)) for x, t in tests if t is not None and math.isfinite(t)]
    if known:
        ax.scatter([k[0] for k in known], [k[1] for k in known], s=40, marker="s", facecolors="none", edgecolors="#c44e52", label="test R²", zorder=3)
    for r, (x, t) in zip(front, tests):
        ax.plot([x, x], [max(R2_FLOOR, r.r2), max(R2_FLOOR, t) if t is not None and math.isfinite(t) else max(R2_FLOOR, r.r2)], color="#999999", linewidth=0.8)
        label = f"#{r.id}\nval {r.r2:.3f}\ntest {t:.3f}" if t is not None and math.isfinite(t) else f"#{r.id}\nval {r.r2:.3f}\ntest —"
        ax.annotate(label, (x, max(R2_FLOOR, r.r2)), textcoords="offset points", xytext=(5, -22), fontsize=6)
    ax.set_xlabel("fitted parameters per group")
    ax.set_ylabel(f"R² (clipped at {R2_FLOOR:g})")
    ax.set_title("Pareto front: validation R² (chose it) and test R² (reporting) of each program on it")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return png_base64(fig)
