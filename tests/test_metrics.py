"""Metrics against values worked out by hand, the registry's declarations, and the model-ranking key."""

import math
import subprocess
import sys

import numpy as np
import pytest

from bomf.metrics import LOSS, METRICS, compute_metrics, metrics_of, ranking_key, sign
from bomf.tasks.kinds import KINDS
from bomf.tasks.registry import GLUE_TASKS

REGRESSION_METRICS = metrics_of("regression")
CORRELATIONS = ("pearson", "spearman")
ARRAY_METRICS = sorted(name for name, metric in METRICS.items() if metric.statistics is None)

# predictions / labels: TP = 2 (rows 0, 3), TN = 1 (row 1), FP = 1 (row 2), FN = 1 (row 4)
PRED = np.array([1, 0, 1, 1, 0])
GOLD = np.array([1, 0, 0, 1, 1])


def test_accuracy():
    assert METRICS["accuracy"](PRED, GOLD) == pytest.approx(3 / 5)
    assert METRICS["accuracy"](GOLD, GOLD) == 1.0


def test_f1():
    precision, recall = 2 / 3, 2 / 3
    assert METRICS["f1"](PRED, GOLD) == pytest.approx(2 * precision * recall / (precision + recall))
    # Positive class is 1: precision 1/1, recall 1/3 -> F1 = 0.5.
    assert METRICS["f1"](np.array([1, 0, 0, 0]), np.array([1, 1, 1, 0])) == pytest.approx(0.5)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_f1_without_positive_predictions_is_zero():
    assert METRICS["f1"](np.array([0, 0, 0]), np.array([1, 0, 1])) == 0.0


def test_mcc():
    tp, tn, fp, fn = 2, 1, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert expected == pytest.approx(1 / 6)
    assert METRICS["mcc"](PRED, GOLD) == pytest.approx(expected)
    assert METRICS["mcc"](GOLD, GOLD) == pytest.approx(1.0)
    assert METRICS["mcc"](1 - GOLD, GOLD) == pytest.approx(-1.0)
    assert METRICS["mcc"](np.array([1, 1, 1, 1, 1]), GOLD) == 0.0  # one predicted class: no correlation


def test_pearson():
    predictions, labels = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 5.0, 9.0])
    # deviations (-1.5, -.5, .5, 1.5) and (-3, -1, 0, 4): cov sum 11, squares 5 and 26
    assert METRICS["pearson"](predictions, labels) == pytest.approx(11 / math.sqrt(5 * 26))
    assert METRICS["pearson"](predictions, -2 * predictions + 1) == pytest.approx(-1.0)


def test_spearman():
    predictions, labels = np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 30.0, 20.0, 40.0])
    # rank differences (0, -1, 1, 0): rho = 1 - 6 * 2 / (4 * (16 - 1))
    assert METRICS["spearman"](predictions, labels) == pytest.approx(1 - 6 * 2 / (4 * 15))
    # Monotone but not linear: Spearman 1, Pearson below 1.
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert METRICS["spearman"](x, x**3) == pytest.approx(1.0)
    assert METRICS["pearson"](x, x**3) < 0.99


@pytest.mark.parametrize("name", CORRELATIONS)
def test_constant_predictions_have_zero_correlation(name):
    labels = np.array([0.5, 1.5, 3.0, 4.0])
    assert METRICS[name](np.full(4, 2.5), labels) == 0.0
    # A mean, as the trivial answer predicts: its std rounds to ~1e-16 (scipy then returns NaN), still constant.
    mean = float(np.mean([0.2, 4.6, 3.3, 2.7, 1.9]))
    assert np.std(np.full(800, mean)) > 0
    assert METRICS[name](np.full(800, mean), np.resize(labels, 800)) == 0.0
    assert METRICS[name].rows(np.full((1, 800), mean), np.resize(labels, (1, 800)))[0] == 0.0
    assert METRICS[name](labels, np.full(4, 1.0)) == 0.0  # constant labels too
    assert not math.isnan(METRICS[name](np.zeros(4), np.zeros(4)))


def test_compute_metrics_returns_python_floats_for_each_name():
    scores = compute_metrics(["f1", "accuracy"], PRED, GOLD)
    assert list(scores) == ["f1", "accuracy"]
    assert all(type(v) is float for v in scores.values())
    assert scores == {"f1": pytest.approx(2 / 3), "accuracy": pytest.approx(0.6)}
    for task in GLUE_TASKS.values():  # every task's metrics are registered
        assert set(task.metrics) <= set(METRICS)


