"""Figures read back from the matplotlib Figure each function builds (``plots._save`` intercepted): the
points, lines, bands and labels must sit at the data coordinates of the frames drawn. One test lets the
figure be written, and checks the PNG and PDF."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.contour import ContourSet
from matplotlib.patches import Polygon, Rectangle

from bomf.fuse.landscape import grid_points
from bomf.fuse.mobo import weight_columns
from bomf.report import plots
from bomf.report.plots import (alignment_figure, correlation_figure, error_label, landscape_figure, pareto_figure,
                               run_title)

TITLE = run_title("rte", "tiny", 0)
PNG_SIGNATURE = b"\x89PNG"


def assert_written(paths, prefix):
    png, pdf = paths
    assert (png.name, pdf.name) == (prefix.name + ".png", prefix.name + ".pdf")
    assert png.read_bytes()[:4] == PNG_SIGNATURE and png.stat().st_size > 5000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


class Drawn:
    """The Figures the plotting functions hand to ``_save``; written to disk only where ``write``."""

    def __init__(self, save):
        self.save, self.figures, self.write = save, [], False

    def __call__(self, figure, output_prefix):
        self.figures.append(figure)
        if self.write:
            return self.save(figure, output_prefix)
        return Path(f"{output_prefix}.png"), Path(f"{output_prefix}.pdf")

    @property
    def last(self):
        assert len(self.figures) == 1
        return self.figures[-1]


@pytest.fixture
def drawn(monkeypatch):
    capture = Drawn(plots._save)
    monkeypatch.setattr(plots, "_save", capture)
    return capture


def offsets(collection) -> np.ndarray:
    return np.asarray(collection.get_offsets(), dtype=float).reshape(-1, 2)


def collection(ax, label: str) -> PathCollection:
    (found,) = [c for c in ax.collections if c.get_label() == label]
    return found


def line(ax, label: str):
    (found,) = [item for item in ax.get_lines() if item.get_label() == label]
    return found


def same_points(actual: np.ndarray, expected) -> None:
    """The same points in any order."""
    expected = np.asarray(expected, dtype=float).reshape(-1, 2)
    assert len(actual) == len(expected)
    np.testing.assert_allclose(actual[np.lexsort(actual.T[::-1])], expected[np.lexsort(expected.T[::-1])])


def panel(figure, title: str):
    (found,) = [ax for ax in figure.axes if ax.get_title() == title]
    return found


def synthetic_landscape(size: int = 11, metric: str = "accuracy") -> pd.DataFrame:
    alpha, beta = np.array(grid_points(size, -0.2, 1.2)).T
    return pd.DataFrame({"alpha": alpha, "beta": beta,
                         "loss": 0.4 + (alpha - 0.4) ** 2 + 2 * (beta - 0.5) ** 2 + 0.3 * alpha * beta,
                         metric: 0.85 - 0.3 * ((alpha - 0.7) ** 2 + (beta - 0.2) ** 2)})


MEMBERS = pd.DataFrame({"name": ["member 0", "member 7", "member 14"], "alpha": [0.0, 0.45, 1.0],
                        "beta": [0.0, 1.0, 0.0]})
PROJECTED = pd.DataFrame({"name": ["swa", "bomf"], "alpha": [0.48, 0.7], "beta": [0.33, 0.2],
                          "distance": [0.8, 1.3]})


def landscape_panels(figure, metric: str):
    return panel(figure, "validation loss"), panel(figure, f"validation {error_label(metric)}")


def check_members_and_projected(ax, projected: pd.DataFrame | None) -> None:
    """The members' triangle, their white markers and name labels, and each projected point, at their
    (alpha, beta)."""
    corners = MEMBERS[["alpha", "beta"]].to_numpy()
    (triangle,) = [patch for patch in ax.patches if isinstance(patch, Polygon)]
    same_points(np.unique(triangle.get_xy(), axis=0), corners)
    (markers,) = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_label().startswith("_")]
    same_points(offsets(markers), corners)
    names = {text.get_text(): text.xy for text in ax.texts if hasattr(text, "xy")}
    assert names == {row.name: (row.alpha, row.beta) for row in MEMBERS.itertuples()}
    if projected is None:
        return
    for row in projected.itertuples():
        label = row.name if "distance" not in projected else f"{row.name} (off-plane {row.distance:.3g})"
        np.testing.assert_allclose(offsets(collection(ax, label)), [[row.alpha, row.beta]])


def check_surface(ax, frame: pd.DataFrame, values: pd.Series, log: bool) -> None:
    """The filled contours span the finite values and are drawn with alpha across and beta up: the lowest
    band holds the grid's lowest point and not its mirror image (alpha and beta swapped)."""
    (bands,) = [c for c in ax.collections if isinstance(c, ContourSet)]
    finite = values[np.isfinite(values) & ((values > 0) if log else True)]
    levels = np.asarray(bands.levels)
    if log:
        assert levels[0] == pytest.approx(finite.min()) and levels[-1] == pytest.approx(finite.max())
        np.testing.assert_allclose(np.diff(np.log(levels)), np.log(levels[1] / levels[0]))  # log-spaced
    else:
        assert levels[0] <= finite.min() < levels[1] and levels[-2] < finite.max() <= levels[-1]
    at = {(a, b): v for a, b, v in zip(frame["alpha"], frame["beta"], values)}
    alpha, beta = frame.loc[finite.idxmin(), ["alpha", "beta"]]
    lowest = bands.get_paths()[0]
    assert lowest.contains_point((alpha, beta))
    mirror = min(at, key=lambda point: math.dist(point, (beta, alpha)))
    assert at[mirror] > levels[1]  # the mirror point is in a higher band: the check below can tell them apart
    assert not lowest.contains_point(mirror)


