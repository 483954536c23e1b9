"""Seed-level inference on hand-built evaluation records, against hand-computed values: the two-level bootstrap
(runs, then test examples), the mean over tasks, the best baseline chosen on validation, sign tests over runs
and Holm's adjustment. The example bootstrap's calibration is tests/test_tables.py's."""

import numpy as np
import pytest

from bomf.records import EvaluatedModel
from bomf.report.stats import (ALL_RUNS, AVERAGE, bomf_comparisons, bootstrap_indices, differences, holm, run_signs,
                               score_resamples)
from bomf.report.tables import _one_form

LABELS = np.array([0, 1] * 20)
WRONG = 1 - LABELS


def record(task, method, seed, *, predictions=LABELS, metric="accuracy", test=None, validation=0.8):
    """A test record whose test score is the metric of ``predictions`` unless ``test`` gives it."""
    score = float(np.mean(np.asarray(predictions) == LABELS)) if test is None else test
    return EvaluatedModel(task, "m", seed, method, metric, test={"loss": 0.4, metric: score},
                          validation={"loss": 0.5, metric: validation}, test_size=len(LABELS),
                          predictions=list(predictions), labels=list(LABELS))


def rows(frame, **where):
    for column, value in where.items():
        frame = frame[frame[column] == value]
    return frame


# ------------------------------------------------------------------------------------------------------- Holm

def test_holm_by_hand():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> non-decreasing 0.06 for the last.
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # NaN is no test: it stays NaN and m is 2; the adjustment is capped at 1.
    np.testing.assert_allclose(holm([0.02, np.nan, 0.5]), [0.04, np.nan, 0.5])
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])
    assert holm([]).size == 0


# ------------------------------------------------------------------------------------------------- sign tests

def test_sign_counts_runs_in_each_metrics_direction_with_an_exact_p():
    # RTE (accuracy): BOMF higher in 5 runs, equal in 1. Scores (MAE, lower is better): BOMF lower in 5, higher
    # in 1. Pooled: 10 better, 1 equal, 1 worse.
    records = [record("rte", "bomf", s, test=0.8) for s in range(6)]
    records += [record("rte", "swa", s, test=0.8 if s == 0 else 0.7) for s in range(6)]
    records += [record("rte", "greedy_soup", s, test=0.8) for s in range(6)]
    records += [record("scores", "bomf", s, metric="mae", test=0.3) for s in range(6)]
    records += [record("scores", "swa", s, metric="mae", test=0.2 if s == 0 else 0.5) for s in range(6)]
    signs = run_signs(records, ["swa", "greedy_soup", "learned_soup"]).set_index(["task", "baseline"])
    counts = signs[["better", "tied", "worse"]].astype(int)
    assert counts.loc[("rte", "swa")].tolist() == [5, 1, 0]
    assert counts.loc[("scores", "swa")].tolist() == [5, 0, 1]
    assert counts.loc[(ALL_RUNS, "swa")].tolist() == [10, 1, 1]
    # Two-sided binomial p over the untied runs: 2 P(X <= min) with X ~ Bin(n, 1/2).
    assert signs.loc[("rte", "swa"), "p_value"] == pytest.approx(2 / 2 ** 5)
    assert signs.loc[("scores", "swa"), "p_value"] == pytest.approx(2 * 7 / 2 ** 6)
    assert signs.loc[(ALL_RUNS, "swa"), "p_value"] == pytest.approx(2 * 12 / 2 ** 11)
    # Equal in every run: no test, so no p and no place in Holm's m (3 tests: 0.0625, 0.21875, 0.01171875).
    assert counts.loc[("rte", "greedy_soup")].tolist() == [0, 6, 0]
    assert np.isnan(signs.loc[("rte", "greedy_soup"), "p_value"]) and np.isnan(signs.loc[("rte", "greedy_soup"),
                                                                                            "p_holm"])
    assert signs.loc[(ALL_RUNS, "swa"), "p_holm"] == pytest.approx(3 * 24 / 2048)
    assert signs.loc[("rte", "swa"), "p_holm"] == pytest.approx(2 * 2 / 32)
    assert signs.loc[("scores", "swa"), "p_holm"] == pytest.approx(14 / 64)
    # A method with no runs, and a task a method did not run on, have no row.
    assert "learned_soup" not in signs.index.get_level_values("baseline")
    assert ("scores", "greedy_soup") not in signs.index


