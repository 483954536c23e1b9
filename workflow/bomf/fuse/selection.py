"""Rules that choose one result: the stage-1 trial that sets stage 2's hyperparameters, and the point of a
fusion search's Pareto set that becomes the method's result. Pure Python and numpy, so the config check
(which runs when the Snakefile is parsed) can read the registered names without importing torch or BoTorch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..metrics import LOSS, ranking_key, sign

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


# A rule picks one row of the Pareto set (given the raw rows, their normalised objectives, the primary metric).
SELECTION_RULES: dict[str, Callable[[pd.DataFrame, np.ndarray, str], int]] = {
    "best_metric": _best_metric,  # best primary metric in its direction, ties -> lower loss (the default)
    "best_loss": _best_loss,  # lowest validation loss, ties -> better primary metric
    "knee": _knee,  # closest to the front's utopia point in member-normalised space
}
