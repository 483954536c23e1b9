"""Every figure writes a non-empty PNG and PDF, on small synthetic frames and their edge cases."""

import numpy as np
import pandas as pd
import pytest

from bomf.landscape import grid_points
from bomf.mobo import weight_columns
from bomf.plots import (alignment_figure, correlation_figure, error_label, landscape_figure, pareto_figure,
                        run_title)

TITLE = run_title("rte", "tiny", 0)
PNG_SIGNATURE = b"\x89PNG"


def assert_written(paths, prefix):
    png, pdf = paths
    assert (png.name, pdf.name) == (prefix.name + ".png", prefix.name + ".pdf")
    assert png.read_bytes()[:4] == PNG_SIGNATURE and png.stat().st_size > 5000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def synthetic_landscape(size: int = 11, metric: str = "accuracy") -> pd.DataFrame:
    alpha, beta = np.array(grid_points(size, -0.2, 1.2)).T
    return pd.DataFrame({"alpha": alpha, "beta": beta,
                         "loss": 0.4 + (alpha - 0.4) ** 2 + 2 * (beta - 0.5) ** 2 + 0.3 * alpha * beta,
                         metric: 0.85 - 0.3 * ((alpha - 0.7) ** 2 + (beta - 0.2) ** 2)})


MEMBERS = pd.DataFrame({"name": ["member 0", "member 7", "member 14"], "alpha": [0.0, 0.45, 1.0],
                        "beta": [0.0, 1.0, 0.0]})
PROJECTED = pd.DataFrame({"name": ["swa", "bomf"], "alpha": [0.48, 0.7], "beta": [0.33, 0.2],
                          "distance": [0.8, 1.3]})


def test_landscape_figure(tmp_path):
    prefix = tmp_path / "figures" / "landscape"  # the folder does not exist yet
    assert_written(landscape_figure(synthetic_landscape(), MEMBERS, prefix, primary_metric="accuracy",
                                    title=TITLE, projected=PROJECTED), prefix)


def test_landscape_figure_with_diverged_points_and_a_correlation_metric(tmp_path):
    frame = synthetic_landscape(metric="pearson")
    far = (frame["alpha"] > 1.0) & (frame["beta"] > 1.0)
    frame.loc[far, ["loss", "pearson"]] = np.nan
    frame.loc[frame.index[0], "loss"] = np.inf
    prefix = tmp_path / "landscape-diverged"
    assert_written(landscape_figure(frame, MEMBERS, prefix, primary_metric="pearson", title=TITLE), prefix)


def test_landscape_figure_with_a_flat_or_all_diverged_surface(tmp_path):
    frame = synthetic_landscape(size=3)
    frame["accuracy"] = 0.5
    frame["loss"] = np.nan
    prefix = tmp_path / "landscape-flat"
    assert_written(landscape_figure(frame, MEMBERS, prefix, primary_metric="accuracy", title=TITLE,
                                    projected=PROJECTED[["name", "alpha", "beta"]]), prefix)


def test_error_label_names_correlations_plainly():
    assert error_label("pearson") == "1 − pearson"
    assert error_label("accuracy") == "error rate (1 − accuracy)"


