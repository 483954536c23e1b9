"""Signs that a run learned nothing, in words a user can act on.

A model that predicts one class (or one value, or no answer) for every example, stage-1 trials tied at one
score, or members that all score the same: the tables would otherwise show every method equal with no word
why. Pure Python and numpy: the cheap jobs (stage-1 selection, summaries, tables) call it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from ..records import EvaluatedModel, HpoTrial

HINT = ("train longer (finetune.epochs, hpo.epochs), on more data (data.max_train, hpo.max_train), or search a "
        "wider learning-rate range (hpo.space.learning_rate); an imported run's checkpoints: fine-tune them longer "
        "or on more data")


def constant_predictions(predictions: Sequence, labels: Sequence) -> bool:
    """Every prediction the same class id, text or answer; for regression scores, a spread under 1% of the
    labels' (a model that only learned the mean)."""
    if len(predictions) < 2:
        return False
    if isinstance(predictions[0], (str, list, dict)):
        return len({json.dumps(p, sort_keys=True) for p in predictions}) == 1
    values = np.asarray(predictions)
    if np.issubdtype(values.dtype, np.floating):
        return float(np.std(values)) <= 0.01 * float(np.std(np.asarray(labels, dtype=float)))
    return bool((values == values[0]).all())


def _constant_text(predictions: Sequence) -> str:
    first = predictions[0]
    if isinstance(first, (str, list, dict)):
        return f"{first!r} for every example"
    return f"about {float(first):.3g} for every example" if isinstance(first, float) else f"{first} for every example"


def run_warnings(records: Sequence[EvaluatedModel]) -> dict[str, str]:
    """Per method of one run's test records, what says it learned nothing ('' where nothing does)."""
    warnings = {}
    for record in records:
        constant = constant_predictions(record.predictions, record.labels)
        warnings[record.method] = (f"constant predictions ({_constant_text(record.predictions)})"
                                      if constant else "")
    primary = {r.method: r.test[r.primary_metric] for r in records}
    if len(primary) > 1 and len({round(v, 12) for v in primary.values()}) == 1:
        for method in warnings:
            warnings[method] = "; ".join(filter(None, [warnings[method], "every method scores the same"]))
    return warnings


def run_message(records: Sequence[EvaluatedModel]) -> str:
    """One line for a run whose every method learned nothing (constant predictions or all scores equal)."""
    warnings = run_warnings(records)
    if not records or not all(warnings.values()):
        return ""
    r = records[0]
    reasons = sorted({w for w in warnings.values()})
    return f"{r.task}/{r.model}/seed{r.seed} learned nothing ({'; '.join(reasons)}): {HINT}"


def _all_equal(values: Sequence[float]) -> list[float]:
    """The finite values if there are at least two and all are equal, else an empty list."""
    finite = [v for v in values if math.isfinite(v)]
    return finite if len(finite) >= 2 and len(set(finite)) == 1 else []


def tied_trials_message(trials: Sequence[HpoTrial]) -> str:
    """Stage-1 trials all at one finite score: the proxy learned nothing that tells them apart."""
    scores = _all_equal([t.score for t in trials])
    if not scores:
        return ""
    return (f"all {len(scores)} stage-1 trials scored {trials[0].metric} {scores[0]:.4f} (tied, typically the "
            f"majority class): the proxy learned nothing; the trial with the lowest validation loss was chosen. "
            f"Hint: {HINT}")


def identical_members_message(member_scores: Sequence[float], metric: str) -> str:
    """Every member at one validation score: nothing for a fusion to choose between."""
    finite = _all_equal(member_scores)
    if not finite:
        return ""
    return (f"all {len(finite)} members score validation {metric} {finite[0]:.4f}: training learned nothing that "
            f"tells them apart, so every fusion method will score alike. Hint: {HINT}")
