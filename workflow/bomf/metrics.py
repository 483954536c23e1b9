"""Classification and regression metrics computed locally (``evaluate.load`` needs the hub): each maps
(predictions, labels) arrays to a float; higher is better, in [0, 1] for scores (tables show them x100).
Metrics of text (QA answers, generated text) are in ``text_metrics``.
"""

import importlib
from collections.abc import Callable

import numpy as np

# A metric maps (predictions, labels) to a float; predictions are class ids or regression scores.
Metric = Callable[[np.ndarray, np.ndarray], float]


# scikit-learn and scipy.stats are imported where a metric is computed, not with this module: together they
# take ~2 s, and every job (the config check too) imports this module.
def _sklearn(name: str) -> Metric:
    def metric(predictions: np.ndarray, labels: np.ndarray) -> float:
        return float(getattr(importlib.import_module("sklearn.metrics"), name)(labels, predictions))

    return metric


def _correlation(name: str) -> Metric:
    def metric(predictions: np.ndarray, labels: np.ndarray) -> float:
        # A constant prediction (e.g. a collapsed regressor) has no defined correlation: score it 0.
        if np.std(predictions) == 0 or np.std(labels) == 0:
            return 0.0
        return float(getattr(importlib.import_module("scipy.stats"), name)(predictions, labels)[0])

    return metric


METRICS: dict[str, Metric] = {
    "accuracy": _sklearn("accuracy_score"),
    "f1": _sklearn("f1_score"),
    "mcc": _sklearn("matthews_corrcoef"),
    "pearson": _correlation("pearsonr"),
    "spearman": _correlation("spearmanr"),
}

REGRESSION_METRICS = frozenset({"pearson", "spearman"})


# The same metrics on many rows at once (each row one resample of predictions and labels), in numpy: the
# paired bootstrap scores ~1,000 resamples per comparison, and scikit-learn's input checks cost ~1.5 ms a
# call. Each follows the formula and degenerate-case convention of its METRICS entry (equal up to float
# rounding: tests/test_metrics.py).
RowMetric = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _accuracy_rows(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return (predictions == labels).mean(axis=1)


def _f1_rows(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Binary F1 of class 1, 2TP / (2TP + FP + FN); 0 where there is no positive at all."""
    tp = ((predictions == 1) & (labels == 1)).sum(axis=1)
    wrong = (predictions != labels).sum(axis=1)  # FP + FN
    return np.divide(2.0 * tp, 2.0 * tp + wrong, out=np.zeros(len(predictions)), where=2 * tp + wrong > 0)


def _mcc_rows(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Matthews correlation from the per-class counts, as scikit-learn computes it (any number of classes);
    0 where a row predicts or holds a single class."""
    classes = np.union1d(np.unique(predictions), np.unique(labels))
    true_counts = (labels[..., None] == classes).sum(axis=1).astype(np.float64)
    predicted_counts = (predictions[..., None] == classes).sum(axis=1).astype(np.float64)
    size, correct = float(labels.shape[1]), (predictions == labels).sum(axis=1).astype(np.float64)
    cov_true_predicted = correct * size - (true_counts * predicted_counts).sum(axis=1)
    cov_predicted = size**2 - (predicted_counts * predicted_counts).sum(axis=1)
    cov_true = size**2 - (true_counts * true_counts).sum(axis=1)
    scale = cov_true * cov_predicted
    return np.divide(cov_true_predicted, np.sqrt(scale, where=scale > 0, out=np.ones(len(scale))),
                     out=np.zeros(len(scale)), where=scale > 0)


def _pearson_rows(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pearson's r per row; 0 where either side is constant (a collapsed regressor)."""
    x = predictions - predictions.mean(axis=1, keepdims=True)
    y = labels - labels.mean(axis=1, keepdims=True)
    scale = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    return np.divide((x * y).sum(axis=1), scale, out=np.zeros(len(scale)), where=scale > 0)


def _spearman_rows(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    rankdata = importlib.import_module("scipy.stats").rankdata
    return _pearson_rows(rankdata(predictions, axis=1), rankdata(labels, axis=1))


ROW_METRICS: dict[str, RowMetric] = {"accuracy": _accuracy_rows, "f1": _f1_rows, "mcc": _mcc_rows,
                                     "pearson": _pearson_rows, "spearman": _spearman_rows}


def compute_metrics(names: list[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {name: METRICS[name](predictions, labels) for name in names}


def ranking_key(scores: dict[str, float], primary: str) -> tuple[float, float]:
    """Sort key for choosing a model: higher primary metric first, then lower loss; non-finite ranks last."""
    metric, loss = scores[primary], scores["loss"]
    return (metric if np.isfinite(metric) else -np.inf, -loss if np.isfinite(loss) else -np.inf)
