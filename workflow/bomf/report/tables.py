"""The paper's result tables as pure functions: evaluation records in, a ``Table`` out, and ``TABLES``, every
table the paper_tables job writes with its builder (Table 5, the cost table from benchmark files, is built by
``bomf.report.costs``; labels and rendering are ``bomf.report.render``'s).

Scores within [-1, 1] are x100 (``metrics.Metric.scale``), summarised as mean ± sample std over seeds (a single
seed shows no ±). Best is each metric's own direction: highest, or lowest for a lower-is-better metric.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from ..metrics import LOSS, METRICS
from ..records import EvaluatedModel
from ..settings import OUTER_LOOP_BASELINES
from .costs import cost_table
from .diagnostics import (ORACLE_METHODS, TRIVIAL, VERTEX_TOLERANCE, fusion_diagnostics, run_message, run_warnings,
                          trivial_record)
from .render import METHOD_LABELS, TASK_LABELS, Number, Section, Table, ordered, render, sort_key
from .stats import ALL_RUNS, AVERAGE, bomf_comparisons, run_signs

# Rows that are no method (the oracle, the trivial answer): listed below the methods, never highlighted.
REFERENCE_ROWS = ORACLE_METHODS | {TRIVIAL}

MAIN_METHODS = ("best_member", "last_member", "swa", "otfusion", "greedy_soup", "learned_soup", "twa", "bomf",
                "oracle_subset")
ABLATION_METHODS = ("bo_metric", "bo_loss", "bomf")
OUTER_BO_METHODS = ("grid_finetune", "hpbo_full", "best_member", "swa", "greedy_soup", "learned_soup", "bomf")

MAIN_CAPTION = (
    "Test-split primary metric (×100 for a score within [−1, 1]) per method, mean ± sample std over seeds (no "
    "± with one seed). Avg: the mean over tasks taken per seed, then summarised; shown only for a method with "
    "every task in every seed, and only where every task's metric has one direction and scale. Bold: best "
    "(lowest for a lower-is-better metric such as an error rate or MAE), underlined: second best per column "
    "among non-oracle rows run on all of that "
    "column's seeds (equal shown values share a place; a method run on fewer seeds, such as an outer-loop "
    "baseline limited to some seeds by method_seeds, is shown unmarked: its mean is over other runs). Every "
    "selection step used only the validation split carved out of train. "
    f"{METHOD_LABELS['oracle_subset']} picks its uniform subset of members on the test split itself: an "
    "upper bound, not a method, and never highlighted.")
# Appended to every caption of a table with the trivial answer's row.
TRIVIAL_NOTE = (
    f" {METHOD_LABELS['trivial']}: the test score of one prediction for every example, taken from the training "
    "split alone (classification: the training majority class; regression: the training mean, whose "
    "correlations are 0; extractive QA: no answer; generation has none): a reference, not a method, never "
    "highlighted, shown where the task's split.json records it. A method at it learned nothing the metric sees.")
SIGNIFICANCE_CAPTION = (
    "BOMF vs SWA and vs the best baseline: the non-oracle method other than BOMF whose validation primary "
    "metric (never test) is best relative to BOMF's, averaged over the runs (seeds) both have; for Avg, that "
    "gap averaged over tasks. Δ = BOMF − baseline on the test split (×100 for a score within [−1, 1]; negative "
    "favours BOMF on a lower-is-better metric), averaged over the runs both methods have; Avg: the mean of the "
    "tasks' Δ, shown only where every task's metric has one direction and scale (as in Table 1). Examples: a "
    "paired bootstrap over test examples with the runs fixed, the metric recomputed on each of {resamples} "
    "resamples of the example indices (numpy seed {seed}), shared by both methods and all runs: it measures "
    "test-sampling noise only, not seed-to-seed variation. Runs + examples: the same resamples with the runs "
    "also redrawn with replacement, within each task and independently across tasks: it adds seed-to-seed "
    "variation (with one run it equals the example bootstrap; with as few as three it still understates it). "
    "95% CI: percentile interval of the resampled Δ; p: two-sided, twice the smaller share of resampled Δ at "
    "or beyond 0 (add-one smoothed); each p is unadjusted, Holm: the same p adjusted by Holm's step-down over "
    "the section's comparisons (each task or Avg and baseline once), per kind of bootstrap. Runs: the runs Δ "
    "is averaged over. Sign tests: for every method, the runs (task × seed) both it and BOMF have in which "
    "BOMF's test primary metric is better / equal / worse (in the metric's direction), with the exact "
    "two-sided sign-test p over the untied runs (– where every run ties) and, in parentheses, that p "
    "Holm-adjusted over every cell of the section; All runs pools every task.")
DISCREPANCY_CAPTION = (
    "Validation loss and error (×100) of the fine-tuned model (best member) and SWA, mean ± sample std over "
    "seeds. Loss: NLL for classification, MSE for regression tasks. Error: how far the primary metric falls "
    "short of its best value (×100 for a score within [−1, 1]): 1 − accuracy, an error rate or an MAE itself; "
    "for correlation metrics 1 − correlation, not an error rate. Bold: the lower of the pair. SWA "
    "lowering the loss without lowering the error is the discrepancy that motivates optimising both.")
ABLATION_CAPTION = (
    "Single-objective BO vs multi-objective BO over the same members, budget and initial design: test "
    "primary metric (×100), mean ± sample std over seeds. BO, metric only / loss only: qLogNEI on the "
    "validation primary metric / validation loss alone; MOBO (BOMF): both. Avg as in Table 1; bold: best, "
    "underlined: second best.")
OUTER_BO_CAPTION = (
    "Effect of the outer (stage-1) hyperparameter BO: test primary metric (×100), mean ± sample std over "
    "seeds. Grid: learning rate and batch size from a plain grid of full fine-tunes, best checkpoint, no BO. "
    "Full-model BO: stage-1 BO run on the full model instead of the proxy, then a fine-tune, best "
    "checkpoint. Every other row uses the hyperparameters of stage-1 BO on the proxy. Every row is over the "
    "seeds the grid or full-model BO ran on (method_seeds), so each column compares the same runs. "
    "Avg as in Table 1; bold: best, underlined: second best.")
SELECTION_CAPTION = (
    "Selection overfitting and the gap to the oracle. Validation − test: a method's validation primary "
    "metric minus its test primary metric (×100 for a score within [−1, 1]; test minus validation for a "
    "lower-is-better metric, so that positive is validation better), mean ± sample std over seeds; every "
    "method chooses on the "
    "same validation split, so a larger gap is a choice fitted to validation noise. Gap closed: "
    "100 × (BOMF − SWA) / (oracle subset − SWA) of the mean test scores over seeds, the share of the distance "
    "from plain averaging to the best test-selected subset that BOMF covers (– where the oracle is not above "
    "SWA). Avg: the mean over tasks taken per seed, as in Table 1 (where every task's metric has one "
    "direction and scale).")
ALL_METRICS_CAPTION = (
    "Every test metric of each task (×100 for a score within [−1, 1]) and the test loss, per method: mean ± "
    "sample std over seeds (the layout of the paper's SQuAD 2.0, SAMSum and E2E tables). Bold: best, "
    "underlined: second best per column among non-oracle rows run on all of the task's seeds (loss and "
    "lower-is-better metrics: lowest). Loss: cross-entropy "
    "(classification; start/end positions for extractive QA; per token of the reference for generation), MSE "
    "for regression. SAMSum and E2E from the local copies have no train split: train and validation are "
    "carved out of their validation (SAMSum) or "
    "dev (E2E) split, the official test split is the test set; SQuAD 2.0 from the local dev articles is "
    "split by article into train, validation and test (see each task's results/data/<task>/split.json).")


def _marks(values: Mapping, decimals: int, lower_is_better: bool = False, places: int = 2) -> dict:
    """'best' for every key at the best shown value, 'second' at the next distinct shown value.

    Values are compared as displayed (rounded to ``decimals``), so numbers that print the same share a
    place; the value after a tie for best is still second.
    """
    shown = {key: round(value, decimals) for key, value in values.items() if np.isfinite(value)}
    ranked = sorted(set(shown.values()), reverse=not lower_is_better)[:places]
    return {key: ("best", "second")[ranked.index(value)] for key, value in shown.items() if value in ranked}


def _on_every_seed(seeds_of: Mapping[str, frozenset]) -> set[str]:
    """The methods (no reference row) run on every seed any of them ran on: only their means are comparable, so
    only they are marked (a baseline run on one seed would otherwise rank against others' three-seed means)."""
    methods = [m for m in seeds_of if m not in REFERENCE_ROWS]
    every = frozenset().union(*(seeds_of[m] for m in methods))
    return {m for m in methods if seeds_of[m] == every}


# ------------------------------------------------------------------------------------------------- records

def _summary(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample std (NaN for fewer than two values) and count."""
    values = np.asarray(list(values), dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan"), len(values)


def _task_header(task: str, metric: str) -> str:
    return f"{TASK_LABELS.get(task, task)} ({METRICS[metric].label})"


def _decimals(metric: str) -> int:
    """Decimals shown: 2 for a score x100, 3 for a metric shown as it is (an MAE)."""
    return 2 if METRICS[metric].scale == 100 else 3


def _one_form(metrics: Iterable[str]) -> bool:
    """Whether a mean over tasks means something: every task's metric in one direction and at one scale."""
    return len({(METRICS[m].higher_is_better, METRICS[m].scale) for m in metrics}) == 1


def _seed_values(per_seed: pd.DataFrame, column: str, tasks: list[str], metric_of: pd.Series) -> pd.Series:
    """One cell's values over seeds (``per_seed``: seeds x tasks): a task's, or for "avg" each seed's mean over
    the tasks, only where the seed has every task and the tasks' metrics share one form (as Table 1's Avg)."""
    if column != "avg":
        return (per_seed[column] if column in per_seed.columns else pd.Series(dtype=float)).dropna()
    if set(per_seed.columns) != set(tasks) or not _one_form(metric_of[tasks]):
        return pd.Series(dtype=float)
    return per_seed.mean(axis=1).dropna()


def _records_frame(records: Sequence[EvaluatedModel]) -> pd.DataFrame:
    """One row per record: test score and validation loss and error, scores at their metric's scale, and the
    metric's sign (+1: higher is better)."""
    rows = []
    for r in records:
        name, metric = r.primary_metric, METRICS[r.primary_metric]
        # Only Tables 2 and 7 read validation scores; a record without them still ranks on test.
        validation = r.validation.get(name, np.nan)
        rows.append({"model": r.model, "task": r.task, "method": r.method, "seed": r.seed,
                     "metric": name, "sign": metric.sign, "test_score": metric.scale * r.test[name],
                     "validation_loss": r.validation.get(LOSS, np.nan),
                     "validation_score": metric.scale * validation,
                     "validation_error": metric.scale * metric.error(validation)})
    frame = pd.DataFrame(rows, columns=["model", "task", "method", "seed", "metric", "sign", "test_score",
                                        "validation_loss", "validation_score", "validation_error"])
    duplicated = frame.duplicated(["model", "task", "method", "seed"], keep=False)
    if duplicated.any():
        raise ValueError("more than one record for " + ", ".join(sorted(
            {f"{m}/{t}/{me}/seed{s}" for m, t, me, s in frame.loc[duplicated, ["model", "task", "method", "seed"]]
             .itertuples(index=False)})))
    return frame


def _row_order(methods: Sequence[str]) -> list[str]:
    """The given order, with the reference rows (oracle, trivial answer) moved below every real method."""
    return [m for m in methods if m not in REFERENCE_ROWS] + [m for m in methods if m in REFERENCE_ROWS]


def _with_trivial(records: Sequence[EvaluatedModel], splits: Mapping[str, dict] | None) -> list[EvaluatedModel]:
    """``records`` and, per run whose task's split.json (``splits``: task -> its content) records a trivial
    answer, that answer scored on the run's test split."""
    by_run: dict[tuple, list[EvaluatedModel]] = {}
    for r in records:
        by_run.setdefault((r.task, r.model, r.seed), []).append(r)
    answers = {task: split.get("trivial") for task, split in (splits or {}).items()}
    return [*records, *(trivial_record(run, answers[task]) for (task, _, _), run in by_run.items()
                        if answers.get(task) is not None)]


# ---------------------------------------------------------------------------------------------- leaderboard

def _leaderboard(records: Sequence[EvaluatedModel], methods: Sequence[str], labels: Mapping[str, str], caption: str,
                 label: str) -> Table:
    """Methods x tasks + avg of the test primary metric, one section per model."""
    frame = _records_frame(records)
    frame = frame[frame["method"].isin(methods)]
    long_rows, sections = [], []
    for model in sorted(frame["model"].unique()):
        scores = frame[frame["model"] == model]
        tasks = ordered(scores["task"], list(TASK_LABELS))
        metric_of = scores.groupby("task")["metric"].first()
        present = [m for m in _row_order(methods) if m in set(scores["method"])]
        summaries: dict[tuple[str, str], tuple[float, float, int]] = {}
        seeds_of: dict[tuple[str, str], frozenset] = {}
        for method in present:
            ours = scores[scores["method"] == method]
            per_seed = ours.pivot(index="seed", columns="task", values="test_score")
            for task in per_seed.columns:
                summaries[method, task] = _summary(per_seed[task].dropna())
                seeds_of[method, task] = frozenset(per_seed[task].dropna().index)
            # Averaged over tasks per seed, so the spread is of the seed-level average.
            if (set(per_seed.columns) == set(tasks) and not per_seed.isna().any(axis=None)
                    and _one_form(metric_of[tasks])):
                summaries[method, "avg"] = _summary(per_seed.mean(axis=1))
                seeds_of[method, "avg"] = frozenset(per_seed.index)
        columns = [*tasks, "avg"]
        # Avg (shown only over metrics of one form) reads the first task's.
        metric_of_column = {column: metric_of[column if column != "avg" else tasks[0]] for column in columns}
        marks = {}
        for column, metric in metric_of_column.items():
            ranked = _on_every_seed({m: seeds for (m, c), seeds in seeds_of.items() if c == column})
            marks[column] = _marks({m: summaries[m, column][0] for m in ranked}, _decimals(metric),
                                   lower_is_better=not METRICS[metric].higher_is_better)
        rows = []
        for method in present:
            cells = []
            for column in columns:
                if (method, column) not in summaries:
                    cells.append(None)
                    continue
                mean, std, seeds = summaries[method, column]
                mark = marks[column].get(method, "")
                cells.append(Number(mean, std, _decimals(metric_of_column[column]), mark))
                long_rows.append({"model": model, "method": method, "label": labels.get(method, method),
                                  "task": column, "metric": metric_of.get(column, "avg"), "mean": mean,
                                  "std": std, "seeds": seeds, "mark": mark, "oracle": method in ORACLE_METHODS})
            rows.append((labels.get(method, method), *cells))
        header = ("Method", *(_task_header(t, metric_of[t]) for t in tasks), "Avg")
        # A rule sets the reference rows (always last) apart from the methods.
        first_oracle = next((i for i, m in enumerate(present) if m in REFERENCE_ROWS), 0)
        sections.append(Section(model, header, tuple(rows), ruled_rows=frozenset({first_oracle} - {0})))
    long = pd.DataFrame(long_rows, columns=["model", "method", "label", "task", "metric", "mean", "std", "seeds",
                                            "mark", "oracle"])
    return render(long, sections, caption, label)


SIGNIFICANCE_HEADER = ("Task", "BOMF vs", "Δ", "Examples: 95% CI", "p", "Holm", "Runs + examples: 95% CI", "p",
                       "Holm", "Runs")


def _significance_table(records: Sequence[EvaluatedModel], methods: Sequence[str], resamples: int, seed: int) -> Table:
    """Table 1's significance tests: per model, both bootstraps of BOMF vs SWA and vs the best baseline per task
    and for Avg, then every method's sign test over runs (one row per method, a column per task and all runs).
    The CSV holds both: ``comparison`` is "swa", "best baseline" or "sign test" (p_value, p_holm: that test's)."""
    baselines = [m for m in methods if m != "bomf" and m not in ORACLE_METHODS]
    records = [r for r in records if r.method in methods]
    comparisons = bomf_comparisons(records, baselines, resamples, seed, average=_one_form)
    signs = run_signs(records, baselines).assign(comparison="sign test")
    # Differences at their metric's scale (Avg: its tasks', which share one).
    scale_of = {(r.model, r.task): METRICS[r.primary_metric].scale for r in records}
    scale_of.update({(model, AVERAGE): scale for (model, _), scale in scale_of.items()})
    scales = [scale_of[key] for key in zip(comparisons["model"], comparisons["task"])]
    for column in ("difference", "ci_low", "ci_high", "run_ci_low", "run_ci_high"):
        comparisons[column] = comparisons[column] * scales
    frame = pd.concat([comparisons, signs], ignore_index=True)
    # Counts stay whole numbers in the CSV where the other kind of row leaves them empty.
    whole = ["runs", "examples", "resamples", "better", "tied", "worse"]
    frame[whole] = frame[whole].astype("Int64")
    frame.insert(frame.columns.get_loc("baseline") + 1, "baseline_label",
                 [METHOD_LABELS.get(m, m) for m in frame["baseline"]])
    frame = frame.sort_values(["model", "task"], key=sort_key, kind="stable")
    sections = []
    for model in sorted(set(frame["model"])):
        ours = comparisons[comparisons["model"] == model]
        metric_of = {r.task: r.primary_metric for r in records if r.model == model}
        tasks = ordered(set(frame.loc[frame["model"] == model, "task"]) - {AVERAGE, ALL_RUNS}, list(TASK_LABELS))
        rows = []
        for task in [*tasks, AVERAGE]:
            metric = metric_of[tasks[0]] if task == AVERAGE else metric_of[task]
            decimals = _decimals(metric)
            for r in ours[ours["task"] == task].itertuples(index=False):
                baseline = (METHOD_LABELS.get(r.baseline, r.baseline) if r.comparison == "swa"
                            else f"{METHOD_LABELS.get(r.baseline, r.baseline)} (best baseline)")
                rows.append(("Avg" if task == AVERAGE else _task_header(task, metric), baseline,
                             f"{r.difference:+.{decimals}f}", f"[{r.ci_low:+.{decimals}f}, {r.ci_high:+.{decimals}f}]",
                             f"{r.p_value:.3f}", f"{r.p_holm:.3f}",
                             f"[{r.run_ci_low:+.{decimals}f}, {r.run_ci_high:+.{decimals}f}]",
                             f"{r.run_p_value:.3f}", f"{r.run_p_holm:.3f}", str(r.runs)))
        if rows:
            sections.append(Section(f"{model}: bootstrap of Δ = BOMF − baseline", SIGNIFICANCE_HEADER, tuple(rows),
                                    text_columns=2))
        counts = {(r.baseline, r.task): r for r in signs[signs["model"] == model].itertuples(index=False)}
        columns = [*tasks, ALL_RUNS]
        sign_rows = []
        for baseline in baselines:
            if any((baseline, column) in counts for column in columns):
                sign_rows.append((METHOD_LABELS.get(baseline, baseline),
                                  *(_sign_cell(counts.get((baseline, column))) for column in columns)))
        if sign_rows:
            sections.append(Section(f"{model}: runs where BOMF is better / equal / worse (sign test)",
                                    ("BOMF vs", *(_task_header(t, metric_of[t]) for t in tasks), "All runs"),
                                    tuple(sign_rows)))
    caption = SIGNIFICANCE_CAPTION.format(resamples=resamples, seed=seed)
    return render(frame, sections, caption, "tab:bomf-significance")


def _sign_cell(counts) -> str | None:
    """'better/equal/worse, p (Holm p)'; None where the method shares no run with BOMF."""
    if counts is None:
        return None
    tested = f", p {counts.p_value:.3f} ({counts.p_holm:.3f})" if np.isfinite(counts.p_value) else ", p –"
    return f"{counts.better}/{counts.tied}/{counts.worse}{tested}"


def main_table(records: Sequence[EvaluatedModel], methods: Sequence[str] = MAIN_METHODS, *, resamples: int = 1000,
               seed: int = 0, splits: Mapping[str, dict] | None = None) -> tuple[Table, Table]:
    """Table 1 and its significance tests: (the results with the tests below them, the tests alone).

    Rows follow ``methods`` (reference rows last: the oracle, and the trivial answer where ``splits``, task ->
    its split.json, records one); methods or tasks without records are left out.
    """
    results = _leaderboard(_with_trivial(records, splits), [*methods, TRIVIAL], METHOD_LABELS,
                           MAIN_CAPTION + TRIVIAL_NOTE + _learned_nothing_note(records, splits), "tab:bomf-main")
    significance = _significance_table(records, methods, resamples, seed)
    combined = Table(results.frame, f"{results.markdown}\n## Significance tests\n\n{significance.markdown}",
                     f"{results.latex}\n{significance.latex}")
    return combined, significance


def _learned_nothing_note(records: Sequence[EvaluatedModel], splits: Mapping[str, dict] | None) -> str:
    """The caption's warning for the runs in which every method learned nothing."""
    by_run: dict[tuple, list[EvaluatedModel]] = {}
    for r in records:
        by_run.setdefault((r.task, r.model, r.seed), []).append(r)
    messages = [m for (task, _, _), run in by_run.items()
                if (m := run_message(run, (splits or {}).get(task, {}).get("trivial")))]
    return "".join(f" WARNING: {m}." for m in messages)


def ablation_table(records: Sequence[EvaluatedModel], splits: Mapping[str, dict] | None = None) -> Table:
    """Table 3: BO on the metric alone, on the loss alone, and on both (BOMF)."""
    return _leaderboard(_with_trivial(records, splits), [*ABLATION_METHODS, TRIVIAL],
                        {**METHOD_LABELS, "bomf": "MOBO (BOMF)"}, ABLATION_CAPTION + TRIVIAL_NOTE, "tab:bomf-ablation")


def outer_bo_table(records: Sequence[EvaluatedModel], splits: Mapping[str, dict] | None = None) -> Table:
    """Table 4: hyperparameters from a grid or from full-model BO vs every method on proxy-BO hyperparameters,
    all on the runs the outer-loop baselines have (they usually run on fewer seeds than the rest)."""
    outer_runs = {(r.model, r.task, r.seed) for r in records if r.method in OUTER_LOOP_BASELINES}
    if outer_runs:
        records = [r for r in records if (r.model, r.task, r.seed) in outer_runs]
    return _leaderboard(_with_trivial(records, splits), [*OUTER_BO_METHODS, TRIVIAL], METHOD_LABELS,
                        OUTER_BO_CAPTION + TRIVIAL_NOTE, "tab:bomf-outer-bo")


# ------------------------------------------------------------------------------------------- all metrics

def all_metrics_table(records: Sequence[EvaluatedModel], methods: Sequence[str],
                      splits: Mapping[str, dict] | None = None) -> Table:
    """Table 6: methods x (every test metric + test loss), one section per (model, task); the trivial answer
    (where ``splits`` records one) has no loss."""
    long_rows, sections = [], []
    methods = [*methods, TRIVIAL]
    records = _with_trivial([r for r in records if r.method in methods], splits)
    keys = [(model, task) for model in sorted({r.model for r in records})
            for task in ordered((r.task for r in records if r.model == model), list(TASK_LABELS))]
    for model, task in keys:
        ours = [r for r in records if (r.model, r.task) == (model, task)]
        metrics = [m for m in ours[0].test if m != LOSS]
        present = [m for m in _row_order(methods) if any(r.method == m for r in ours)]
        # column -> (scale, decimals, lower is better)
        columns = {**{m: (METRICS[m].scale, _decimals(m), not METRICS[m].higher_is_better) for m in metrics},
                   LOSS: (1.0, 3, True)}
        summaries = {(method, column): _summary(scale * r.test.get(column, np.nan) for r in ours if r.method == method)
                     for method in present for column, (scale, _, _) in columns.items()}
        ranked = _on_every_seed({m: frozenset(r.seed for r in ours if r.method == m) for m in present})
        marks = {column: _marks({m: summaries[m, column][0] for m in ranked}, decimals, lower_is_better=lower)
                 for column, (_, decimals, lower) in columns.items()}
        rows = []
        for method in present:
            cells = []
            for column, (_, decimals, _) in columns.items():
                mean, std, seeds = summaries[method, column]
                if not np.isfinite(mean):  # the trivial answer's loss
                    cells.append(None)
                    continue
                mark = marks[column].get(method, "")
                cells.append(Number(mean, std, decimals, mark))
                long_rows.append({"model": model, "task": task, "method": method,
                                  "label": METHOD_LABELS.get(method, method), "metric": column, "mean": mean,
                                  "std": std, "seeds": seeds, "mark": mark, "oracle": method in ORACLE_METHODS})
            rows.append((METHOD_LABELS.get(method, method), *cells))
        header = ("Method", *(METRICS[m].label for m in metrics), "Test loss")
        first_oracle = next((i for i, m in enumerate(present) if m in REFERENCE_ROWS), 0)
        sections.append(Section(f"{model}, {TASK_LABELS.get(task, task)}", header, tuple(rows),
                                 ruled_rows=frozenset({first_oracle} - {0})))
    long = pd.DataFrame(long_rows, columns=["model", "task", "method", "label", "metric", "mean", "std", "seeds",
                                            "mark", "oracle"])
    return render(long, sections, ALL_METRICS_CAPTION + TRIVIAL_NOTE, "tab:bomf-all-metrics")


# --------------------------------------------------------------------------------------------- discrepancy

def discrepancy_table(records: Sequence[EvaluatedModel]) -> Table:
    """Table 2: validation loss and error of fine-tune (best member) vs SWA, per task."""
    methods = ("best_member", "swa")
    frame = _records_frame(records)
    frame = frame[frame["method"].isin(methods)]
    quantities = {"loss": ("validation_loss", 3), "error": ("validation_error", 2)}
    long_rows, sections = [], []
    for model in sorted(frame["model"].unique()):
        ours = frame[frame["model"] == model]
        rows = []
        for task in ordered(ours["task"], list(TASK_LABELS)):
            of_task = ours[ours["task"] == task]
            metric = of_task["metric"].iloc[0]
            loss_kind = "MSE" if "regression" in METRICS[metric].kinds else "NLL"
            cells = []
            for quantity, (column, decimals) in quantities.items():
                summaries = {m: _summary(of_task.loc[of_task["method"] == m, column])
                             for m in methods if m in set(of_task["method"])}
                marks = _marks({m: s[0] for m, s in summaries.items()}, decimals, lower_is_better=True, places=1)
                for method in methods:
                    if method not in summaries:
                        cells.append(None)
                        continue
                    mean, std, seeds = summaries[method]
                    cells.append(Number(mean, std, decimals, marks.get(method, "")))
                    long_rows.append({"model": model, "task": task, "metric": metric, "loss_kind": loss_kind,
                                      "method": method, "label": METHOD_LABELS[method], "quantity": quantity,
                                      "mean": mean, "std": std, "seeds": seeds, "mark": marks.get(method, "")})
            task_label = TASK_LABELS.get(task, task) + (f" ({loss_kind} loss)" if loss_kind == "MSE" else "")
            rows.append((task_label, *cells))
        header = ("Task", *(f"{q.capitalize()}, {METHOD_LABELS[m]}" for q in quantities for m in methods))
        sections.append(Section(model, header, tuple(rows)))
    long = pd.DataFrame(long_rows, columns=["model", "task", "metric", "loss_kind", "method", "label", "quantity",
                                            "mean", "std", "seeds", "mark"])
    return render(long, sections, DISCREPANCY_CAPTION, "tab:bomf-discrepancy")


def selection_table(records: Sequence[EvaluatedModel], methods: Sequence[str]) -> Table:
    """Table 7: each method's validation-minus-test gap, and the share of the SWA-to-oracle gap BOMF closes."""
    frame = _records_frame(records)
    frame = frame[frame["method"].isin(methods)].assign(
        gap=lambda f: f["sign"] * (f["validation_score"] - f["test_score"]))
    long_rows, sections = [], []
    for model in sorted(frame["model"].unique()):
        ours = frame[frame["model"] == model]
        tasks = ordered(ours["task"], list(TASK_LABELS))
        metric_of = ours.groupby("task")["metric"].first()
        header = ("Method", *(_task_header(t, metric_of[t]) for t in tasks), "Avg")
        gap_rows = []
        for method in [m for m in _row_order(methods) if m in set(ours["method"])]:
            per_seed = ours[ours["method"] == method].pivot(index="seed", columns="task", values="gap")
            cells = []
            for column in [*tasks, "avg"]:
                values = _seed_values(per_seed, column, tasks, metric_of)
                if values.empty:
                    cells.append(None)
                    continue
                mean, std, seeds = _summary(values)
                cells.append(Number(mean, std))
                long_rows.append({"model": model, "quantity": "validation_minus_test", "method": method,
                                  "task": column, "mean": mean, "std": std, "seeds": seeds})
            gap_rows.append((METHOD_LABELS.get(method, method), *cells))
        sections.append(Section(f"{model}: validation − test (×100)", header, tuple(gap_rows)))
        closed = _gap_closed(ours, tasks)
        if closed:
            rows = []
            for quantity, label in (("swa", METHOD_LABELS["swa"]), ("bomf", METHOD_LABELS["bomf"]),
                                    ("oracle_subset", METHOD_LABELS["oracle_subset"]), ("closed", "Gap closed (%)")):
                cells = []
                for column in [*tasks, "avg"]:
                    value = closed.get(column, {}).get(quantity, np.nan)
                    cells.append(Number(value, decimals=1 if quantity == "closed" else 2)
                                 if np.isfinite(value) else None)
                    long_rows.append({"model": model, "quantity": f"test_{quantity}" if quantity != "closed"
                                      else "gap_closed_percent", "method": "bomf", "task": column, "mean": value,
                                      "std": np.nan, "seeds": closed.get(column, {}).get("seeds", 0)})
                rows.append((label, *cells))
            sections.append(Section(f"{model}: SWA-to-oracle gap closed by BOMF (test)", header, tuple(rows)))
    long = pd.DataFrame(long_rows, columns=["model", "quantity", "method", "task", "mean", "std", "seeds"])
    return render(long, sections, SELECTION_CAPTION, "tab:bomf-selection")


def _gap_closed(frame: pd.DataFrame, tasks: list[str]) -> dict[str, dict[str, float]]:
    """Per task (and avg: per-seed means over tasks, where their metrics have one form): mean test scores of SWA,
    BOMF and the oracle over the seeds all three have, and 100 × (BOMF − SWA) / (oracle − SWA) where the oracle
    is better than SWA (in the metric's direction)."""
    needed = ("swa", "bomf", "oracle_subset")
    scores = frame[frame["method"].isin(needed)].pivot_table(index=["seed", "task"], columns="method",
                                                              values="test_score")
    if not set(needed) <= set(scores.columns):
        return {}
    scores = scores[list(needed)].dropna()
    per_task = {task: scores.xs(task, level="task") for task in tasks if task in scores.index.get_level_values("task")}
    seeds_with_all = scores.groupby("seed").size()
    complete = seeds_with_all[seeds_with_all == len(tasks)].index
    sign_of = frame.groupby("task")["sign"].first()
    if len(complete) and _one_form(frame.groupby("task")["metric"].first()[tasks]):
        per_task["avg"] = scores.loc[complete].groupby("seed").mean()
        sign_of["avg"] = sign_of[tasks[0]]
    result = {}
    for column, of_column in per_task.items():
        means = of_column.mean()
        spread = sign_of[column] * (means["oracle_subset"] - means["swa"])
        result[column] = {**means.to_dict(), "seeds": len(of_column),
                          "closed": 100 * sign_of[column] * (means["bomf"] - means["swa"]) / spread
                          if spread > 0 else np.nan}
    return result


# ---------------------------------------------------------------------------------------- loss vs metric

# The searches whose evaluated points the correlation table reads, in its column order: stage 1's trials
# (trained models at BO-chosen hyperparameters) and the three BO searches over fusion weights.
SEARCH_LABELS = {"hpo": "HPBO (stage 1)", **{m: METHOD_LABELS[m] for m in ("bo_loss", "bo_metric", "bomf")}}
CORRELATION_CAPTION = (
    "Spearman's ρ between the validation loss and each validation metric over the points each search evaluated "
    "(the NeurIPS paper's loss–metric correlation table): stage 1's proxy trials (HPBO; its trials record the "
    "primary metric only) and the fusion-weight searches (loss only, metric only, BOMF), mean ± sample std "
    "over seeds (the CSV also gives the points per seed). Negative ρ: a lower loss goes with a higher metric; for a lower-is-better "
    "metric the sign is flipped, so a negative ρ always means the loss and the metric agree. Only tasks with "
    "more than one metric or a text metric.")


def correlation_table(searches: pd.DataFrame) -> Table:
    """Table 8: Spearman's ρ between validation loss and each metric over each search's evaluated points.

    ``searches``: one row per evaluated point, columns task, model, seed, search (a SEARCH_LABELS key), loss and
    the metrics it recorded (NaN where a search did not record one)."""
    from scipy.stats import spearmanr

    long_rows, sections = [], []
    for model in sorted(searches["model"].unique()):
        ours = searches[searches["model"] == model]
        rows = []
        for task in ordered(ours["task"], list(TASK_LABELS)):
            of_task = ours[ours["task"] == task]
            metrics = [m for m in METRICS if m in of_task.columns and of_task[m].notna().any()]
            if len(metrics) < 2 and not any(METRICS[m].statistics is not None for m in metrics):
                continue
            for metric in metrics:
                cells = []
                for search in SEARCH_LABELS:
                    per_seed = []
                    for _, points in of_task[of_task["search"] == search].groupby("seed"):
                        points = points[np.isfinite(points[LOSS]) & np.isfinite(points[metric])]
                        if len(points) >= 3 and points[LOSS].nunique() > 1 and points[metric].nunique() > 1:
                            rho = spearmanr(points[LOSS], points[metric]).statistic
                            per_seed.append((METRICS[metric].sign * rho, len(points)))
                    if not per_seed:
                        cells.append(None)
                        continue
                    mean, std, seeds = _summary(rho for rho, _ in per_seed)
                    cells.append(Number(mean, std, 2))
                    long_rows.append({"model": model, "task": task, "metric": metric, "search": search,
                                      "label": SEARCH_LABELS[search], "rho": mean, "std": std, "seeds": seeds,
                                      "points": int(np.median([n for _, n in per_seed]))})
                rows.append((TASK_LABELS.get(task, task), METRICS[metric].label, *cells))
        if rows:
            sections.append(Section(model, ("Task", "Metric", *SEARCH_LABELS.values()), tuple(rows), text_columns=2))
    long = pd.DataFrame(long_rows, columns=["model", "task", "metric", "search", "label", "rho", "std", "seeds",
                                            "points"])
    return render(long, sections, CORRELATION_CAPTION, "tab:bomf-loss-metric-correlation")


# ----------------------------------------------------------------------------------------- fusion diagnostics

DIAGNOSED_METHOD = "bomf"
DIAGNOSTICS_CAPTION = (
    "What BOMF's chosen weights are, per run, against the validation noise. Effective members: (Σw)²/Σw² of its "
    "weights over the members (1: one member, N: the uniform average of N); largest weight: the largest share; "
    f"vertex: one member holds all the weight (≥ 1 − {VERTEX_TOLERANCE:g}), the \"fusion\" is that checkpoint. "
    "Members' range and std: max − min and sample std of the members' validation primary metric (as BOMF's "
    "search scored them, history.csv). Gain: BOMF's validation primary metric minus the best member's (in the "
    "metric's direction, positive: BOMF better). Val. SE: the standard error of BOMF's validation primary metric "
    "at the validation size (split.json): sqrt(p(1 − p)/n) for accuracy, error rate and exact match; for other "
    "metrics, which keep no per-example validation predictions, the std of the metric over {resamples} bootstrap "
    "resamples of BOMF's test predictions times sqrt(test size / validation size). Scores ×100 for a score "
    "within [−1, 1]; a gain or a range inside Val. SE is within the noise the choice acted on.")


def member_scores(searches: pd.DataFrame, task: str, model: str, seed: int, metric: str) -> list[float]:
    """The members' validation ``metric`` in one run, from the first search whose history scored them."""
    if "source" not in searches.columns:
        return []
    rows = searches[(searches["task"] == task) & (searches["model"] == model) & (searches["seed"] == seed)
                    & (searches["source"] == "member")]
    return [] if rows.empty else list(rows.loc[rows["search"] == rows["search"].iloc[0], metric])


def fusion_diagnostics_table(records: Sequence[EvaluatedModel], weights: Mapping[tuple, list[float] | None],
                             searches: pd.DataFrame, splits: Mapping[str, dict], resamples: int = 1000) -> Table:
    """Table 9: per run, BOMF's effective number of members, whether it is one member, the members' validation
    spread, its validation gain over the best member and the validation standard error.

    ``weights``: by (task, model, seed, method), each method's weights over the members (None: it has none);
    ``splits``: task -> its split.json (the validation size)."""
    tasks = ordered((r.task for r in records), list(TASK_LABELS))
    ours = sorted((r for r in records if r.method == DIAGNOSED_METHOD),
                  key=lambda r: (r.model, tasks.index(r.task), r.seed))
    columns = {"effective_members": ("Eff. members", 1), "largest_weight": ("Largest weight", 2),
               "vertex": ("Vertex", None), "member_range": ("Members' range", 100),
               "member_std": ("Members' std", 100), "gain_over_best_member": ("Gain", 100),
               "validation_se": ("Val. SE", 100)}
    long_rows, sections = [], []
    for model in sorted({r.model for r in ours}):
        rows = []
        for r in (r for r in ours if r.model == model):
            metric = METRICS[r.primary_metric]
            size = splits.get(r.task, {}).get("sizes", {}).get("val")
            found = fusion_diagnostics(r, weights.get((r.task, r.model, r.seed, r.method)),
                                       member_scores(searches, r.task, r.model, r.seed, r.primary_metric), size,
                                       resamples)
            cells = []
            for key, (_, scale) in columns.items():
                value = found[key]
                if key == "vertex":
                    cells.append("–" if value is None else ("yes" if value else "no"))
                elif not np.isfinite(value):
                    cells.append(None)
                elif scale == 100:
                    cells.append(Number(metric.scale * value, decimals=_decimals(r.primary_metric)))
                else:
                    cells.append(Number(value, decimals=scale))
            rows.append((_task_header(r.task, r.primary_metric), str(r.seed), *cells))
            long_rows.append({"model": model, "task": r.task, "seed": r.seed, "method": r.method,
                              "metric": r.primary_metric, "validation_size": size, **found})
        header = ("Task", "Seed", *(label for label, _ in columns.values()))
        sections.append(Section(model, header, tuple(rows), text_columns=2))
    long = pd.DataFrame(long_rows, columns=["model", "task", "seed", "method", "metric", "validation_size",
                                            *columns])
    return render(long, sections, DIAGNOSTICS_CAPTION.format(resamples=resamples), "tab:bomf-fusion-diagnostics")


# ------------------------------------------------------------------------------------ selection-rule study

SELECTION_RULES_CAPTION = (
    "Which Pareto-point rule generalises: every selection rule applied to the same BOMF search of a run (the "
    "runs of tables.selection_study), the point it picks rebuilt from the members and scored on test. Cells: "
    "that point's test primary metric (×100 for a score within [−1, 1]), mean ± sample std over the runs that "
    "have the study; Avg: the mean over tasks taken per seed, as in Table 1 (where every task's metric has one "
    "direction and scale). best_metric: the best validation primary metric (ties: lower loss); best_loss: the "
    "lowest validation loss; knee: nearest the front's utopia point; loss_within_se: the lowest validation loss "
    "among the points whose primary metric is within one standard error of the best (the bootstrap standard "
    "error of the best-metric point's validation primary metric). †: the rule the runs' BOMF used "
    "(fusion.selection). No cell is highlighted: a difference between rules is one search's, on few runs.")
USED_MARK = " †"


def selection_rules_table(studies: pd.DataFrame) -> Table:
    """Table 10: per task (and Avg where Table 1 has one), the test primary metric of the point each selection rule
    picks from the same BOMF search, mean over the runs with the study (``studies``: every run's
    selection_rules.csv with its task, model and seed), the rule BOMF used marked."""
    from ..fuse.selection import SELECTION_RULES

    long_rows, sections = [], []
    if not studies.empty:
        studies = studies.assign(test_score=[METRICS[m].scale * row[f"test_{m}"]
                                             for m, (_, row) in zip(studies["metric"], studies.iterrows())])
    for model in sorted(set(studies.get("model", ()))):
        ours = studies[studies["model"] == model]
        tasks = ordered(ours["task"], list(TASK_LABELS))
        metric_of = ours.groupby("task")["metric"].first()
        header = ("Rule", *(_task_header(t, metric_of[t]) for t in tasks), "Avg")
        rows = []
        for rule in ordered(ours["rule"], list(SELECTION_RULES)):
            picks = ours[ours["rule"] == rule]
            per_seed = picks.pivot(index="seed", columns="task", values="test_score")
            cells = []
            for column in [*tasks, "avg"]:
                values = _seed_values(per_seed, column, tasks, metric_of)
                if values.empty:
                    cells.append(None)
                    continue
                mean, std, seeds = _summary(values)
                cells.append(Number(mean, std, _decimals(metric_of[column if column != "avg" else tasks[0]])))
                long_rows.append({"model": model, "rule": rule, "used": bool(picks["used"].any()), "task": column,
                                  "metric": metric_of.get(column, "avg"), "mean": mean, "std": std, "seeds": seeds})
            rows.append((rule + (USED_MARK if picks["used"].any() else ""), *cells))
        sections.append(Section(model, header, tuple(rows)))
    long = pd.DataFrame(long_rows, columns=["model", "rule", "used", "task", "metric", "mean", "std", "seeds"])
    return render(long, sections, SELECTION_RULES_CAPTION, "tab:bomf-selection-rules")


def run_summary(records: Sequence[EvaluatedModel], weights: Mapping[str, list[float] | None] | None = None,
                members: Sequence[float] = (), split: dict | None = None) -> pd.DataFrame:
    """One run's methods side by side, each with its ``fusion_diagnostics`` (``weights``: method -> its weights
    over the members, None where it has none; ``members``: the members' validation primary metric; ``split``:
    the task's split.json, for the validation size and the trivial answer); ``warning`` says where a method
    learned nothing."""
    split = split or {}
    notes = run_warnings(records, split.get("trivial"))
    rows = []
    for r in records:
        row = {"method": r.method}
        row.update({f"val_{k}": v for k, v in r.validation.items()})
        row.update({f"test_{k}": v for k, v in r.test.items()})
        row.update(fusion_diagnostics(r, (weights or {}).get(r.method), members, split.get("sizes", {}).get("val")))
        rows.append({**row, "warning": notes[r.method]})
    return pd.DataFrame(rows)


@dataclass
class TableInputs:
    """What every table is built from: all runs' test records, the configured methods in order, the paired
    bootstrap's resamples, Snakemake's benchmark files (``costs.read_benchmarks``), how many fused models
    each method's search scored, by (task, model, seed, method), and every point the searches evaluated."""

    records: list[EvaluatedModel]
    methods: list[str]
    resamples: int
    benchmarks: pd.DataFrame
    evaluations: dict[tuple, int]
    searches: pd.DataFrame  # every point the searches evaluated (correlation_table)
    # By (task, model, seed, method), each method's weights over the members (None where it has none).
    weights: dict[tuple, list[float] | None] = field(default_factory=dict)
    splits: dict[str, dict] = field(default_factory=dict)  # task -> its data job's split.json
    # Every run's selection-rule study (selection_rules.csv with its task, model and seed; empty: none ran).
    studies: pd.DataFrame = field(default_factory=pd.DataFrame)

    @cached_property
    def main(self) -> tuple[Table, Table]:
        """Table 1 and its significance tests, computed once for both files."""
        return main_table(self.records, self.methods, resamples=self.resamples, splits=self.splits)


# Every table the paper_tables job writes, <output_dir>/tables/<name>.{csv,md,tex}, in the order it builds them:
# its name and its builder. The rule declares these files, and its report captions are workflow/report/<name>.rst.
TABLES: dict[str, Callable[[TableInputs], Table]] = {
    "table1_main": lambda inputs: inputs.main[0],
    "table1_significance": lambda inputs: inputs.main[1],
    "table2_discrepancy": lambda inputs: discrepancy_table(inputs.records),
    "table3_ablation": lambda inputs: ablation_table(inputs.records, inputs.splits),
    "table4_outer_bo": lambda inputs: outer_bo_table(inputs.records, inputs.splits),
    "table5_cost": lambda inputs: cost_table(inputs.benchmarks, inputs.evaluations),
    "table6_all_metrics": lambda inputs: all_metrics_table(inputs.records, inputs.methods, inputs.splits),
    "table7_selection": lambda inputs: selection_table(inputs.records, inputs.methods),
    "table8_loss_metric_correlation": lambda inputs: correlation_table(inputs.searches),
    "table9_fusion_diagnostics": lambda inputs: fusion_diagnostics_table(
        inputs.records, inputs.weights, inputs.searches, inputs.splits, inputs.resamples),
    "table10_selection_rules": lambda inputs: selection_rules_table(inputs.studies),
}
