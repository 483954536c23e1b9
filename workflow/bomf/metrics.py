"""Task metrics computed locally (``evaluate.load`` needs the hub). Every metric: higher is better."""

from collections.abc import Callable

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

# A metric maps (predictions, labels) to a float; predictions are class ids or regression scores.
Metric = Callable[[np.ndarray, np.ndarray], float]


def _correlation(fn) -> Metric:
    def metric(predictions: np.ndarray, labels: np.ndarray) -> float:
        # A constant prediction (e.g. a collapsed regressor) has no defined correlation: score it 0.
        if np.std(predictions) == 0 or np.std(labels) == 0:
            return 0.0
        return float(fn(predictions, labels)[0])

    return metric


METRICS: dict[str, Metric] = {
    "accuracy": lambda p, y: float(accuracy_score(y, p)),
    "f1": lambda p, y: float(f1_score(y, p)),
    "mcc": lambda p, y: float(matthews_corrcoef(y, p)),
    "pearson": _correlation(pearsonr),
    "spearman": _correlation(spearmanr),
}

REGRESSION_METRICS = frozenset({"pearson", "spearman"})


def compute_metrics(names: list[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {name: METRICS[name](predictions, labels) for name in names}


def ranking_key(scores: dict[str, float], primary: str) -> tuple[float, float]:
    """Sort key for choosing a model: higher primary metric first, then lower loss; non-finite ranks last."""
    metric, loss = scores[primary], scores["loss"]
    return (metric if np.isfinite(metric) else -np.inf, -loss if np.isfinite(loss) else -np.inf)