# ------------------------------------------------------------------------------------------------ bootstraps

def two_seed_scores(resamples):
    """BOMF right on every example in both runs; SWA wrong everywhere in run 0, right everywhere in run 1: the
    per-run differences are 1 and 0 on every example resample."""
    indices = bootstrap_indices(len(LABELS), resamples, 0)
    bomf = score_resamples({0: LABELS, 1: LABELS}, LABELS, "accuracy", indices)
    swa = score_resamples({0: WRONG, 1: LABELS}, LABELS, "accuracy", indices)
    return bomf, swa


def test_two_level_bootstrap_redraws_runs_the_example_bootstrap_keeps():
    resamples = 4000
    result = differences(*two_seed_scores(resamples), np.random.default_rng(0))
    assert result.full == pytest.approx(0.5) and (result.run_count, result.example_count) == (2, len(LABELS))
    # Runs fixed: every resample is (1 + 0) / 2.
    np.testing.assert_allclose(result.examples, 0.5)
    # Runs redrawn: two draws from {1, 0}, so 1, 0.5 and 0 with chances 1/4, 1/2, 1/4.
    shares = [np.mean(np.isclose(result.runs, value)) for value in (1.0, 0.5, 0.0)]
    np.testing.assert_allclose(shares, [0.25, 0.5, 0.25], atol=0.03)


def test_comparisons_report_both_bootstraps():
    bomf = [record("rte", "bomf", s) for s in (0, 1)]
    swa = [record("rte", "swa", 0, predictions=WRONG), record("rte", "swa", 1)]
    row = bomf_comparisons(bomf + swa, ["swa"], resamples=4000).iloc[0]
    assert row["difference"] == pytest.approx(0.5) and row["runs"] == 2 and row["examples"] == len(LABELS)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.5, 0.5))
    assert row["p_value"] == pytest.approx(2 / 4001)  # every resample above 0
    # The two-level interval spans both runs' differences; a quarter of its resamples sit at 0, so p ~ 2/4.
    assert (row["run_ci_low"], row["run_ci_high"]) == pytest.approx((0.0, 1.0))
    assert row["run_p_value"] == pytest.approx(0.5, abs=0.06)


def test_runs_share_each_resample_of_the_shared_test_examples():
    """Three runs with the same predictions: redrawing them changes nothing, so both bootstraps agree exactly.
    Example resamples drawn afresh per run would narrow the two-level interval by about sqrt(3) instead."""
    rng = np.random.default_rng(5)
    noisy = np.where(rng.uniform(size=len(LABELS)) < 0.7, LABELS, WRONG)
    records = [record("rte", "bomf", s) for s in range(3)] + [record("rte", "swa", s, predictions=noisy)
                                                              for s in range(3)]
    row = bomf_comparisons(records, ["swa"], resamples=500).iloc[0]
    assert row["ci_low"] < row["ci_high"]
    assert (row["run_ci_low"], row["run_ci_high"], row["run_p_value"]) == (row["ci_low"], row["ci_high"],
                                                                           row["p_value"])


def test_best_baseline_is_chosen_on_validation_against_bomf_on_the_same_runs():
    bomf = [record("rte", "bomf", s, validation=v) for s, v in enumerate((0.80, 0.70, 0.75))]
    # bo_metric: worst on test, 0.01 above BOMF on validation in every run.
    bo_metric = [record("rte", "bo_metric", s, predictions=WRONG, validation=v)
                 for s, v in enumerate((0.81, 0.71, 0.76))]
    # grid_finetune (seed 0 only): best on test and on mean validation (0.805 > 0.76), but 0.005 above BOMF on
    # its one run, less than bo_metric's 0.01.
    grid = [record("rte", "grid_finetune", 0, validation=0.805)]
    frame = bomf_comparisons(bomf + bo_metric + grid, ["grid_finetune", "bo_metric"], resamples=20)
    assert rows(frame, comparison="best baseline")["baseline"].tolist() == ["bo_metric"]
    # Equal gaps: the earlier baseline in the given order.
    tied = [record("rte", "grid_finetune", s, validation=v) for s, v in enumerate((0.81, 0.71, 0.76))]
    frame = bomf_comparisons(bomf + bo_metric + tied, ["grid_finetune", "bo_metric"], resamples=20)
    assert rows(frame, comparison="best baseline")["baseline"].tolist() == ["grid_finetune"]