def synthetic_history(members: int = 4, sobol: int = 4, bo: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    sources = ["member"] * members + ["sobol"] * sobol + ["bo"] * bo
    weights = np.vstack([np.eye(members), rng.dirichlet(np.ones(members), sobol + bo)])
    frame = pd.DataFrame(weights, columns=weight_columns(members))
    frame.insert(0, "source", sources)
    frame.insert(0, "evaluation", range(len(frame)))
    frame["loss"] = rng.uniform(0.3, 0.7, len(frame))
    frame["accuracy"] = 0.4 + frame["loss"] + rng.normal(0, 0.05, len(frame))
    frame["finite"] = True
    frame["hypervolume"] = np.maximum.accumulate(rng.uniform(0, 1, len(frame)))
    loss, accuracy = frame["loss"].to_numpy(), frame["accuracy"].to_numpy()
    frame["pareto"] = [not ((loss <= l) & (accuracy >= a) & ((loss < l) | (accuracy > a))).any()
                       for l, a in zip(loss, accuracy)]
    frame["bo_seconds"] = np.where(frame["source"] == "bo", 1.5, 0.0)
    frame["eval_seconds"] = np.where(frame["source"] == "member", 0.0, 0.4)
    frame["chosen"] = frame.index == frame[frame["pareto"]]["accuracy"].idxmax()
    return frame


def test_pareto_figure_with_a_diverged_evaluation(tmp_path):
    history = synthetic_history()
    history.loc[9, ["loss", "accuracy"]] = np.nan
    history.loc[9, ["finite", "pareto", "chosen"]] = [False, False, False]
    prefix = tmp_path / "pareto"
    assert_written(pareto_figure(history, prefix, primary_metric="accuracy", title=TITLE), prefix)


def test_pareto_figure_without_bo_points(tmp_path):
    prefix = tmp_path / "pareto-no-bo"
    assert_written(pareto_figure(synthetic_history(bo=0), prefix, primary_metric="accuracy", title=TITLE), prefix)


def alignment_trials(layers, learning_rates, batch_sizes) -> pd.DataFrame:
    rows = []
    for frozen in layers:
        for lr in learning_rates:
            for size in batch_sizes:
                distance = (np.log10(lr) + 4.5) ** 2 + ((size - 16) / 16) ** 2 + 0.05 * frozen
                rows.append({"frozen_layers": frozen, "learning_rate": lr, "batch_size": size,
                             "best_val_loss": 0.4 + distance, "best_val_metric": 0.9 - 0.2 * distance})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("layers, learning_rates, batch_sizes", [
    ([0, 3, 6], np.geomspace(1e-6, 1e-4, 5), [8, 16, 32]),
    ([0, 6], np.geomspace(1e-6, 1e-4, 4), [16]),  # 1 x K
    ([6], [2e-5], [16]),  # 1 x 1
], ids=["3x5", "1xK", "1x1"])
def test_alignment_figure(tmp_path, layers, learning_rates, batch_sizes):
    prefix = tmp_path / "alignment"
    trials = alignment_trials(layers, learning_rates, batch_sizes)
    assert_written(alignment_figure(trials, prefix, metric="accuracy", title=TITLE), prefix)


def test_alignment_figure_with_a_missing_cell_and_a_diverged_trial(tmp_path):
    trials = alignment_trials([0, 6], np.geomspace(1e-6, 1e-4, 3), [8, 32]).iloc[1:]  # a cell never run
    trials.loc[trials.index[2], ["best_val_loss", "best_val_metric"]] = np.nan  # a diverged trial
    repeat = trials.iloc[[-1]].assign(best_val_loss=np.nan, best_val_metric=np.nan)  # a diverged second seed
    trials = pd.concat([trials, repeat])
    prefix = tmp_path / "alignment-holes"
    assert_written(alignment_figure(trials, prefix, metric="mcc", title=TITLE), prefix)


@pytest.mark.parametrize("with_layers", [True, False])
def test_correlation_figure(tmp_path, with_layers):
    rng = np.random.default_rng(1)
    best = rng.uniform(0.6, 0.8, 12)
    frame = pd.DataFrame({"best_member_metric": best, "fused_metric": best + rng.normal(0.01, 0.02, 12)})
    if with_layers:
        frame["frozen_layers"] = [0, 3, 6] * 4
    frame.loc[3, "fused_metric"] = np.nan
    prefix = tmp_path / "correlation"
    assert_written(correlation_figure(frame, prefix, metric="accuracy", title=TITLE), prefix)


def test_correlation_figure_with_one_trajectory(tmp_path):
    prefix = tmp_path / "correlation-one"
    frame = pd.DataFrame({"best_member_metric": [0.7], "fused_metric": [0.72]})
    assert_written(correlation_figure(frame, prefix, metric="accuracy", title=TITLE), prefix)