def test_landscape_figure(tmp_path, drawn):
    drawn.write = True  # the one figure written to disk
    prefix = tmp_path / "figures" / "landscape"  # the folder does not exist yet
    frame = synthetic_landscape()
    assert_written(landscape_figure(frame, MEMBERS, prefix, primary_metric="accuracy", title=TITLE,
                                    projected=PROJECTED), prefix)
    figure = drawn.last
    loss_ax, error_ax = landscape_panels(figure, "accuracy")
    check_surface(loss_ax, frame, frame["loss"], log=True)
    check_surface(error_ax, frame, 1.0 - frame["accuracy"], log=False)
    for ax in (loss_ax, error_ax):
        check_members_and_projected(ax, PROJECTED)
        assert not [c for c in ax.collections if c.get_label() == "diverged"]
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["swa (off-plane 0.8)", "bomf (off-plane 1.3)"]
    assert "member 0, member 7, member 14" in figure.get_suptitle() and TITLE in figure.get_suptitle()


def test_landscape_figure_with_diverged_points_and_a_correlation_metric(tmp_path, drawn):
    frame = synthetic_landscape(metric="pearson")
    far = (frame["alpha"] > 1.0) & (frame["beta"] > 1.0)
    frame.loc[far, ["loss", "pearson"]] = np.nan
    frame.loc[frame.index[0], "loss"] = np.inf
    landscape_figure(frame, MEMBERS, tmp_path / "landscape-diverged", primary_metric="pearson", title=TITLE)
    figure = drawn.last
    loss_ax, error_ax = landscape_panels(figure, "pearson")
    assert error_ax.get_title() == "validation 1 − pearson"
    check_surface(loss_ax, frame, frame["loss"], log=True)
    check_surface(error_ax, frame, 1.0 - frame["pearson"], log=False)
    # Crosses exactly where each surface has no value: the inf loss is one more on the loss panel only.
    crosses = frame[["alpha", "beta"]].to_numpy()
    same_points(offsets(collection(loss_ax, "diverged")), crosses[~np.isfinite(frame["loss"])])
    same_points(offsets(collection(error_ax, "diverged")), crosses[far.to_numpy()])
    assert far.sum() == 4 and (~np.isfinite(frame["loss"])).sum() == 5
    for ax in (loss_ax, error_ax):
        check_members_and_projected(ax, None)
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["diverged"]  # once for both panels


def test_landscape_figure_with_a_flat_or_all_diverged_surface(tmp_path, drawn):
    frame = synthetic_landscape(size=3)
    frame["accuracy"] = 0.5
    frame["loss"] = np.nan
    projected = PROJECTED[["name", "alpha", "beta"]]
    landscape_figure(frame, MEMBERS, tmp_path / "landscape-flat", primary_metric="accuracy", title=TITLE,
                     projected=projected)
    loss_ax, error_ax = landscape_panels(drawn.last, "accuracy")
    assert not [c for c in loss_ax.collections if isinstance(c, ContourSet)]
    assert "no finite values" in [text.get_text() for text in loss_ax.texts]
    same_points(offsets(collection(loss_ax, "diverged")), frame[["alpha", "beta"]].to_numpy())  # all 9
    (bands,) = [c for c in error_ax.collections if isinstance(c, ContourSet)]
    assert bands.levels[0] < 0.5 < bands.levels[-1]  # a flat error of 0.5 still fills a band around it
    assert not [c for c in error_ax.collections if c.get_label() == "diverged"]
    for ax in (loss_ax, error_ax):
        check_members_and_projected(ax, projected)