def test_ranking_key_orders_metric_then_loss_then_non_finite():
    candidates = {
        "best": {"accuracy": 0.8, "loss": 0.60},
        "tie_higher_loss": {"accuracy": 0.8, "loss": 0.70},
        "lower_metric_low_loss": {"accuracy": 0.7, "loss": 0.10},
        "nan_loss": {"accuracy": 0.7, "loss": math.nan},
        "nan_metric_low_loss": {"accuracy": math.nan, "loss": 0.05},
        "nan_everything": {"accuracy": math.nan, "loss": math.nan},
    }
    order = sorted(candidates, key=lambda k: ranking_key(candidates[k], "accuracy"), reverse=True)
    assert order == ["best", "tie_higher_loss", "lower_metric_low_loss", "nan_loss", "nan_metric_low_loss",
                     "nan_everything"]
    assert max(candidates.values(), key=lambda s: ranking_key(s, "accuracy")) is candidates["best"]
    # The primary metric is the one asked for, not the first key.
    assert ranking_key({"f1": 0.3, "accuracy": 0.9, "loss": 1.0}, "f1") == (0.3, -1.0)
    assert ranking_key({"accuracy": math.inf, "loss": 0.1}, "accuracy")[0] == -math.inf


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ARRAY_METRICS)
def test_row_metrics_equal_the_per_call_metrics(name):
    """The bootstrap's all-resamples-at-once metrics give scikit-learn's / scipy's values on every row,
    degenerate rows included (one predicted class, no positive, constant predictions, ties)."""
    rng = np.random.default_rng(0)
    if name in REGRESSION_METRICS:
        labels = rng.integers(0, 6, size=(40, 25)).astype(float)  # STS-B-like scores with many ties
        predictions = labels + rng.normal(0, 2, size=labels.shape)
        predictions[0] = 2.5  # a collapsed regressor
        predictions[1] = np.round(predictions[1])  # ties in the predictions too
    else:
        classes = 3 if name == "mcc" else 2  # F1 is binary; MCC takes any number of classes
        labels = rng.integers(0, classes, size=(40, 25))
        predictions = np.where(rng.random(labels.shape) < 0.7, labels, rng.integers(0, classes, labels.shape))
        predictions[0] = 0  # a single predicted class / no positive prediction
        labels[1] = 0
        predictions[1] = 0  # no positive anywhere
    expected = [METRICS[name](p, y) for p, y in zip(predictions, labels)]
    assert METRICS[name].rows(predictions, labels) == pytest.approx(expected, abs=1e-12)


def test_error_rate_and_mae_by_hand():
    assert METRICS["error_rate"](PRED, GOLD) == pytest.approx(2 / 5)  # rows 2 and 4 wrong
    assert METRICS["error_rate"](GOLD, GOLD) == 0.0
    # |1.5-1| + |2-4| + |3-3| = 2.5 over 3 examples
    assert METRICS["mae"](np.array([1.5, 2.0, 3.0]), np.array([1.0, 4.0, 3.0])) == pytest.approx(2.5 / 3)


def test_every_metric_is_declared_whole_and_reported_by_its_kinds():
    for name, metric in METRICS.items():
        assert metric.name == name and metric.label
        low, high = metric.range
        assert low < high and metric.kinds and set(metric.kinds) <= set(KINDS)
        for kind in metric.kinds:
            assert name in KINDS[kind].metrics
    # At least one built-in metric of each kind family is lower-is-better.
    assert not METRICS["error_rate"].higher_is_better and not METRICS["mae"].higher_is_better
    assert {"error_rate", "mae"} <= set(KINDS["classification"].metrics) | set(KINDS["regression"].metrics)


def test_direction_sign_scale_and_error():
    assert sign(LOSS) == -1.0 and sign("accuracy") == 1.0 and sign("error_rate") == -1.0 and sign("mae") == -1.0
    assert METRICS["accuracy"].scale == METRICS["mcc"].scale == METRICS["error_rate"].scale == 100.0
    assert METRICS["mae"].scale == 1.0  # unbounded: shown as it is
    assert METRICS["accuracy"].error(0.8) == pytest.approx(0.2)
    assert METRICS["pearson"].error(0.5) == pytest.approx(0.5)
    assert METRICS["error_rate"].error(0.3) == pytest.approx(0.3)
    assert METRICS["mae"].error(1.7) == pytest.approx(1.7)


def test_ranking_key_ranks_a_lower_is_better_metric_lowest_first():
    candidates = {"low_mae": {"mae": 0.2, "loss": 0.9}, "tie_lower_loss": {"mae": 0.4, "loss": 0.1},
                  "tie_higher_loss": {"mae": 0.4, "loss": 0.5}, "nan": {"mae": math.nan, "loss": 0.01}}
    order = sorted(candidates, key=lambda k: ranking_key(candidates[k], "mae"), reverse=True)
    assert order == ["low_mae", "tie_lower_loss", "tie_higher_loss", "nan"]
    assert ranking_key({"error_rate": 0.25, "loss": 2.0}, "error_rate") == (-0.25, -2.0)


@pytest.mark.parametrize("name", ["exact_match", "rouge1", "bleu"])
def test_text_metric_rows_aggregate_its_statistics_as_its_score(name):
    predictions = ["the cat sat on the mat", "a dog", "", "the cat sat"]
    references = [["the cat sat on the mat"], ["a dog barked", "dogs"], ["no answer"], ["a cat sat there"]]
    metric = METRICS[name]
    statistics = metric.statistics(predictions, references)
    assert metric.rows(statistics[None], None)[0] == pytest.approx(metric(predictions, references))
    subsets = np.array([[0, 0, 1, 3], [2, 2, 2, 1]])
    expected = [metric([predictions[i] for i in rows], [references[i] for i in rows]) for rows in subsets]
    assert metric.rows(statistics[subsets], None) == pytest.approx(expected)


def test_the_registry_imports_no_heavy_library():
    """The config check reads it when the Snakefile is parsed: scikit-learn, scipy, torch and the text
    metrics' libraries load only where a metric is computed."""
    code = ("import sys, bomf.metrics; heavy = {'sklearn', 'scipy', 'torch', 'rouge_score', 'sacrebleu', 'nltk'}; "
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
