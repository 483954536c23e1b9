"""Every metric, one ``Metric`` each in ``METRICS``: its name, label, direction (higher or lower is better),
range, the task kinds that report it, and its implementations: the score of one prediction set and its
all-resamples-at-once form for the paired bootstrap. Every choice (the BO objectives, the rankings, the Pareto
rules, the tables' marks, the bootstrap's best baseline) reads the direction from here; the loss, scored by
the model itself, is ``LOSS`` and always lower-is-better.

Classification and regression metrics are computed here (``evaluate.load`` needs the hub); metrics of text
(QA answers, generated text) are implemented in ``tasks.text_metrics`` and declared here like the rest.
"""

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LOSS = "loss"  # the validation and test loss beside every task's metrics: lower is better

# Scores one prediction set: (predictions, labels) -> float; predictions are class ids or regression scores,
# or for a text metric predicted texts, with reference lists for labels.
Score = Callable[[np.ndarray, np.ndarray], float]
# Scores many at once, for the paired bootstrap: (resamples, examples) predictions and labels -> (resamples,);
# for a text metric, (resamples, examples, k) per-example statistics (labels unused).
RowMetric = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Metric:
    """One metric and everything that reads it. ``rows`` follows ``score``'s formula and degenerate-case
    convention on every row (tests/test_metrics.py checks that they agree)."""

    name: str
    label: str  # its column header in the tables
    higher_is_better: bool
    range: tuple[float, float]  # the values it can take (an unbounded side: ±inf)
    kinds: tuple[str, ...]  # the task kinds (tasks.kinds.KINDS) whose tasks may report it
    score: Score
    rows: RowMetric
    # Text metrics: (predictions, references) -> (examples, k) per-example statistics, what the test records keep
    # and the bootstrap resamples (``rows`` aggregates them). None: the bootstrap resamples the predictions.
    statistics: Callable[[list, list], np.ndarray] | None = None

    def __call__(self, predictions, labels) -> float:
        return float(self.score(predictions, labels))

    @property
    def sign(self) -> float:
        """+1 or -1: the metric times its sign is to be maximised."""
        return 1.0 if self.higher_is_better else -1.0

    @property
    def scale(self) -> float:
        """What the tables multiply it by: 100 for a score within [-1, 1], 1 otherwise (an MAE)."""
        return 100.0 if -1.0 <= self.range[0] and self.range[1] <= 1.0 else 1.0

    def error(self, value: float) -> float:
        """How far ``value`` falls short of the best value in the range (1 - accuracy; an error rate or an MAE
        itself)."""
        return self.sign * (self.range[1 if self.higher_is_better else 0] - value)


# scikit-learn and scipy.stats are imported where a metric is computed, not with this module: together they
# take ~2 s, and every job (the config check too) imports this module.
def _sklearn(name: str) -> Score:
    def metric(predictions: np.ndarray, labels: np.ndarray) -> float:
        return float(getattr(importlib.import_module("sklearn.metrics"), name)(labels, predictions))

    return metric


def _correlation(name: str) -> Score:
    def metric(predictions: np.ndarray, labels: np.ndarray) -> float:
        # A constant prediction (e.g. a collapsed regressor) has no defined correlation: score it 0. Constant
        # by max == min: the std of a constant that is no binary fraction (a mean) rounds to ~1e-16, not 0.
        if np.ptp(predictions) == 0 or np.ptp(labels) == 0:
            return 0.0
        return float(getattr(importlib.import_module("scipy.stats"), name)(predictions, labels)[0])

    return metric


# The row forms, in numpy: the paired bootstrap scores ~1,000 resamples per comparison, and scikit-learn's
# input checks cost ~1.5 ms a call.
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
    varies = (np.ptp(predictions, axis=1) > 0) & (np.ptp(labels, axis=1) > 0)  # as _correlation decides
    return np.divide((x * y).sum(axis=1), scale, out=np.zeros(len(scale)), where=varies & (scale > 0))


def _spearman_rows(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    rankdata = importlib.import_module("scipy.stats").rankdata
    return _pearson_rows(rankdata(predictions, axis=1), rankdata(labels, axis=1))


def _error_rate(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predictions) != np.asarray(labels)))


def _error_rate_rows(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return (predictions != labels).mean(axis=1)


def _mae_rows(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.abs(predictions - labels).mean(axis=1)


def _text(name: str) -> dict:
    """A text metric's implementations from ``tasks.text_metrics.<name>`` (an ``ExampleMetric``), looked up on
    first use: rouge_score and sacrebleu take ~3 s to import, and the config check reads this registry."""

    def implementation():
        return getattr(importlib.import_module(f"{__package__}.tasks.text_metrics"), name)

    def rows(statistics: np.ndarray, labels: np.ndarray) -> np.ndarray:
        aggregate = implementation().aggregate
        return np.array([aggregate(resample) for resample in statistics])

    return {"score": lambda predictions, references: implementation()(predictions, references), "rows": rows,
            "statistics": lambda predictions, references: implementation().statistics(predictions, references)}


UNIT, CORRELATION, NON_NEGATIVE = (0.0, 1.0), (-1.0, 1.0), (0.0, math.inf)
METRICS: dict[str, Metric] = {metric.name: metric for metric in (
    Metric("accuracy", "Acc.", True, UNIT, ("classification",), _sklearn("accuracy_score"), _accuracy_rows),
    Metric("f1", "F1", True, UNIT, ("classification",), _sklearn("f1_score"), _f1_rows),
    Metric("mcc", "MCC", True, CORRELATION, ("classification",), _sklearn("matthews_corrcoef"), _mcc_rows),
    Metric("error_rate", "Error", False, UNIT, ("classification",), _error_rate, _error_rate_rows),
    Metric("pearson", "Pearson", True, CORRELATION, ("regression",), _correlation("pearsonr"), _pearson_rows),
    Metric("spearman", "Spearman", True, CORRELATION, ("regression",), _correlation("spearmanr"), _spearman_rows),
    Metric("mae", "MAE", False, NON_NEGATIVE, ("regression",), _sklearn("mean_absolute_error"), _mae_rows),
    Metric("token_f1", "F1", True, UNIT, ("extractive_qa",), **_text("token_f1")),
    Metric("exact_match", "EM", True, UNIT, ("extractive_qa",), **_text("exact_match")),
    Metric("rouge1", "ROUGE-1", True, UNIT, ("generation",), **_text("rouge1")),
    Metric("rouge2", "ROUGE-2", True, UNIT, ("generation",), **_text("rouge2")),
    Metric("rougeL", "ROUGE-L", True, UNIT, ("generation",), **_text("rougeL")),
    Metric("bleu", "BLEU", True, UNIT, ("generation",), **_text("bleu")),
)}


def metrics_of(kind: str) -> tuple[str, ...]:
    """The metrics a task of ``kind`` may report, in registry order."""
    return tuple(name for name, metric in METRICS.items() if kind in metric.kinds)


def sign(name: str) -> float:
    """+1 for a higher-is-better metric, -1 for a lower-is-better one and the loss: sign x value is maximised."""
    return -1.0 if name == LOSS else METRICS[name].sign


def compute_metrics(names: list[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {name: METRICS[name](predictions, labels) for name in names}


def ranking_key(scores: dict[str, float], primary: str) -> tuple[float, float]:
    """Sort key for choosing a model, larger first: the better primary metric in its own direction, then the
    lower loss; non-finite ranks last."""
    metric, loss = sign(primary) * scores[primary], -scores[LOSS]
    return (metric if np.isfinite(metric) else -np.inf, loss if np.isfinite(loss) else -np.inf)