def test_error_label_names_correlations_plainly():
    assert error_label("pearson") == "1 − pearson"
    assert error_label("accuracy") == "error rate (1 − accuracy)"


def synthetic_history(members: int = 4, sobol: int = 4, bo: int = 6, diverged=()) -> pd.DataFrame:
    """A BO history whose accuracy rises with the loss (a real trade-off); ``diverged`` rows NaN. Its Pareto
    set is computed here by brute force over the finite rows, and the chosen row is the middle of the front,
    not one of its ends."""
    rng = np.random.default_rng(0)
    sources = ["member"] * members + ["sobol"] * sobol + ["bo"] * bo
    weights = np.vstack([np.eye(members), rng.dirichlet(np.ones(members), sobol + bo)])
    frame = pd.DataFrame(weights, columns=weight_columns(members))
    frame.insert(0, "source", sources)
    frame.insert(0, "evaluation", range(len(frame)))
    frame["loss"] = rng.uniform(0.3, 0.7, len(frame))
    frame["accuracy"] = 0.4 + frame["loss"] + rng.normal(0, 0.05, len(frame))
    frame.loc[list(diverged), ["loss", "accuracy"]] = np.nan
    frame["finite"] = np.isfinite(frame["loss"]) & np.isfinite(frame["accuracy"])
    frame["hypervolume"] = np.maximum.accumulate(rng.uniform(0, 1, len(frame)))
    loss, accuracy = frame["loss"].to_numpy(), frame["accuracy"].to_numpy()
    frame["pareto"] = [bool(finite) and not any(loss[j] <= loss[i] and accuracy[j] >= accuracy[i]
                                                and (loss[j] < loss[i] or accuracy[j] > accuracy[i])
                                                for j in range(len(frame)) if frame["finite"][j])
                       for i, finite in enumerate(frame["finite"])]
    frame["bo_seconds"] = np.where(frame["source"] == "bo", 1.5, 0.0)
    frame["eval_seconds"] = np.where(frame["source"] == "member", 0.0, 0.4)
    front = frame[frame["pareto"]].sort_values("loss").index
    frame["chosen"] = frame.index == front[len(front) // 2]
    return frame


def check_pareto_figure(figure, history: pd.DataFrame) -> None:
    front_ax = panel(figure, "evaluations (lower loss, higher metric is better)")
    volume_ax = panel(figure, "dominated hypervolume")
    finite = history[history["finite"]]
    # Every finite evaluation once, in the colour of its source, at (loss, accuracy); diverged ones nowhere.
    for source, label in (("member", "members"), ("sobol", "Sobol"), ("bo", "BO")):
        rows = finite[finite["source"] == source]
        if len(rows):
            same_points(offsets(collection(front_ax, f"{label} ({len(rows)})")), rows[["loss", "accuracy"]])
        else:
            assert not [c for c in front_ax.collections if c.get_label().startswith(label)]
    # The Pareto set: a line through the front's points in order of loss, along which accuracy rises.
    front = finite[finite["pareto"]].sort_values("loss")
    assert 3 <= len(front) < len(finite)
    pareto_line = line(front_ax, f"Pareto set ({len(front)})")
    np.testing.assert_allclose(pareto_line.get_xydata(), front[["loss", "accuracy"]].to_numpy())
    assert (np.diff(pareto_line.get_xydata()[:, 1]) > 0).all()
    # The chosen row: one star at its (loss, accuracy), on the line but at neither end of it.
    chosen = history[history["chosen"]]
    star = collection(front_ax, "chosen")
    np.testing.assert_allclose(offsets(star), chosen[["loss", "accuracy"]].to_numpy())
    assert star.get_sizes().tolist() == [320]
    assert front.index[0] != chosen.index[0] != front.index[-1]
    # Hypervolume against evaluation, the members' span shaded, a mark where BO starts.
    np.testing.assert_allclose(line(volume_ax, "BOMF").get_xydata(), history[["evaluation", "hypervolume"]])
    (span,) = [patch for patch in volume_ax.patches if patch.get_label() == "members"]
    members = history[history["source"] == "member"]["evaluation"]
    assert (span.get_x(), span.get_x() + span.get_width()) == pytest.approx((members.min() - 0.5, members.max() + 0.5))
    bo = history[history["source"] == "bo"]["evaluation"]
    starts = [item for item in volume_ax.get_lines() if item.get_label() == "BO starts"]
    if len(bo):
        assert np.asarray(starts[0].get_xdata(), dtype=float).tolist() == [bo.min() - 0.5] * 2
    else:
        assert not starts


def test_pareto_figure_with_a_diverged_evaluation(tmp_path, drawn):
    history = synthetic_history(diverged=[8])
    # Row 8 (BO) was on the front and hid row 7: diverged, it leaves the front and row 7 joins it.
    assert synthetic_history()["pareto"][8] and not synthetic_history()["pareto"][7] and history["pareto"][7]
    pareto_figure(history, tmp_path / "pareto", primary_metric="accuracy", title=TITLE)
    check_pareto_figure(drawn.last, history)
    front_ax = drawn.last.axes[0]
    labels = front_ax.get_legend_handles_labels()[1]
    assert "1 diverged (not shown)" in labels
    assert front_ax.get_ylabel() == "validation accuracy"


def test_pareto_figure_without_bo_points(tmp_path, drawn):
    history = synthetic_history(bo=0)
    pareto_figure(history, tmp_path / "pareto-no-bo", primary_metric="accuracy", title=TITLE)
    check_pareto_figure(drawn.last, history)
    assert not [label for label in drawn.last.axes[0].get_legend_handles_labels()[1] if "diverged" in label]


def alignment_trials(layers, learning_rates, batch_sizes) -> pd.DataFrame:
    rows = []
    for frozen in layers:
        for lr in learning_rates:
            for size in batch_sizes:
                distance = (np.log10(lr) + 4.5) ** 2 + ((size - 16) / 16) ** 2 + 0.05 * frozen
                rows.append({"frozen_layers": frozen, "learning_rate": lr, "batch_size": size,
                             "best_val_loss": 0.4 + distance, "best_val_metric": 0.9 - 0.2 * distance})
    return pd.DataFrame(rows)


def expected_cells(trials: pd.DataFrame, frozen, column: str) -> np.ndarray:
    """(batch sizes x learning rates, both ascending over every trial) mean of the finite values, by loops."""
    learning_rates, batch_sizes = sorted(set(trials["learning_rate"])), sorted(set(trials["batch_size"]))
    cells = np.full((len(batch_sizes), len(learning_rates)), np.nan)
    for row, size in enumerate(batch_sizes):
        for col, lr in enumerate(learning_rates):
            values = [value for f, rate, b, value in zip(trials["frozen_layers"], trials["learning_rate"],
                                                         trials["batch_size"], trials[column])
                      if (f, rate, b) == (frozen, lr, size) and math.isfinite(value)]
            if values:
                cells[row, col] = sum(values) / len(values)
    return cells


def check_alignment_figure(figure, trials: pd.DataFrame) -> None:
    layers = sorted(set(trials["frozen_layers"]))
    panels = [ax for ax in figure.axes if ax.images]
    assert len(panels) == 2 * len(layers)
    learning_rates, batch_sizes = sorted(set(trials["learning_rate"])), sorted(set(trials["batch_size"]))
    for index, ax in enumerate(panels):
        top, frozen = index < len(layers), layers[index % len(layers)]
        cells = expected_cells(trials, frozen, "best_val_loss" if top else "best_val_metric")
        (image,) = ax.images
        drawn_cells = np.ma.filled(np.ma.asarray(image.get_array(), dtype=float), np.nan)
        np.testing.assert_allclose(drawn_cells, cells)  # rows batch size up, columns learning rate across
        assert [t.get_text() for t in ax.get_xticklabels()] == [f"{lr:.1e}" for lr in learning_rates]
        assert [t.get_text() for t in ax.get_yticklabels()] == [f"{size:g}" for size in batch_sizes]
        if top:
            assert ax.get_title() == f"{frozen} frozen layers"
        # Each finite cell's value printed on it.
        labels = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in ax.texts}
        assert labels == {(col, row): f"{v:.3g}" for (row, col), v in np.ndenumerate(cells) if math.isfinite(v)}
        # The red outline on the best cell (lowest loss on top, highest metric below), found by brute force.
        finite = [(v if top else -v, row, col) for (row, col), v in np.ndenumerate(cells) if math.isfinite(v)]
        (outline,) = [patch for patch in ax.patches if isinstance(patch, Rectangle)]
        if finite:
            _, row, col = min(finite)
            assert outline.get_xy() == pytest.approx((col - 0.46, row - 0.46))


