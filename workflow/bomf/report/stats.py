"""Paired bootstrap tests between methods on one task's test split.

Every method and seed is scored on the same test examples, so a comparison resamples example indices once
and scores both methods on each resample. The metric is recomputed on every resample because F1, MCC and
Pearson do not decompose into per-example terms; text metrics (QA, generation) are aggregated from the
per-example statistics the test records hold (``example_statistics``). With several seeds, the difference is averaged over the
seeds both methods have, on the full split and on every resample alike. Differences are in the metric's units,
first - second: for a lower-is-better metric (``metrics.Metric.higher_is_better``) a negative one favours the first.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..metrics import METRICS
from ..records import EvaluatedModel

RESAMPLE_CHUNK = 100
COMPARISON_COLUMNS = ["model", "task", "metric", "comparison", "baseline", "difference", "ci_low", "ci_high",
                      "p_value", "seeds", "examples", "resamples"]


@dataclass(frozen=True, eq=False)
class MethodScores:
    """One method's metric per seed on the full test split and on every bootstrap resample of it."""

    full: dict[int, float]
    resampled: dict[int, np.ndarray]  # seed -> (resamples,)
    examples: int


@dataclass(frozen=True)
class PairedComparison:
    """first - second in metric units (not x100), averaged over the seeds both methods have."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    seeds: int
    examples: int
    resamples: int


def bootstrap_indices(size: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, size) example indices drawn with replacement."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, size, size=(resamples, size))


def score_resamples(predictions: Mapping[int, np.ndarray], labels: np.ndarray, metric: str,
                    indices: np.ndarray) -> MethodScores:
    """Score each seed's predictions on the full split and on every row of ``indices``. For a text metric
    (one with ``statistics``) the "predictions" are each seed's per-example statistics and ``labels`` is unused."""
    rows = METRICS[metric].rows
    labels = np.zeros(len(indices[0])) if METRICS[metric].statistics else np.asarray(labels)

    def score_all(values: np.ndarray) -> tuple[float, np.ndarray]:
        # RESAMPLE_CHUNK resamples at a time: a text metric's statistics (BLEU: 10 per example) would
        # otherwise be copied once per resample all at once.
        chunks = [rows(values[chunk], labels[chunk]) for chunk in np.array_split(
            indices, max(1, len(indices) // RESAMPLE_CHUNK))]
        return float(rows(values[None], labels[None])[0]), np.concatenate(chunks)
    full, resampled = {}, {}
    for seed, seed_predictions in predictions.items():
        seed_predictions = np.asarray(seed_predictions)
        if len(seed_predictions) != len(labels):
            raise ValueError(f"seed {seed}: {len(seed_predictions)} predictions for {len(labels)} labels")
        full[seed], resampled[seed] = score_all(seed_predictions)
    return MethodScores(full, resampled, len(labels))


def compare(first: MethodScores, second: MethodScores, confidence: float = 0.95) -> PairedComparison:
    """Percentile interval and two-sided p-value of first - second, both scored on the same resamples."""
    seeds = sorted(first.full.keys() & second.full.keys())
    if not seeds:
        raise ValueError("the two methods share no seed")
    difference = float(np.mean([first.full[s] - second.full[s] for s in seeds]))
    resampled = np.mean([first.resampled[s] - second.resampled[s] for s in seeds], axis=0)
    alpha = 1 - confidence
    ci_low, ci_high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    # Twice the smaller tail at or beyond zero; the add-one keeps a finite bootstrap from claiming p = 0.
    tail = min(np.sum(resampled <= 0), np.sum(resampled >= 0))
    p_value = min(1.0, 2 * (tail + 1) / (len(resampled) + 1))
    return PairedComparison(difference, float(ci_low), float(ci_high), float(p_value), len(seeds),
                            first.examples, len(resampled))


def _shared_labels(records: Sequence[EvaluatedModel]) -> list:
    """The test labels (or reference texts) every record of one (model, task) was scored on; they must agree
    example by example."""
    labels = records[0].labels
    for record in records[1:]:
        if record.labels != labels:
            raise ValueError(f"{record.model}/{record.task}: {record.method} seed {record.seed} was "
                             f"scored on different test labels than {records[0].method} seed "
                             f"{records[0].seed}; paired tests need one shared test split")
    return labels


def bomf_comparisons(records: Sequence[EvaluatedModel], baselines: Sequence[str], resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> pd.DataFrame:
    """For each (model, task): BOMF vs SWA, and BOMF vs the best of ``baselines`` by mean test primary metric
    (best in the metric's own direction).

    One row per comparison (``COMPARISON_COLUMNS``; differences in metric units). A comparison is left out
    when either side has no records or the two share no seed. All comparisons of a (model, task) use the
    same resamples, drawn from ``seed``.
    """
    groups: dict[tuple[str, str], list[EvaluatedModel]] = {}
    for record in records:
        groups.setdefault((record.model, record.task), []).append(record)
    rows = []
    for (model, task), group in sorted(groups.items()):
        metric = group[0].primary_metric
        by_method: dict[str, dict[int, np.ndarray]] = {}
        for record in group:
            scored = record.example_statistics[metric] if METRICS[metric].statistics else record.predictions
            by_method.setdefault(record.method, {})[record.seed] = np.asarray(scored)
        if "bomf" not in by_method:
            continue
        mean_score = {method: np.mean([r.test[metric] for r in group if r.method == method])
                      for method in baselines if method in by_method}
        contenders = {"swa": "swa"} if "swa" in by_method else {}
        if mean_score:
            # Ties go to the earlier method in ``baselines``, so the choice never depends on record order.
            contenders["best baseline"] = max(mean_score, key=lambda m: (METRICS[metric].sign * mean_score[m],
                                                                         -baselines.index(m)))
        labels = _shared_labels(group)
        indices = bootstrap_indices(len(labels), resamples, seed)
        scores = {method: score_resamples(by_method[method], labels, metric, indices)
                  for method in {"bomf", *contenders.values()}}
        for comparison, baseline in contenders.items():
            if not scores["bomf"].full.keys() & scores[baseline].full.keys():
                continue
            result = compare(scores["bomf"], scores[baseline], confidence)
            rows.append({"model": model, "task": task, "metric": metric, "comparison": comparison,
                         "baseline": baseline, "difference": result.difference, "ci_low": result.ci_low,
                         "ci_high": result.ci_high, "p_value": result.p_value, "seeds": result.seeds,
                         "examples": result.examples, "resamples": result.resamples})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