def test_the_mean_over_tasks_and_holm_over_the_comparisons():
    # RTE: BOMF right, SWA wrong in both runs (Δ = 1); MRPC: both right (Δ = 0). Avg Δ = 0.5 on every resample.
    records = [record(task, "bomf", s, metric=m) for task, m in (("rte", "accuracy"), ("mrpc", "f1")) for s in (0, 1)]
    records += [record("rte", "swa", s, predictions=WRONG) for s in (0, 1)]
    records += [record("mrpc", "swa", s, metric="f1") for s in (0, 1)]
    # learned_soup: best on RTE's validation but not run on MRPC; greedy_soup run on both, best of those on
    # the mean gap over tasks (+0.05 on RTE, 0 on MRPC, against SWA's 0 and 0).
    records += [record("rte", "learned_soup", s, validation=0.9) for s in (0, 1)]
    records += [record("rte", "greedy_soup", s, validation=0.85) for s in (0, 1)]
    records += [record("mrpc", "greedy_soup", s, metric="f1") for s in (0, 1)]
    baselines = ["swa", "greedy_soup", "learned_soup"]
    frame = bomf_comparisons(records, baselines, resamples=50, average=_one_form)
    assert rows(frame, task="rte", comparison="best baseline")["baseline"].tolist() == ["learned_soup"]
    assert rows(frame, task="mrpc", comparison="best baseline")["baseline"].tolist() == ["swa"]
    average = rows(frame, task=AVERAGE).set_index("comparison")
    assert average.loc["best baseline", "baseline"] == "greedy_soup" and average.loc["swa", "metric"] == AVERAGE
    swa = average.loc["swa"]
    assert swa["difference"] == pytest.approx(0.5) and (swa["runs"], swa["examples"]) == (4, 2 * len(LABELS))
    assert (swa["ci_low"], swa["ci_high"], swa["run_ci_low"], swa["run_ci_high"]) == pytest.approx((0.5,) * 4)
    # Holm over the 5 distinct (task, baseline) comparisons (MRPC's best baseline is SWA again, counted once):
    # RTE and Avg vs SWA have every resample above 0, p = 2/51; RTE vs learned soup, MRPC vs SWA and Avg vs greedy
    # soup (right everywhere) have Δ = 0 on every resample, p = 1. Holm: 5 x 2/51, then 4 x 2/51 raised to it.
    p = frame.drop_duplicates(["task", "baseline"]).set_index(["task", "baseline"])
    assert len(p) == 5
    assert p.loc[("rte", "swa"), "p_value"] == p.loc[(AVERAGE, "swa"), "p_value"] == pytest.approx(2 / 51)
    assert p.loc[("rte", "swa"), "p_holm"] == p.loc[(AVERAGE, "swa"), "p_holm"] == pytest.approx(10 / 51)
    for key in (("rte", "learned_soup"), ("mrpc", "swa"), (AVERAGE, "greedy_soup")):
        assert p.loc[key, "p_value"] == p.loc[key, "p_holm"] == 1.0
    # No mean without the caller's rule, nor over metrics of different forms (an accuracy and an MAE).
    assert AVERAGE not in set(bomf_comparisons(records, baselines, resamples=50)["task"])
    mae = [record("scores", method, 0, metric="mae", test=0.3) for method in ("bomf", "swa")]
    assert AVERAGE not in set(bomf_comparisons(records + mae, baselines, resamples=50, average=_one_form)["task"])
