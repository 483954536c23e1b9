"""Significance tests of BOMF against the other methods: paired bootstraps and sign tests over runs.

Every method and seed is scored on the same test examples, so a comparison resamples example indices once
and scores both methods on each resample. The metric is recomputed on every resample because F1, MCC and
Pearson do not decompose into per-example terms; text metrics (QA, generation) are aggregated from the
per-example statistics the test records hold (``example_statistics``). With several seeds, the difference is averaged over the
seeds both methods have, on the full split and on every resample alike. Differences are in the metric's units,
first - second: for a lower-is-better metric (``metrics.Metric.higher_is_better``) a negative one favours the first.

Two bootstraps share those resamples: over test examples with the runs (seeds) fixed, which measures test-sampling
noise only, and over runs then examples, which adds seed-to-seed variation. The sign test counts runs instead of
resampling them. Each family of p-values is also given Holm-adjusted (``holm``).
"""

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..metrics import METRICS
from ..records import EvaluatedModel

RESAMPLE_CHUNK = 100
# The task of a comparison of the mean over tasks, and of a sign test pooling every task's runs.
AVERAGE, ALL_RUNS = "avg", "all"
COMPARISON_COLUMNS = ["model", "task", "metric", "comparison", "baseline", "difference", "ci_low", "ci_high",
                      "p_value", "p_holm", "run_ci_low", "run_ci_high", "run_p_value", "run_p_holm", "runs",
                      "examples", "resamples"]
SIGN_COLUMNS = ["model", "task", "metric", "baseline", "better", "tied", "worse", "p_value", "p_holm"]


@dataclass(frozen=True, eq=False)
class MethodScores:
    """One method's metric per seed on the full test split and on every bootstrap resample of it."""

    full: dict[int, float]
    resampled: dict[int, np.ndarray]  # seed -> (resamples,)
    examples: int


@dataclass(frozen=True, eq=False)
class Differences:
    """first - second in metric units, averaged over the runs both methods have, on the full test split and on
    every resample: with the runs fixed (``examples``) and with the runs redrawn too (``runs``)."""

    full: float
    examples: np.ndarray  # (resamples,)
    runs: np.ndarray  # (resamples,)
    run_count: int
    example_count: int


@dataclass(frozen=True)
class PairedComparison:
    """first - second in metric units (not x100): its percentile interval and two-sided p over the example
    resamples (runs fixed), and the same over the two-level resamples (``run_*``: runs redrawn, then examples)."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    run_ci_low: float
    run_ci_high: float
    run_p_value: float
    runs: int
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


def differences(first: MethodScores, second: MethodScores, runs: np.random.Generator) -> Differences:
    """first - second over the seeds both have, both scored on the same example resamples; ``runs`` draws the
    two-level bootstrap's runs.

    Each two-level resample draws as many runs as there are, with replacement, and scores every drawn run on that
    resample's example indices: all runs were scored on the same test examples, so one example resample serves
    them all (a resample drawn per run would treat the shared split as a new one per run and shrink its noise).
    With one run the two bootstraps agree.
    """
    seeds = sorted(first.full.keys() & second.full.keys())
    if not seeds:
        raise ValueError("the two methods share no seed")
    per_seed = np.stack([first.resampled[s] - second.resampled[s] for s in seeds])  # (seeds, resamples)
    resamples = per_seed.shape[1]
    drawn = runs.integers(0, len(seeds), size=(resamples, len(seeds)))
    return Differences(float(np.mean([first.full[s] - second.full[s] for s in seeds])), per_seed.mean(axis=0),
                       per_seed[drawn, np.arange(resamples)[:, None]].mean(axis=1), len(seeds), first.examples)


def mean_over_tasks(per_task: Sequence[Differences]) -> Differences:
    """The mean over tasks of each task's differences, resample by resample: tasks are resampled independently
    (their own examples, their own runs), so the mean's spread is that of independent tasks."""
    return Differences(float(np.mean([d.full for d in per_task])), np.mean([d.examples for d in per_task], axis=0),
                       np.mean([d.runs for d in per_task], axis=0), sum(d.run_count for d in per_task),
                       sum(d.example_count for d in per_task))