@pytest.mark.parametrize("layers, learning_rates, batch_sizes", [
    ([0, 3, 6], np.geomspace(1e-6, 1e-4, 5), [8, 16, 32]),
    ([0, 6], np.geomspace(1e-6, 1e-4, 4), [16]),  # 1 x K
    ([6], [2e-5], [16]),  # 1 x 1
], ids=["3x5", "1xK", "1x1"])
def test_alignment_figure(tmp_path, drawn, layers, learning_rates, batch_sizes):
    trials = alignment_trials(layers, learning_rates, batch_sizes)
    alignment_figure(trials, tmp_path / "alignment", metric="accuracy", title=TITLE)
    check_alignment_figure(drawn.last, trials)


def test_alignment_figure_with_a_missing_cell_and_a_diverged_trial(tmp_path, drawn):
    trials = alignment_trials([0, 6], np.geomspace(1e-6, 1e-4, 3), [8, 32]).iloc[1:]  # a cell never run
    trials.loc[trials.index[2], ["best_val_loss", "best_val_metric"]] = np.nan  # a diverged trial
    repeat = trials.iloc[[-1]].assign(best_val_loss=np.nan, best_val_metric=np.nan)  # a diverged second seed
    shifted = trials.iloc[[-2]].assign(best_val_loss=trials.iloc[-2]["best_val_loss"] + 0.2)  # a second seed
    trials = pd.concat([trials, repeat, shifted])
    alignment_figure(trials, tmp_path / "alignment-holes", metric="mcc", title=TITLE)
    check_alignment_figure(drawn.last, trials)
    loss_cells = expected_cells(trials, 0, "best_val_loss")
    assert np.isnan(loss_cells[0, 0]) and np.isnan(loss_cells[1, 1])  # never run; diverged
    assert np.isfinite(expected_cells(trials, 6, "best_val_loss")).all()  # the NaN repeat is averaged away
    assert "best validation mcc" in [ax.get_ylabel() for ax in drawn.last.axes]  # the colour bar's label


