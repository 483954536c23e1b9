"""Signs that a run learned nothing, in words a user can act on, and how far its fusion is from one member.

A model that predicts one class (or one value, or no answer) for every example, a best method within a
standard error of the task kind's trivial answer (``tasks.kinds.TrivialAnswer``), stage-1 trials tied at one
score, or members that all score the same: the tables would otherwise show every method equal with no word
why. Per run, the chosen weights' effective number of members, the members' validation spread and the
validation standard error say when a "fusion" is one checkpoint and when differences are inside the noise.
Pure Python and numpy: the cheap jobs (stage-1 selection, summaries, tables) call it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from ..metrics import LOSS, METRICS
from ..records import EvaluatedModel, HpoTrial
from ..tasks.kinds import KINDS

# Selected on the test split itself: shown as an upper bound, never highlighted, never a "best baseline".
ORACLE_METHODS = frozenset({"oracle_subset"})
# The task kind's trivial answer scored on test (``trivial_record``): a reference row, not a method.
TRIVIAL = "trivial"
# Metrics that are a mean of per-example 0/1 outcomes: their standard error is binomial.
PROPORTIONS = frozenset({"accuracy", "error_rate", "exact_match"})
# One member holds all the weight (up to this much): the "fusion" is that checkpoint.
VERTEX_TOLERANCE = 1e-6

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


def _constant_text(predictions: Sequence, trivial: dict | None) -> str:
    first = predictions[0]
    if isinstance(first, (str, list, dict)):
        text = f"{first!r} for every example"
    else:
        text = f"about {float(first):.3g} for every example" if isinstance(first, float) else f"{first} for every example"
    # Exactly the trivial answer (a class id, no answer): name it; a regressor's constant is only near the mean.
    return f"{text}: {trivial['name']}" if trivial is not None and first == trivial["answer"] else text


def trivial_record(records: Sequence[EvaluatedModel], trivial: dict) -> EvaluatedModel:
    """The trivial answer (``{"name", "answer"}``, as the data job's split.json records it) of one run, scored on
    the run's test split with every metric its methods report (no loss: it is no model)."""
    r = records[0]
    predictions = [trivial["answer"]] * r.test_size
    test = {m: METRICS[m](predictions, r.labels) for m in r.test if m != LOSS}
    return EvaluatedModel(r.task, r.model, r.seed, TRIVIAL, r.primary_metric, test, {}, r.test_size, predictions,
                          r.labels)


def standard_error(record: EvaluatedModel, score: float, size: int, resamples: int = 1000, seed: int = 0) -> float:
    """The standard error of ``record``'s primary metric at ``score`` on ``size`` examples: sqrt(p(1 − p)/n) for a
    proportion (``PROPORTIONS``); otherwise the std over bootstrap resamples of the record's test examples,
    times sqrt(test size / ``size``) (no split but test keeps per-example predictions; these metrics' standard
    errors shrink as 1/sqrt(n))."""
    metric = record.primary_metric
    if metric in PROPORTIONS:
        return math.sqrt(score * (1 - score) / size)
    from .stats import bootstrap_indices, score_resamples

    values = record.example_statistics[metric] if METRICS[metric].statistics else record.predictions
    indices = bootstrap_indices(record.test_size, resamples, seed)
    resampled = score_resamples({0: np.asarray(values)}, record.labels, metric, indices).resampled[0]
    return float(np.std(resampled, ddof=1)) * math.sqrt(record.test_size / size)


def _at_trivial(record: EvaluatedModel, reference: EvaluatedModel, trivial: dict) -> str:
    """What says ``record`` scored no better on test than one standard error above the trivial answer ('' where
    it did)."""
    metric = record.primary_metric
    score, floor = record.test[metric], reference.test[metric]
    se = standard_error(record, score, record.test_size)
    if METRICS[metric].sign * (score - floor) > se:
        return ""
    return (f"test {metric} {score:.4f} within one standard error ({se:.4f}) of {trivial['name']} "
            f"({floor:.4f})")


def run_warnings(records: Sequence[EvaluatedModel], trivial: dict | None = None) -> dict[str, str]:
    """Per method of one run's test records, what says it learned nothing ('' where nothing does); ``trivial``:
    the kind's trivial answer from the run's split.json (None: none, or not recorded)."""
    reference = trivial_record(records, trivial) if trivial is not None and records else None
    warnings = {}
    for record in records:
        constant = constant_predictions(record.predictions, record.labels)
        notes = [f"constant predictions ({_constant_text(record.predictions, trivial)})" if constant else "",
                 _at_trivial(record, reference, trivial) if reference is not None else ""]
        warnings[record.method] = "; ".join(filter(None, notes))
    primary = {r.method: r.test[r.primary_metric] for r in records}
    if len(primary) > 1 and len({round(v, 12) for v in primary.values()}) == 1:
        for method in warnings:
            warnings[method] = "; ".join(filter(None, [warnings[method], "every method scores the same"]))
    return warnings


def run_message(records: Sequence[EvaluatedModel], trivial: dict | None = None) -> str:
    """One line for a run whose every method learned nothing (constant predictions, all scores equal, or the
    best method, oracles aside, within a standard error of the trivial answer)."""
    warnings = run_warnings(records, trivial)
    methods = [r for r in records if r.method not in ORACLE_METHODS]
    if not methods:
        return ""
    r = methods[0]
    best = max(methods, key=lambda m: METRICS[m.primary_metric].sign * m.test[m.primary_metric])
    if all(warnings.values()):
        reasons = sorted({w for w in warnings.values()})
    elif trivial is not None and warnings[best.method]:
        reasons = [f"its best method, {best.method}, {_at_trivial(best, trivial_record(records, trivial), trivial)}"]
    else:
        return ""
    return f"{r.task}/{r.model}/seed{r.seed} learned nothing ({'; '.join(reasons)}): {HINT}"


def weight_diagnostics(weights: Sequence[float]) -> dict[str, float | bool]:
    """How many members a weighting really uses: the effective number (Σw)²/Σw² (1/Σw² on the simplex; 1 for
    one member, N for the uniform average), the largest share, and whether one member holds it all (a vertex)."""
    w = np.abs(np.asarray(weights, dtype=float))
    largest = float(w.max() / w.sum())
    return {"effective_members": float(w.sum() ** 2 / (w * w).sum()), "largest_weight": largest,
            "vertex": largest >= 1 - VERTEX_TOLERANCE}


def fusion_diagnostics(record: EvaluatedModel, weights: Sequence[float] | None, member_scores: Sequence[float],
                       validation_size: int | None, resamples: int = 1000) -> dict[str, float | bool | None]:
    """One method's choice in its run (metric units, not x100; NaN or None where an input is missing): how many
    members its weights use (``weight_diagnostics``), the members' validation primary metric (its range, max −
    min, and sample std), its validation score's gain over the best member's (in the metric's direction) and the
    standard error of its validation score (``standard_error`` at ``validation_size`` examples): a gain or a
    spread inside that error is noise the choice acted on."""
    metric = record.primary_metric
    sign = METRICS[metric].sign
    scores = np.asarray(member_scores, dtype=float)
    chosen = record.validation.get(metric, np.nan)
    return {**(weight_diagnostics(weights) if weights else
               {"effective_members": np.nan, "largest_weight": np.nan, "vertex": None}),
            "member_range": float(scores.max() - scores.min()) if len(scores) else np.nan,
            "member_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else np.nan,
            "gain_over_best_member": float(sign * chosen - (sign * scores).max()) if len(scores) else np.nan,
            "validation_se": standard_error(record, chosen, validation_size, resamples)
            if validation_size and np.isfinite(chosen) else np.nan}


def _all_equal(values: Sequence[float]) -> list[float]:
    """The finite values if there are at least two and all are equal, else an empty list."""
    finite = [v for v in values if math.isfinite(v)]
    return finite if len(finite) >= 2 and len(set(finite)) == 1 else []


def tied_trials_message(trials: Sequence[HpoTrial]) -> str:
    """Stage-1 trials all at one finite score: the proxy learned nothing that tells them apart."""
    scores = _all_equal([t.score for t in trials])
    if not scores:
        return ""
    answers = " or ".join(KINDS[kind].trivial.name for kind in METRICS[trials[0].metric].kinds
                          if KINDS[kind].trivial is not None)
    typically = f", typically {answers}" if answers else ""
    return (f"all {len(scores)} stage-1 trials scored {trials[0].metric} {scores[0]:.4f} (tied{typically}): the "
            f"proxy learned nothing; the trial with the lowest validation loss was chosen. Hint: {HINT}")


def identical_members_message(member_scores: Sequence[float], metric: str) -> str:
    """Every member at one validation score: nothing for a fusion to choose between."""
    finite = _all_equal(member_scores)
    if not finite:
        return ""
    return (f"all {len(finite)} members score validation {metric} {finite[0]:.4f}: training learned nothing that "
            f"tells them apart, so every fusion method will score alike. Hint: {HINT}")
