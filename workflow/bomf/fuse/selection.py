"""Rules that choose one result: the stage-1 trial that sets stage 2's hyperparameters, and the point of a
fusion search's Pareto set that becomes the method's result. Pure Python and numpy, so the config check
(which runs when the Snakefile is parsed) can read the registered names without importing torch or BoTorch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..metrics import LOSS, METRICS, ranking_key, sign

if TYPE_CHECKING:
    import pandas as pd

    from ..records import HpoTrial


def best_trial(trials: list[HpoTrial]) -> HpoTrial:
    """Best score in its metric's direction; ties go to the lower validation loss at the trial's best evaluation
    (short trials that learn nothing tie at the majority-class score, and the loss still tells them apart), then
    to the earliest trial. Diverged trials never win."""
    scored = [t for t in trials if math.isfinite(t.score)]
    if not scored:
        raise ValueError("every stage-1 trial diverged (NaN score): lower the learning-rate range")
    return max(scored, key=lambda t: (sign(t.metric) * t.score, -_finite_or_inf(t.loss)))


def _finite_or_inf(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def _best_metric(frame: pd.DataFrame, Yn: np.ndarray, primary: str) -> int:
    return max(frame.index, key=lambda i: ranking_key(frame.loc[i], primary))


def _best_loss(frame: pd.DataFrame, Yn: np.ndarray, primary: str) -> int:
    return min(frame.index, key=lambda i: (frame.loc[i, LOSS], -sign(primary) * frame.loc[i, primary]))


def _knee(frame: pd.DataFrame, Yn: np.ndarray, primary: str) -> int:
    distance = np.linalg.norm(Yn.max(0) - Yn, axis=1)  # to the utopia point of the front, normalised
    return frame.index[int(np.argmin(distance))]


def _loss_within_se(frame: pd.DataFrame, Yn: np.ndarray, primary: str, standard_error: float) -> int:
    # A non-finite standard error (a metric undefined on some resamples) leaves the best metric's ties only.
    margin = standard_error if math.isfinite(standard_error) else 0.0
    best = frame.loc[_best_metric(frame, Yn, primary), primary]
    near = (sign(primary) * (frame[primary] - best) >= -margin).to_numpy()
    return _best_loss(frame[near], Yn[near], primary)


# The point whose validation standard error a rule that ``needs_standard_error`` is given: the best-metric one.
standard_error_point = _best_metric
SE_RESAMPLES = 1000  # bootstrap resamples of the validation examples
SE_CHUNK = 100  # resamples scored at once: a text metric's per-example statistics are copied per resample


def bootstrap_standard_error(predictions: Sequence, references: Sequence, metric: str,
                             resamples: int = SE_RESAMPLES, seed: int = 0) -> float:
    """The sample std of ``metric`` over ``resamples`` bootstrap resamples of the examples, each scored by the
    metric's row-wise implementation (``metrics.Metric.rows``; a text metric's rows aggregate its per-example
    statistics, as the paired bootstrap of the test records does)."""
    spec = METRICS[metric]
    values = spec.statistics(predictions, references) if spec.statistics else np.asarray(predictions)
    labels = np.zeros(len(values)) if spec.statistics else np.asarray(references)
    indices = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    scores = np.concatenate([spec.rows(values[chunk], labels[chunk])
                             for chunk in np.array_split(indices, max(1, resamples // SE_CHUNK))])
    return float(np.std(scores, ddof=1))


@dataclass(frozen=True)
class SelectionRule:
    """A rule that picks one row of a Pareto set from the raw rows, their normalised objectives and the primary
    metric. One that ``needs_standard_error`` also gets the standard error of the validation primary metric of
    the ``standard_error_point`` (``bootstrap_standard_error``), which its caller measures for it alone: one more
    evaluation of that point, its predictions kept."""

    choose: Callable[..., int]
    needs_standard_error: bool = False

    def __call__(self, frame: pd.DataFrame, Yn: np.ndarray, primary: str, standard_error: float | None = None) -> int:
        if not self.needs_standard_error:
            return self.choose(frame, Yn, primary)
        if standard_error is None:
            raise ValueError("this selection rule needs the validation standard error of the best-metric point")
        return self.choose(frame, Yn, primary, standard_error)


SELECTION_RULES: dict[str, SelectionRule] = {
    "best_metric": SelectionRule(_best_metric),  # best primary metric in its direction, ties -> lower loss (default)
    "best_loss": SelectionRule(_best_loss),  # lowest validation loss, ties -> better primary metric
    "knee": SelectionRule(_knee),  # closest to the front's utopia point in member-normalised space
    # Lowest loss among the points whose primary metric is within one standard error of the best: a metric
    # difference inside the validation noise is not taken as evidence.
    "loss_within_se": SelectionRule(_loss_within_se, needs_standard_error=True),
}