def _interval(resampled: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Percentile interval and two-sided p-value of one resampled difference."""
    alpha = 1 - confidence
    low, high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    # Twice the smaller tail at or beyond zero; the add-one keeps a finite bootstrap from claiming p = 0.
    tail = min(np.sum(resampled <= 0), np.sum(resampled >= 0))
    return float(low), float(high), float(min(1.0, 2 * (tail + 1) / (len(resampled) + 1)))


def compare(result: Differences, confidence: float = 0.95) -> PairedComparison:
    """Percentile intervals and two-sided p-values of first - second, over both bootstraps."""
    return PairedComparison(result.full, *_interval(result.examples, confidence), *_interval(result.runs, confidence),
                            result.run_count, result.example_count, len(result.examples))


def holm(p_values: Iterable[float]) -> np.ndarray:
    """Holm's step-down adjustment: the i-th smallest of m p-values times m - i + 1, made non-decreasing in that
    order and capped at 1. It holds the chance of any false rejection among the m at the nominal level, whatever
    their dependence. NaN (no test) stays NaN and does not count in m."""
    p_values = np.asarray(list(p_values), dtype=float)
    adjusted = np.full(len(p_values), np.nan)
    tested = np.flatnonzero(np.isfinite(p_values))
    order = tested[np.argsort(p_values[tested], kind="stable")]
    scaled = (len(order) - np.arange(len(order))) * p_values[order]
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


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


def _groups(records: Iterable[EvaluatedModel], field: str) -> dict[str, list[EvaluatedModel]]:
    """Records by one field's value, in sorted order."""
    groups: dict[str, list[EvaluatedModel]] = {}
    for record in records:
        groups.setdefault(getattr(record, field), []).append(record)
    return dict(sorted(groups.items()))


def _validation_gaps(group: Sequence[EvaluatedModel], baselines: Sequence[str]) -> dict[str, float]:
    """Each baseline's validation primary metric minus BOMF's, in the metric's direction (positive: better than
    BOMF), averaged over the seeds both have: compared on the same runs, so that a baseline run on fewer seeds
    is not ranked by how good its seeds happened to be."""
    metric = group[0].primary_metric
    validation = {(r.method, r.seed): r.validation.get(metric, np.nan) for r in group}
    gaps = {}
    for method in baselines:
        paired = [validation[m, s] - validation["bomf", s] for m, s in validation
                  if m == method and ("bomf", s) in validation]
        paired = [gap for gap in paired if np.isfinite(gap)]
        if paired:
            gaps[method] = METRICS[metric].sign * float(np.mean(paired))
    return gaps


def _best(gaps: Mapping[str, float], baselines: Sequence[str]) -> str | None:
    """The baseline with the largest validation gap. Ties go to the earlier method in ``baselines``, so the choice
    never depends on record order."""
    return max(gaps, key=lambda m: (gaps[m], -baselines.index(m)), default=None)


def _run_generator(seed: int, *key: str) -> np.random.Generator:
    """The run draws of one comparison, from ``seed`` and its key: each task redraws its runs independently of
    the others, and of which other comparisons there are."""
    return np.random.default_rng([seed, *(zlib.crc32(part.encode()) for part in key)])


def _holm_by_comparison(frame: pd.DataFrame, column: str) -> list[float]:
    """Holm over the distinct (task, baseline) comparisons of one model's rows: a baseline that is both SWA and
    the best baseline is one comparison, counted once."""
    distinct = frame.drop_duplicates(["task", "baseline"])
    adjusted = dict(zip(zip(distinct["task"], distinct["baseline"]), holm(distinct[column])))
    return [adjusted[key] for key in zip(frame["task"], frame["baseline"])]


def bomf_comparisons(records: Sequence[EvaluatedModel], baselines: Sequence[str], resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95, average: Callable[[list[str]], bool] | None = None) -> pd.DataFrame:
    """For each (model, task): BOMF vs SWA, and BOMF vs the best of ``baselines`` on validation (the largest
    ``_validation_gaps``; never chosen on test). Where a model has several tasks and ``average`` holds for their
    metrics (the caller's rule for when a mean over tasks means something, as for Table 1's Avg), the same two
    for the mean over tasks (task ``AVERAGE``), against the baseline with the largest mean of those gaps over
    tasks.

    One row per comparison (``COMPARISON_COLUMNS``; differences in metric units): both bootstraps (``compare``),
    each p also Holm-adjusted over the model's comparisons. A comparison is left out when either side has no
    records or the two share no seed; the mean over tasks, when that holds for any task. All comparisons of a
    (model, task) use the same example resamples, drawn from ``seed``.
    """
    rows = []
    for model, of_model in _groups(records, "model").items():
        tasks = {task: group for task, group in _groups(of_model, "task").items()
                 if any(r.method == "bomf" for r in group)}
        gaps = {task: _validation_gaps(group, baselines) for task, group in tasks.items()}
        contenders = {}
        for task, group in tasks.items():
            contenders[task] = {"swa": "swa"} if any(r.method == "swa" for r in group) else {}
            if best := _best(gaps[task], baselines):
                contenders[task]["best baseline"] = best
        averaged = {}
        # A mean over one task would repeat that task's comparisons (and count them twice in Holm's m).
        if average is not None and len(tasks) > 1 and average([g[0].primary_metric for g in tasks.values()]):
            everywhere = set.intersection(*(set(of_task) for of_task in gaps.values()))
            best = _best({m: float(np.mean([gaps[task][m] for task in tasks])) for m in everywhere}, baselines)
            averaged = {"swa": "swa", **({"best baseline": best} if best else {})}
        per_task: dict[tuple[str, str], Differences] = {}
        model_rows = []
        for task, group in tasks.items():
            metric = group[0].primary_metric
            by_method: dict[str, dict[int, np.ndarray]] = {}
            for record in group:
                scored = record.example_statistics[metric] if METRICS[metric].statistics else record.predictions
                by_method.setdefault(record.method, {})[record.seed] = np.asarray(scored)
            labels = _shared_labels(group)
            indices = bootstrap_indices(len(labels), resamples, seed)
            compared = [m for m in dict.fromkeys([*contenders[task].values(), *averaged.values()]) if m in by_method]
            scores = {method: score_resamples(by_method[method], labels, metric, indices)
                      for method in ("bomf", *compared)}
            for baseline in compared:
                if scores["bomf"].full.keys() & scores[baseline].full.keys():
                    per_task[task, baseline] = differences(scores["bomf"], scores[baseline],
                                                           _run_generator(seed, model, task, baseline))
            model_rows += [(task, metric, comparison, baseline, per_task[task, baseline])
                           for comparison, baseline in contenders[task].items() if (task, baseline) in per_task]
        model_rows += [(AVERAGE, AVERAGE, comparison, baseline, mean_over_tasks([per_task[t, baseline] for t in tasks]))
                       for comparison, baseline in averaged.items() if all((t, baseline) in per_task for t in tasks)]
        if not model_rows:
            continue
        frame = pd.DataFrame([{"model": model, "task": task, "metric": metric, "comparison": comparison,
                               "baseline": baseline, **asdict(compare(result, confidence))}
                              for task, metric, comparison, baseline, result in model_rows])
        frame["p_holm"] = _holm_by_comparison(frame, "p_value")
        frame["run_p_holm"] = _holm_by_comparison(frame, "run_p_value")
        rows.append(frame[COMPARISON_COLUMNS])
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COMPARISON_COLUMNS)