def spearman_by_ranks(x, y) -> float:
    """Pearson's r of the ranks (the values here are distinct)."""
    rx, ry = np.argsort(np.argsort(x)).astype(float), np.argsort(np.argsort(y)).astype(float)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / math.sqrt((rx * rx).sum() * (ry * ry).sum()))


def correlation_title(figure) -> str:
    (ax,) = figure.axes
    return ax.get_title()


@pytest.mark.parametrize("with_layers", [True, False])
def test_correlation_figure(tmp_path, drawn, with_layers):
    rng = np.random.default_rng(1)
    best = rng.uniform(0.6, 0.8, 12)
    frame = pd.DataFrame({"best_member_metric": best, "fused_metric": best + rng.normal(0.01, 0.02, 12)})
    if with_layers:
        frame["frozen_layers"] = [0, 3, 6] * 4
    frame.loc[3, "fused_metric"] = np.nan
    correlation_figure(frame, tmp_path / "correlation", metric="accuracy", title=TITLE)
    (ax,) = drawn.last.axes
    finite = frame.drop(index=3)
    rho = spearman_by_ranks(finite["best_member_metric"], finite["fused_metric"])
    assert 0.2 < rho < 0.99  # neither trivial nor perfect, so a wrong ρ shows
    assert f"Spearman ρ = {rho:.3f} (n = 11)" in ax.get_title()
    points = finite[["best_member_metric", "fused_metric"]]
    if with_layers:
        for frozen in (0, 3, 6):
            same_points(offsets(collection(ax, f"{frozen} frozen layers")), points[finite["frozen_layers"] == frozen])
    else:
        (scatter,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        same_points(offsets(scatter), points)
    low, high = points.to_numpy().min(), points.to_numpy().max()
    np.testing.assert_allclose(line(ax, "y = x").get_xydata(), [[low, low], [high, high]])


@pytest.mark.parametrize("direction, expected", [(1, "Spearman ρ = 1.000"), (-1, "Spearman ρ = -1.000")])
def test_correlation_figure_of_a_monotone_relation(tmp_path, drawn, direction, expected):
    best = np.linspace(0.6, 0.8, 7)
    frame = pd.DataFrame({"best_member_metric": best, "fused_metric": 0.7 + direction * (best - 0.7) ** 3})
    correlation_figure(frame, tmp_path / "correlation-monotone", metric="f1", title=TITLE)
    assert f"{expected} (n = 7)" in correlation_title(drawn.last)


def test_correlation_figure_with_one_trajectory(tmp_path, drawn):
    frame = pd.DataFrame({"best_member_metric": [0.7], "fused_metric": [0.72]})
    correlation_figure(frame, tmp_path / "correlation-one", metric="accuracy", title=TITLE)
    assert "Spearman ρ undefined (n = 1)" in correlation_title(drawn.last)
    (ax,) = drawn.last.axes
    (scatter,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(offsets(scatter), [[0.7, 0.72]])
