"""Figures: the loss/metric landscape, the BO Pareto front with its hypervolume, and the paper's Figure 2
(stage-1 alignment over frozen layers) and Figure 3 (best member vs fused metric).

Each function takes frames and an output path prefix, writes ``prefix.png`` (150 dpi) and ``prefix.pdf``
and returns both paths. Figures are built on matplotlib's object API and rendered by Agg, so no display and
no pyplot global state are involved.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from scipy.stats import spearmanr

from ..metrics import METRICS

PNG_DPI = 150
CONTOUR_LEVELS = 20
ANNOTATED_CELLS = 64  # heatmaps with more cells than this skip per-cell value labels
SOURCE_STYLES = {"member": ("tab:gray", "s", "members"), "sobol": ("tab:blue", "o", "Sobol"),
                 "bo": ("tab:orange", "o", "BO")}
PROJECTED_MARKERS = ["o", "D", "P", "X", "*", "^", "v"]  # each fits inside the one before (see sizes)
PROJECTED_COLOURS = ["tab:red", "tab:orange", "tab:cyan", "tab:pink", "tab:olive", "tab:purple", "tab:brown"]


def run_title(task: str, model: str, seed: int) -> str:
    return f"{task} · {model} · seed {seed}"


def error_label(metric: str) -> str:
    """How 1 − metric is named on an axis: accuracy has an error rate, other metrics do not."""
    return "error rate (1 − accuracy)" if metric == "accuracy" else f"1 − {metric}"


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, output_prefix) -> tuple[Path, Path]:
    prefix = Path(output_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = prefix.with_name(prefix.name + ".png"), prefix.with_name(prefix.name + ".pdf")
    figure.savefig(png, dpi=PNG_DPI)
    figure.savefig(pdf)
    return png, pdf


def _no_data(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="tab:gray")


# --------------------------------------------------------------------------- landscape


def _levels(values: np.ndarray, log: bool) -> np.ndarray:
    """Contour levels spanning ``values`` (finite, and positive where ``log``), log-spaced where asked."""
    low, high = float(values.min()), float(values.max())
    if high <= low:  # a flat surface still needs an interval to fill
        pad = abs(low) * 1e-3 or 1e-3
        low, high = (low / (1 + 1e-3), low * (1 + 1e-3)) if log else (low - pad, high + pad)
    if log:
        return np.geomspace(low, high, CONTOUR_LEVELS + 1)
    return MaxNLocator(CONTOUR_LEVELS).tick_values(low, high)  # round numbers, so the colour bar reads well


def _significant_format(levels: np.ndarray) -> str:
    """Enough significant digits that neighbouring levels print differently (a narrow loss range needs more
    than three)."""
    span = float(levels[-1] - levels[0]) / len(levels)
    magnitude = float(np.abs(levels).max())
    digits = 3 if span <= 0 else max(3, int(np.ceil(np.log10(magnitude / span))) + 1)
    return f"%.{min(digits, 8)}g"


def _landscape_panel(figure: Figure, ax, alphas, betas, values: np.ndarray, label: str, log: bool) -> None:
    valid = np.isfinite(values) & (values > 0 if log else True)
    if valid.any():
        levels = _levels(values[valid], log)
        filled = ax.contourf(alphas, betas, np.ma.masked_where(~valid, values), levels=levels, cmap="viridis",
                             norm=LogNorm(levels[0], levels[-1]) if log else None)
        figure.colorbar(filled, ax=ax, label=label, format=_significant_format(levels) if log else None)
    else:
        _no_data(ax, "no finite values")
    grid_alpha, grid_beta = np.meshgrid(alphas, betas)
    if (~valid).any():
        ax.scatter(grid_alpha[~valid], grid_beta[~valid], marker="x", s=18, color="tab:red", linewidths=1,
                   label="diverged", zorder=3, clip_on=False)
    ax.set_xlim(alphas[0], alphas[-1])
    ax.set_ylim(betas[0], betas[-1])
    ax.set_xlabel("α  (units of ‖θc − θa‖)")
    ax.set_ylabel("β  (units of ‖(θb − θa)⊥‖)")
    ax.set_title(label)
    ax.set_aspect("equal")


def _mark_points(ax, members: pd.DataFrame, projected: pd.DataFrame | None) -> None:
    # The triangle is where these three members' simplex lies: fusion weights on them alone stay inside it.
    corners = members[["alpha", "beta"]].to_numpy()
    ax.fill(corners[:, 0], corners[:, 1], fill=False, linestyle="--", linewidth=0.8, edgecolor="white", zorder=3)
    ax.scatter(corners[:, 0], corners[:, 1], s=55, facecolor="white", edgecolor="black", zorder=4)
    for name, alpha, beta in members[["name", "alpha", "beta"]].itertuples(index=False):
        ax.annotate(name, (alpha, beta), xytext=(6, 6), textcoords="offset points", fontsize=9, zorder=5,
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
    if projected is None:
        return
    for index, row in enumerate(projected.itertuples(index=False)):
        label = row.name if "distance" not in projected else f"{row.name} (off-plane {row.distance:.3g})"
        # Each later point is smaller and drawn on top, so points that project close together all stay visible.
        ax.scatter(row.alpha, row.beta, s=max(240 / (1 + index), 50),
                   marker=PROJECTED_MARKERS[index % len(PROJECTED_MARKERS)],
                   color=PROJECTED_COLOURS[index % len(PROJECTED_COLOURS)], edgecolor="black", linewidths=0.7,
                   label=label, zorder=6 + index)


def landscape_figure(landscape: pd.DataFrame, members: pd.DataFrame, output_prefix, *, primary_metric: str,
                     title: str, projected: pd.DataFrame | None = None) -> tuple[Path, Path]:
    """Validation loss (log-spaced levels) beside validation error on the plane through three members.

    ``landscape``: alpha, beta, loss, <primary_metric> on a full alpha x beta grid (NaN where a point
    diverged); ``members`` and ``projected``: name, alpha, beta (``projected`` may add distance).
    """
    alphas, betas = np.sort(landscape["alpha"].unique()), np.sort(landscape["beta"].unique())

    def surface(values: pd.Series) -> np.ndarray:
        grid = landscape.assign(value=values).pivot(index="beta", columns="alpha", values="value")
        return grid.reindex(index=betas, columns=alphas).to_numpy(dtype=float)

    figure = _figure(12, 5.4)
    loss_ax, error_ax = figure.subplots(1, 2)
    _landscape_panel(figure, loss_ax, alphas, betas, surface(landscape["loss"]), "validation loss", log=True)
    _landscape_panel(figure, error_ax, alphas, betas, surface(1.0 - landscape[primary_metric]),
                     f"validation {error_label(primary_metric)}", log=False)
    for ax in (loss_ax, error_ax):
        _mark_points(ax, members, projected)
    # One legend for both panels; a label seen in both (e.g. "diverged") is listed once.
    legend = {}
    for ax in (loss_ax, error_ax):
        handles, labels = ax.get_legend_handles_labels()
        legend.update(zip(labels, handles))
    if legend:
        figure.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=min(len(legend), 4),
                      fontsize=9)
    figure.suptitle(f"Loss and error on the plane through {', '.join(members['name'])} — {title}")
    return _save(figure, output_prefix)


# --------------------------------------------------------------------------- BO history


def pareto_figure(history: pd.DataFrame, output_prefix, *, primary_metric: str, title: str) -> tuple[Path, Path]:
    """Left: validation loss vs primary metric of every evaluation by source, the Pareto set, the chosen
    point. Right: hypervolume vs evaluation.

    ``history``: evaluation, source (member | sobol | bo), loss, <primary_metric>, finite, hypervolume,
    pareto, chosen (the BO history of ``bomf.fuse.mobo.run_mobo``).
    """
    figure = _figure(12, 5)
    front_ax, volume_ax = figure.subplots(1, 2)
    finite = history[history["finite"].astype(bool)]
    for source, (colour, marker, label) in SOURCE_STYLES.items():
        rows = finite[finite["source"] == source]
        if len(rows):
            front_ax.scatter(rows["loss"], rows[primary_metric], color=colour, marker=marker, s=30, alpha=0.8,
                             label=f"{label} ({len(rows)})", zorder=2)
    front = finite[finite["pareto"].astype(bool)].sort_values("loss")
    if len(front):
        front_ax.plot(front["loss"], front[primary_metric], color="black", linewidth=1, marker="o",
                      markerfacecolor="none", markersize=10, label=f"Pareto set ({len(front)})", zorder=3)
    chosen = finite[finite["chosen"].astype(bool)]
    if len(chosen):
        front_ax.scatter(chosen["loss"], chosen[primary_metric], marker="*", s=320, color="tab:red",
                         edgecolor="black", linewidths=0.8, label="chosen", zorder=4)
    diverged = len(history) - len(finite)
    if diverged:
        front_ax.scatter([], [], marker="", label=f"{diverged} diverged (not shown)")
    if len(finite):
        front_ax.legend(fontsize=9)
    else:
        _no_data(front_ax, "no finite evaluations")
    front_ax.set_xlabel("validation loss")
    front_ax.set_ylabel(f"validation {primary_metric}")
    front_ax.set_title("evaluations (lower loss, higher metric is better)")

    members = history[history["source"] == "member"]
    if len(members):
        volume_ax.axvspan(members["evaluation"].min() - 0.5, members["evaluation"].max() + 0.5,
                          color="tab:gray", alpha=0.15, label="members")
    searched = history[history["source"] == "bo"]
    if len(searched):
        volume_ax.axvline(searched["evaluation"].min() - 0.5, color="tab:orange", linestyle=":", label="BO starts")
    volume_ax.plot(history["evaluation"], history["hypervolume"], color="black", marker=".", label="BOMF")
    volume_ax.legend(fontsize=9)
    volume_ax.set_xlabel("evaluation (members first)")
    volume_ax.set_ylabel("hypervolume (member-normalised objectives)")
    volume_ax.set_title("dominated hypervolume")
    figure.suptitle(f"Fusion-weight search — {title}")
    return _save(figure, output_prefix)


# --------------------------------------------------------------------------- paper figures


def _heatmap(figure: Figure, ax, trials: pd.DataFrame, column: str, label: str, higher_is_better: bool,
             learning_rates: np.ndarray, batch_sizes: np.ndarray) -> None:
    table = trials.pivot_table(index="batch_size", columns="learning_rate", values=column, aggfunc="mean")
    table = table.reindex(index=batch_sizes, columns=learning_rates)  # every panel on the same full grid
    values = table.to_numpy(dtype=float)
    # Brighter is better in both rows, so the two optima are read the same way; grey cells have no value.
    colours = colormaps["viridis" if higher_is_better else "viridis_r"].with_extremes(bad="lightgray")
    image = ax.imshow(np.ma.masked_invalid(values), origin="lower", aspect="auto", cmap=colours)
    figure.colorbar(image, ax=ax, label=label, format="%.3g")
    ax.set_xticks(range(len(table.columns)), [f"{lr:.1e}" for lr in table.columns], rotation=45, ha="right")
    ax.set_yticks(range(len(table.index)), [f"{size:g}" for size in table.index])
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("batch size")
    if values.size <= ANNOTATED_CELLS:
        for (row, col), value in np.ndenumerate(values):
            if math.isfinite(value):
                ax.text(col, row, f"{value:.3g}", ha="center", va="center", fontsize=7, color="white",
                        bbox={"boxstyle": "round,pad=0.1", "facecolor": "black", "alpha": 0.35, "linewidth": 0})
    if np.isfinite(values).any():
        best = np.nanargmax(values) if higher_is_better else np.nanargmin(values)
        row, col = np.unravel_index(best, values.shape)
        # Inset a little, so the outline of a cell on the border is not clipped by the axes.
        ax.add_patch(Rectangle((col - 0.46, row - 0.46), 0.92, 0.92, fill=False, edgecolor="tab:red",
                               linewidth=2.5))


def alignment_figure(trials: pd.DataFrame, output_prefix, *, metric: str, title: str) -> tuple[Path, Path]:
    """The paper's Figure 2: for each number of frozen layers, heatmaps over learning rate x batch size of
    the best validation loss (top) and metric (bottom), the best cell of each outlined in red.

    ``trials``: frozen_layers, learning_rate, batch_size, best_val_loss, best_val_metric. Repeats of a cell
    (e.g. seeds) are averaged over their finite values; a cell with none is grey.
    """
    layers = sorted(trials["frozen_layers"].unique())
    learning_rates, batch_sizes = np.sort(trials["learning_rate"].unique()), np.sort(trials["batch_size"].unique())
    figure = _figure(max(3.6 * len(layers) + 0.6, 6.0), 7.4)
    axes = figure.subplots(2, len(layers), squeeze=False)
    for col, frozen in enumerate(layers):
        subset = trials[trials["frozen_layers"] == frozen]
        _heatmap(figure, axes[0, col], subset, "best_val_loss", "best validation loss", False, learning_rates,
                 batch_sizes)
        _heatmap(figure, axes[1, col], subset, "best_val_metric", f"best validation {metric}",
                 METRICS[metric].higher_is_better, learning_rates, batch_sizes)
        axes[0, col].set_title(f"{frozen} frozen layers")
    figure.suptitle(f"Stage-1 landscape by frozen layers (red: best cell)\n{title}")
    return _save(figure, output_prefix)


def correlation_figure(trajectories: pd.DataFrame, output_prefix, *, metric: str, title: str) -> tuple[Path, Path]:
    """The paper's Figure 3: best member's validation metric vs the fused model's (SWA of the trajectory's
    second half) across trajectories, with their Spearman rank correlation.

    ``trajectories``: best_member_metric, fused_metric, optionally frozen_layers (colours the points).
    """
    finite = trajectories[np.isfinite(trajectories["best_member_metric"])
                          & np.isfinite(trajectories["fused_metric"])]
    x, y = finite["best_member_metric"].to_numpy(float), finite["fused_metric"].to_numpy(float)
    defined = len(finite) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0
    rho = float(spearmanr(x, y).statistic) if defined else math.nan
    figure = _figure(6, 5.4)
    ax = figure.subplots()
    if "frozen_layers" in finite:
        for frozen, rows in finite.groupby("frozen_layers", sort=True):
            ax.scatter(rows["best_member_metric"], rows["fused_metric"], s=40, alpha=0.85,
                       edgecolor="black", linewidths=0.5, label=f"{frozen} frozen layers")
    else:
        ax.scatter(x, y, s=40, alpha=0.85, edgecolor="black", linewidths=0.5)
    if len(finite):
        low, high = min(x.min(), y.min()), max(x.max(), y.max())
        ax.plot([low, high], [low, high], color="tab:gray", linestyle="--", linewidth=1, label="y = x")
        ax.legend(fontsize=9)
    else:
        _no_data(ax, "no finite trajectories")
    ax.set_xlabel(f"best member: validation {metric}")
    ax.set_ylabel(f"fused (SWA, second half): validation {metric}")
    correlation = f"Spearman ρ = {rho:.3f}" if math.isfinite(rho) else "Spearman ρ undefined"
    ax.set_title(f"Best member vs fused model — {title}\n{correlation} (n = {len(finite)})")
    return _save(figure, output_prefix)