def run_signs(records: Sequence[EvaluatedModel], baselines: Sequence[str]) -> pd.DataFrame:
    """Per model, task and baseline, over the runs (seeds) it shares with BOMF: in how many BOMF's test primary
    metric is better, equal or worse than the baseline's (in the metric's own direction), and the exact two-sided
    sign-test p over the untied runs (NaN where every run ties), Holm-adjusted over the model's rows. Task
    ``ALL_RUNS`` pools every task's runs, which a sign allows whatever each metric's scale.

    One row per (model, task, baseline) with a shared run (``SIGN_COLUMNS``): tasks in sorted order, then
    ``ALL_RUNS``, each in the order of ``baselines``.
    """
    from scipy.stats import binomtest

    rows = []
    for model, of_model in _groups(records, "model").items():
        signs: dict[tuple[str, str, str], list[float]] = {}  # (task, metric, baseline) -> +1 / 0 / -1 per run
        for task, group in _groups(of_model, "task").items():
            metric = group[0].primary_metric
            test = {(r.method, r.seed): METRICS[metric].sign * r.test[metric] for r in group}
            for baseline in baselines:
                signs[task, metric, baseline] = [float(np.sign(test["bomf", s] - test[m, s])) for m, s in test
                                                  if m == baseline and ("bomf", s) in test]
        pooled = {(ALL_RUNS, ALL_RUNS, baseline): [sign for (_, _, b), of_task in signs.items() if b == baseline
                                                   for sign in of_task] for baseline in baselines}
        model_rows = []
        for (task, metric, baseline), of_runs in {**signs, **pooled}.items():
            if not of_runs:
                continue
            better, worse = of_runs.count(1.0), of_runs.count(-1.0)
            p_value = binomtest(better, better + worse).pvalue if better + worse else np.nan
            model_rows.append({"model": model, "task": task, "metric": metric, "baseline": baseline,
                               "better": better, "tied": len(of_runs) - better - worse, "worse": worse,
                               "p_value": p_value})
        if model_rows:
            rows.append(pd.DataFrame(model_rows).assign(p_holm=lambda f: holm(f["p_value"]))[SIGN_COLUMNS])
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=SIGN_COLUMNS)
