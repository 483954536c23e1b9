"""Result tables and paired bootstrap tests on hand-built evaluation records and benchmark files."""

import numpy as np
import pandas as pd
import pytest

from conftest import REPO

from bomf.records import EvaluatedModel
from bomf.report.costs import cost_table, read_benchmarks
from bomf.report.render import METHOD_LABELS, Table, latex_escape
from bomf.report.stats import bomf_comparisons, bootstrap_indices, compare, differences, score_resamples
from bomf.report.tables import (TABLES, TableInputs, ablation_table, all_metrics_table, correlation_table,
                                discrepancy_table, main_table, outer_bo_table, selection_table)

LABELS = np.array([0, 1] * 20)


def record(task, method, seed, score, *, model="minilm", metric="accuracy", predictions=LABELS,
           labels=LABELS, validation_loss=0.5, validation_score=0.8):
    return EvaluatedModel(task, model, seed, method, metric, test={"loss": 0.4, metric: score},
                          validation={"loss": validation_loss, metric: validation_score}, test_size=len(labels),
                          predictions=list(predictions), labels=list(labels))


def cell(table: Table, method: str, task: str, model: str = "minilm") -> pd.Series:
    frame = table.frame
    return frame[(frame["model"] == model) & (frame["method"] == method) & (frame["task"] == task)].iloc[0]


def markdown_row(table: Table, label: str) -> str:
    return next(line for line in table.markdown.splitlines() if line.startswith(f"| {label} |"))


# ------------------------------------------------------------------------------------------ means and marks

def test_scores_are_x100_mean_and_sample_std_over_seeds():
    records = [record("rte", "bomf", seed, score) for seed, score in enumerate([0.70, 0.72, 0.74])]
    table, _ = main_table(records, resamples=10)
    row = cell(table, "bomf", "rte")
    assert row["mean"] == pytest.approx(72.0)
    assert row["std"] == pytest.approx(2.0)
    assert row["seeds"] == 3
    assert "72.00 ± 2.00" in markdown_row(table, "BOMF")
    assert r"72.00 $\pm$ 2.00" in table.latex


def test_one_seed_shows_no_spread():
    table, _ = main_table([record("rte", "swa", 0, 0.7)], resamples=10)
    assert np.isnan(cell(table, "swa", "rte")["std"])
    assert "70.00" in markdown_row(table, "SWA") and "±" not in markdown_row(table, "SWA")


def test_best_is_bold_second_underlined_and_the_oracle_never_marked():
    records = [record("rte", "bomf", 0, 0.80), record("rte", "swa", 0, 0.78), record("rte", "best_member", 0, 0.75),
               record("rte", "oracle_subset", 0, 0.95)]
    table, _ = main_table(records, resamples=10)
    assert cell(table, "bomf", "rte")["mark"] == "best"
    assert cell(table, "swa", "rte")["mark"] == "second"
    assert cell(table, "best_member", "rte")["mark"] == ""
    assert cell(table, "oracle_subset", "rte")["mark"] == "" and cell(table, "oracle_subset", "rte")["oracle"]
    assert "**80.00**" in markdown_row(table, "BOMF") and "<u>78.00</u>" in markdown_row(table, "SWA")
    oracle_row = markdown_row(table, "Best subset (oracle, test-selected)")
    assert "95.00" in oracle_row and "**" not in oracle_row and "<u>" not in oracle_row
    assert r"\textbf{80.00}" in table.latex and r"\underline{78.00}" in table.latex
    # The oracle row sits last, below a rule.
    body = table.latex.splitlines()
    assert body[body.index(next(line for line in body if line.startswith("Best subset"))) - 1] == r"\midrule"


def test_values_that_print_the_same_share_a_place_and_the_next_is_second():
    records = [record("rte", "bomf", 0, 0.800001), record("rte", "swa", 0, 0.800004),
               record("rte", "greedy_soup", 0, 0.79), record("rte", "best_member", 0, 0.70)]
    table, _ = main_table(records, resamples=10)
    assert [cell(table, m, "rte")["mark"] for m in ("bomf", "swa", "greedy_soup", "best_member")] == \
        ["best", "best", "second", ""]


def test_avg_is_taken_per_seed_and_only_for_methods_with_every_task():
    records = [record("rte", "bomf", 0, 0.70), record("rte", "bomf", 1, 0.80),
               record("mrpc", "bomf", 0, 0.90, metric="f1"), record("mrpc", "bomf", 1, 0.80, metric="f1"),
               record("rte", "swa", 0, 0.75), record("rte", "swa", 1, 0.75)]
    table, _ = main_table(records, resamples=10)
    avg = cell(table, "bomf", "avg")
    # Per-seed averages are 80 and 80: no spread, though each task alone varies.
    assert avg["mean"] == pytest.approx(80.0) and avg["std"] == pytest.approx(0.0)
    assert not ((table.frame["method"] == "swa") & (table.frame["task"] == "avg")).any()
    assert markdown_row(table, "SWA").endswith("| – | – |")  # no MRPC, so no avg
    assert "| Method | RTE (Acc.) | MRPC (F1) | Avg |" in table.markdown


def test_missing_methods_tasks_and_records_are_skipped():
    table, significance = main_table([record("cola", "swa", 0, 0.5, metric="mcc")], resamples=10)
    assert set(table.frame["method"]) == {"swa"}
    assert significance.frame.empty
    empty, _ = main_table([], resamples=10)
    assert empty.frame.empty and "No results to show." in empty.markdown


def test_duplicate_records_are_refused():
    with pytest.raises(ValueError, match="minilm/rte/swa/seed0"):
        main_table([record("rte", "swa", 0, 0.5), record("rte", "swa", 0, 0.6)], resamples=10)


# ------------------------------------------------------------------------------------------------ bootstrap

def paired_bootstrap(first, second, labels, metric, resamples, seed):
    """first - second for two methods given as seed -> test predictions, as bomf_comparisons computes it."""
    indices = bootstrap_indices(len(labels), resamples, seed)
    return compare(differences(score_resamples(first, labels, metric, indices),
                               score_resamples(second, labels, metric, indices), np.random.default_rng(seed)))


def test_a_method_right_everywhere_beats_one_wrong_everywhere():
    wrong = 1 - LABELS
    result = paired_bootstrap({0: LABELS, 1: LABELS}, {0: wrong, 1: wrong}, LABELS, "f1", resamples=200, seed=3)
    assert result.difference == pytest.approx(1.0)
    assert result.ci_low == pytest.approx(1.0) and result.ci_high == pytest.approx(1.0)
    assert result.p_value == pytest.approx(2 / 201)  # the smallest p 200 resamples can give
    assert (result.run_ci_low, result.run_ci_high, result.run_p_value) == (1.0, 1.0, result.p_value)
    assert (result.runs, result.examples, result.resamples) == (2, len(LABELS), 200)


def test_identical_predictions_give_no_difference():
    predictions = np.where(np.arange(len(LABELS)) % 3 == 0, 1 - LABELS, LABELS)
    result = paired_bootstrap({0: predictions}, {0: predictions.copy()}, LABELS, "mcc", resamples=200, seed=0)
    assert result.difference == 0.0
    assert result.ci_low <= 0.0 <= result.ci_high
    assert result.p_value == 1.0


def test_bootstrap_is_deterministic_for_a_seed():
    rng = np.random.default_rng(0)
    labels = rng.normal(size=60)
    close, far = labels + rng.normal(scale=0.3, size=60), labels + rng.normal(scale=1.0, size=60)
    runs = [paired_bootstrap({0: close}, {0: far}, labels, "pearson", resamples=100, seed=s) for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert runs[0].difference > 0 and runs[0].ci_low > 0
    np.testing.assert_array_equal(bootstrap_indices(60, 5, 7), bootstrap_indices(60, 5, 7))


def test_comparisons_pick_the_best_non_oracle_baseline_on_validation_and_average_shared_seeds():
    wrong = 1 - LABELS
    half = np.where(np.arange(len(LABELS)) < 20, LABELS, wrong)
    records = [record("rte", "bomf", s, 1.0) for s in (0, 1, 2)]
    records += [record("rte", "swa", s, 0.0, predictions=wrong) for s in (0, 1)]
    # greedy_soup: best on validation; best_member: best on test, never the choice.
    records += [record("rte", "greedy_soup", 0, 0.5, predictions=half, validation_score=0.9),
                record("rte", "best_member", 0, 0.9, validation_score=0.7),
                record("rte", "oracle_subset", 0, 1.0, validation_score=1.0)]
    frame = bomf_comparisons(records, ["swa", "best_member", "greedy_soup"], resamples=50, seed=0)
    assert list(frame["comparison"]) == ["swa", "best baseline"]
    assert list(frame["baseline"]) == ["swa", "greedy_soup"]
    assert list(frame["runs"]) == [2, 1]
    assert frame["difference"].tolist() == pytest.approx([1.0, 0.5])


def test_main_table_reports_the_tests_below_it_and_never_against_the_oracle():
    wrong = 1 - LABELS
    records = [record("rte", "bomf", 0, 1.0), record("rte", "swa", 0, 0.0, predictions=wrong),
               record("rte", "oracle_subset", 0, 1.0)]
    table, significance = main_table(records, resamples=50, seed=1)
    bootstrap = significance.frame[significance.frame["comparison"] != "sign test"]
    assert list(bootstrap["baseline"]) == ["swa", "swa"]
    assert bootstrap["difference"].tolist() == pytest.approx([100.0, 100.0])
    assert ("| RTE (Acc.) | SWA (best baseline) | +100.00 | [+100.00, +100.00] | 0.039 | 0.039 | "
            "[+100.00, +100.00] | 0.039 | 0.039 | 1 |") in table.markdown
    assert "| SWA | 1/0/0, p 1.000 (1.000) | 1/0/0, p 1.000 (1.000) |" in table.markdown
    assert set(significance.frame["baseline"]) == {"swa"}
    assert table.markdown.index("## Significance tests") > table.markdown.index("| BOMF |")
    assert "50 resamples" in significance.markdown and significance.latex in table.latex


def test_significance_table_by_hand_over_two_tasks_and_their_mean():
    """RTE: BOMF right and SWA wrong on every example in both runs (Δ = 100); MRPC: both right (Δ = 0, every run
    tied). Avg: Δ = 50 on every resample. With 50 resamples, p = 2/51 where every resample is above 0 and 1
    where every one is 0; Holm over RTE, MRPC and Avg: 3 x 2/51 = 0.118 for the two at 2/51."""
    wrong = 1 - LABELS
    records = [record(task, "bomf", s, 1.0, metric=metric) for task, metric in (("rte", "accuracy"), ("mrpc", "f1"))
               for s in (0, 1)]
    records += [record("rte", "swa", s, 0.0, predictions=wrong) for s in (0, 1)]
    records += [record("mrpc", "swa", s, 1.0, metric="f1") for s in (0, 1)]
    _, significance = main_table(records, ["swa", "bomf"], resamples=50)
    markdown = significance.markdown
    assert ("| RTE (Acc.) | SWA | +100.00 | [+100.00, +100.00] | 0.039 | 0.118 | [+100.00, +100.00] | 0.039 "
            "| 0.118 | 2 |") in markdown
    assert ("| MRPC (F1) | SWA | +0.00 | [+0.00, +0.00] | 1.000 | 1.000 | [+0.00, +0.00] | 1.000 | 1.000 "
            "| 2 |") in markdown
    assert ("| Avg | SWA (best baseline) | +50.00 | [+50.00, +50.00] | 0.039 | 0.118 | [+50.00, +50.00] | 0.039 "
            "| 0.118 | 4 |") in markdown
    # Sign tests: RTE 2 better (p = 2 / 2^2 = 0.5), MRPC no untied run (no p), all runs 2/2/0 (p = 0.5); Holm
    # over the two tests: 2 x 0.5.
    assert "| BOMF vs | RTE (Acc.) | MRPC (F1) | All runs |" in markdown
    assert "| SWA | 2/0/0, p 0.500 (1.000) | 0/2/0, p – | 2/2/0, p 0.500 (1.000) |" in markdown
    signs = significance.frame[significance.frame["comparison"] == "sign test"].set_index("task")
    assert signs.loc["all", ["better", "tied", "worse"]].tolist() == [2, 2, 0]
    for words in ("validation primary metric (never test)", "test-sampling noise only", "seed-to-seed variation",
                  "Holm"):
        assert words in markdown


def test_differing_test_labels_are_refused():
    records = [record("rte", "bomf", 0, 1.0), record("rte", "swa", 0, 1.0, labels=1 - LABELS)]
    with pytest.raises(ValueError, match="different test labels"):
        bomf_comparisons(records, ["swa"], resamples=10)


def noisy_predictor(rng, labels, accuracy):
    """Binary predictions right on each example independently with probability ``accuracy`` (a number, or
    one per example)."""
    return np.where(rng.uniform(size=len(labels)) < accuracy, labels, 1 - labels)


CALIBRATION_EXAMPLES, CALIBRATION_SIMULATIONS, CALIBRATION_RESAMPLES = 200, 400, 300


def shared_difficulty(rng):
    """Labels and the chance a typical method gets each example right: 70% easy (0.94), 30% hard (0.25), the
    same for every method, so two methods' errors are correlated as on a real test split and an unpaired
    resampling overstates the spread of their difference (~1.4x here)."""
    labels = rng.integers(0, 2, CALIBRATION_EXAMPLES)
    return labels, np.where(rng.uniform(size=CALIBRATION_EXAMPLES) < 0.7, 0.94, 0.25)


@pytest.mark.parametrize("metric, seeds", [("accuracy", 1), ("f1", 2)])
def test_bootstrap_rejects_a_true_null_at_about_the_nominal_rate(metric, seeds):
    """Two methods of the same quality (each seed an independent predictor, same per-example chances): over
    400 simulated test splits, p < 0.05 must come out in about 5% of them, and p < 0.5 in about half. A
    one-tailed p-value piles p near 1 for half the splits, an unpaired resampling rejects almost never, a
    p-value stuck at 1 never: each leaves these bounds."""
    rng = np.random.default_rng(2024)
    p_values = []
    for simulation in range(CALIBRATION_SIMULATIONS):
        labels, chance = shared_difficulty(rng)
        first = {s: noisy_predictor(rng, labels, chance) for s in range(seeds)}
        second = {s: noisy_predictor(rng, labels, chance) for s in range(seeds)}
        p_values.append(paired_bootstrap(first, second, labels, metric, CALIBRATION_RESAMPLES, simulation).p_value)
    p_values = np.array(p_values)
    assert 0.01 <= np.mean(p_values < 0.05) <= 0.10, np.mean(p_values < 0.05)
    assert 0.40 <= np.mean(p_values < 0.5) <= 0.60, np.mean(p_values < 0.5)  # uniform under the null


def test_bootstrap_interval_covers_a_known_difference_and_detects_it():
    """The first method 5 points above the typical chance on every example, the second 5 below (true
    accuracy difference 0.10): the 95% interval covers 0.10 in about 95% of 400 simulated splits (one too
    narrow, too wide, e.g. unpaired (99%), shifted or of the wrong sign fails), and p < 0.05 in most of them
    (power ~0.88 here, ~0.64 with an unpaired resampling)."""
    rng = np.random.default_rng(7)
    covered, rejected = [], []
    for simulation in range(CALIBRATION_SIMULATIONS):
        labels, chance = shared_difficulty(rng)
        first, second = noisy_predictor(rng, labels, chance + 0.05), noisy_predictor(rng, labels, chance - 0.05)
        result = paired_bootstrap({0: first}, {0: second}, labels, "accuracy", CALIBRATION_RESAMPLES, simulation)
        # The point estimate is the plain difference of the two accuracies on the split.
        assert result.difference == pytest.approx(np.mean(first == labels) - np.mean(second == labels))
        covered.append(result.ci_low <= 0.10 <= result.ci_high)
        rejected.append(result.p_value < 0.05)
    assert 0.91 <= np.mean(covered) <= 0.985, np.mean(covered)
    assert np.mean(rejected) > 0.75, np.mean(rejected)


# ------------------------------------------------------------------------------------------- other tables

def test_discrepancy_table_reads_validation_loss_and_error():
    records = [record("rte", "best_member", s, 0.7, validation_loss=loss, validation_score=0.79)
               for s, loss in ((0, 0.9), (1, 1.0))]
    records += [record("rte", "swa", 0, 0.7, validation_loss=0.8, validation_score=0.78),
                record("stsb", "swa", 0, 0.9, metric="pearson", validation_loss=0.6, validation_score=0.9),
                record("rte", "bomf", 0, 0.9)]
    table = discrepancy_table(records)
    frame = table.frame.set_index(["task", "method", "quantity"])
    assert frame.loc[("rte", "best_member", "loss"), "mean"] == pytest.approx(0.95)
    assert frame.loc[("rte", "best_member", "error"), "mean"] == pytest.approx(21.0)
    assert frame.loc[("stsb", "swa", "error"), "mean"] == pytest.approx(10.0)
    assert frame.loc[("rte", "swa", "loss"), "mark"] == "best"  # lower loss
    assert frame.loc[("rte", "best_member", "error"), "mark"] == "best"  # lower error
    assert set(table.frame["method"]) == {"best_member", "swa"}
    assert "| RTE | 0.950 ± 0.071 | **0.800** | **21.00 ± 0.00** | 22.00 |" in table.markdown
    assert "| STS-B (MSE loss) | – | **0.600** | – | **10.00** |" in table.markdown
    assert "1 − correlation" in table.markdown


def test_a_method_run_on_fewer_seeds_is_shown_but_not_ranked():
    # grid_finetune ran on seed 0 only (method_seeds): its one-seed mean must not outrank three-seed means.
    records = [record("rte", method, seed, score + seed / 100) for seed in range(3)
               for method, score in (("bomf", 0.70), ("swa", 0.68), ("best_member", 0.60))]
    records.append(record("rte", "grid_finetune", 0, 0.90))
    table, _ = main_table(records, ["grid_finetune", "best_member", "swa", "bomf"], resamples=10)
    for column in ("rte", "avg"):
        assert cell(table, "grid_finetune", column)["mark"] == ""
        assert cell(table, "grid_finetune", column)["seeds"] == 1
        assert cell(table, "bomf", column)["mark"] == "best"
        assert cell(table, "swa", column)["mark"] == "second"
    assert "| Fine-tune, grid hyperparameters (no BO) | 90.00 | 90.00 |" in table.markdown
    metrics = all_metrics_table(records, ["grid_finetune", "swa", "bomf"])
    assert set(metrics.frame.loc[metrics.frame["method"] == "grid_finetune", "mark"]) == {""}
    assert set(metrics.frame.loc[metrics.frame["method"] == "bomf", "mark"]) == {"best"}


def test_outer_bo_table_compares_every_method_on_the_outer_loop_seeds_only():
    records = [record("rte", method, seed, score + seed / 10) for seed in range(3)
               for method, score in (("bomf", 0.60), ("swa", 0.58))]
    records += [record("rte", "grid_finetune", 0, 0.62), record("rte", "hpbo_full", 0, 0.55)]
    outer = outer_bo_table(records)
    assert set(outer.frame["seeds"]) == {1}
    assert cell(outer, "bomf", "rte")["mean"] == pytest.approx(60.0)
    assert cell(outer, "grid_finetune", "rte")["mark"] == "best"
    assert cell(outer, "bomf", "rte")["mark"] == "second"
    assert "method_seeds" in outer.markdown


def test_ablation_and_outer_bo_tables_use_their_methods_and_labels():
    records = [record("rte", method, 0, score) for method, score in
               (("bo_metric", 0.7), ("bo_loss", 0.6), ("bomf", 0.8), ("grid_finetune", 0.65), ("hpbo_full", 0.75),
                ("swa", 0.72), ("oracle_subset", 0.99))]
    ablation = ablation_table(records)
    assert set(ablation.frame["method"]) == {"bo_metric", "bo_loss", "bomf"}
    assert "| MOBO (BOMF) | **80.00** | **80.00** |" in ablation.markdown
    assert "| BO, metric only | <u>70.00</u> |" in ablation.markdown
    outer = outer_bo_table(records)
    assert set(outer.frame["method"]) == {"grid_finetune", "hpbo_full", "swa", "bomf"}
    assert markdown_row(outer, METHOD_LABELS["grid_finetune"]).startswith("| Fine-tune, grid")
    assert "stage-1 BO on the proxy" in outer.markdown


def test_latex_escapes_labels_tasks_and_models():
    assert latex_escape("my_method & 50% ± 1") == r"my\_method \& 50\% $\pm$ 1"
    table, _ = main_table([record("my_task", "my_method", 0, 0.5, model="tiny_bert")], ["my_method"],
                          resamples=10)
    assert r"my\_method & \textbf{50.00} & \textbf{50.00} \\" in table.latex
    assert r"my\_task (Acc.)" in table.latex and r"\textit{tiny\_bert}" in table.latex
    assert "my_method" not in table.latex.replace(r"my\_method", "")


def test_write_creates_csv_markdown_and_latex(tmp_path):
    table, _ = main_table([record("rte", "swa", 0, 0.7)], resamples=10)
    paths = table.write(tmp_path / "tables" / "table1_main")
    assert [p.name for p in paths] == ["table1_main.csv", "table1_main.md", "table1_main.tex"]
    pd.testing.assert_frame_equal(pd.read_csv(paths[0]), table.frame, check_dtype=False)
    assert paths[1].read_text() == table.markdown and paths[2].read_text() == table.latex


def test_every_table_has_its_report_caption_and_builds_from_the_records():
    captions = {path.stem for path in (REPO / "workflow" / "report").glob("table*.rst")}
    assert set(TABLES) == captions
    inputs = TableInputs([record("rte", "swa", 0, 0.7), record("rte", "bomf", 0, 0.8)], ["swa", "bomf"],
                         resamples=10, benchmarks=read_benchmarks(REPO / "no-such-directory"), evaluations={},
                         searches=pd.DataFrame(columns=["task", "model", "seed", "search", "loss"]))
    for name, build in TABLES.items():
        assert isinstance(build(inputs), Table), name


# ------------------------------------------------------------------------------------------------- cost

# As Snakemake 9 writes them: with and without measured memory and CPU, and a repeat() with two rows.
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def benchmark(path, *rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(
        f"{s:.2f}\t0:00:{int(s):02d}\t{'NA' if rss is None else f'{rss:.2f}'}\tNA\tNA\tNA\tNA\tNA\tNA\t"
        f"{'NA' if cpu is None else f'{cpu:.2f}'}\n" for s, rss, cpu in rows))


@pytest.fixture
def benchmarks_root(tmp_path):
    root = tmp_path / "results" / "benchmarks"
    benchmark(root / "data" / "rte.tsv", (3, 100, 2))
    benchmark(root / "models" / "smollm2.tsv", (40, 900, 38))
    for seed, extra in ((0, 0), (1, 10)):
        run = root / "rte" / "minilm" / f"seed{seed}"
        benchmark(run / "hpo" / "round0" / "suggest.tsv", (5, 200, 4))
        benchmark(run / "hpo" / "round0" / "trial0.tsv", (10 + extra, 300, 9))
        benchmark(run / "hpo" / "round0" / "trial1.tsv", (20, 500, None))
        benchmark(run / "finetune.tsv", (50, 800, 90), (70, 900, 110))
        benchmark(run / "fusion" / "bomf.tsv", (30, 700, 50))
        benchmark(run / "fusion" / "swa.tsv", (2, None, None))
        benchmark(run / "test" / "bomf.tsv", (4, 400, 3))
    benchmark(root / "stray.tsv", (1, 1, 1))
    benchmark(root / "rte" / "minilm" / "notaseed" / "x.tsv", (1, 1, 1))
    return root


def test_read_benchmarks_parses_paths_and_missing_values(benchmarks_root):
    with pytest.warns(UserWarning, match="unknown path shape"):
        frame = read_benchmarks(benchmarks_root)
    assert len(frame) == 16  # 1 data + 1 model conversion + 2 runs x 7; the two unknown shapes skipped
    by_path = frame.set_index("path")
    data = by_path.loc["data/rte.tsv"]
    assert (data["task"], data["stage"]) == ("rte", "data") and pd.isna(data["model"]) and pd.isna(data["seed"])
    conversion = by_path.loc["models/smollm2.tsv"]
    assert (conversion["model"], conversion["stage"]) == ("smollm2", "model") and pd.isna(conversion["task"])
    finetune = by_path.loc["rte/minilm/seed1/finetune.tsv"]
    assert (finetune["stage"], finetune["seed"], finetune["wall_s"], finetune["max_rss_mb"]) == ("finetune", 1, 60, 850)
    trial = by_path.loc["rte/minilm/seed0/hpo/round0/trial1.tsv"]
    assert trial["stage"] == "hpo" and pd.isna(trial["method"]) and pd.isna(trial["cpu_s"])
    assert by_path.loc["rte/minilm/seed0/fusion/swa.tsv", "method"] == "swa"
    assert by_path.loc["rte/minilm/seed0/test/bomf.tsv", ["stage", "method"]].tolist() == ["test", "bomf"]


def test_cost_table_sums_stages_averages_seeds_and_counts_evaluations(benchmarks_root):
    with pytest.warns(UserWarning):
        frame = read_benchmarks(benchmarks_root)
    evaluations = {("rte", "minilm", 0, "bomf"): 75, ("rte", "minilm", 1, "bomf"): 75,
                   ("rte", "minilm", 0, "swa"): 0, ("rte", "minilm", 1, "swa"): 0}
    table = cost_table(frame, evaluations)
    hpo = table.frame[table.frame["stage"] == "hpo"].iloc[0]
    assert hpo["wall_s"] == pytest.approx(40.0)  # 35 and 45 per seed
    assert hpo["cpu_s"] == pytest.approx(13.0)  # the NA trial adds nothing
    assert hpo["max_rss_mb"] == pytest.approx(500.0) and hpo["runs"] == 2
    fusion = table.frame[table.frame["stage"] == "fusion"].set_index("method", drop=False)
    assert pd.isna(fusion.index[0])  # the stage total comes before its methods
    assert fusion.iloc[0]["wall_s"] == pytest.approx(32.0)
    assert fusion.loc["bomf", "evaluations"] == 75 and fusion.loc["swa", "evaluations"] == 0
    assert pd.isna(fusion.loc["swa", "cpu_s"])
    data = table.frame[table.frame["stage"] == "data"].iloc[0]
    assert pd.isna(data["model"]) and data["wall_s"] == 3
    assert list(table.frame["stage"]) == ["data", "hpo", "finetune", "fusion", "fusion", "fusion", "test", "model"]
    assert "### smollm2" in table.markdown
    assert "| All tasks | Model preparation (hub download or GGUF conversion) | 40.0 | 38.0 | 900 | – |" in table.markdown
    assert "| RTE | Fusion: BOMF | 30.0 | 50.0 | 700 | 75 |" in table.markdown
    assert "| RTE | Fusion: SWA | 2.0 | – | – | 0 |" in table.markdown
    assert "### Shared by every model and seed" in table.markdown


def test_cost_table_takes_evaluations_as_a_frame_and_without_benchmarks(tmp_path):
    evaluations = pd.DataFrame({"task": ["rte"], "model": ["minilm"], "seed": [0], "method": ["bomf"],
                                "evaluations": [75]})
    table = cost_table(read_benchmarks(tmp_path), evaluations)
    assert table.frame[["stage", "method", "evaluations"]].values.tolist() == [["fusion", "bomf", 75]]
    assert cost_table(read_benchmarks(tmp_path)).frame.empty


# ------------------------------------------------------------------------------------------------ selection

def test_selection_table_gaps_and_the_share_of_the_oracle_gap_closed():
    records = []
    for seed, (swa, bomf, oracle) in enumerate([(0.70, 0.73, 0.74), (0.72, 0.73, 0.76)]):
        records += [record("rte", "swa", seed, swa, validation_score=0.75),
                    record("rte", "bomf", seed, bomf, validation_score=0.80 + seed / 100),
                    record("rte", "oracle_subset", seed, oracle, validation_score=0.70),
                    record("mrpc", "swa", seed, 0.80, metric="f1", validation_score=0.81),
                    record("mrpc", "bomf", seed, 0.79, metric="f1", validation_score=0.84),
                    record("mrpc", "oracle_subset", seed, 0.80, metric="f1", validation_score=0.80)]
    table = selection_table(records, ["bomf", "swa", "oracle_subset"])
    gaps = table.frame[table.frame["quantity"] == "validation_minus_test"].set_index(["method", "task"])
    # BOMF on RTE: validation 80 and 81, test 73 and 73 -> gaps 7 and 8.
    assert gaps.loc[("bomf", "rte"), "mean"] == pytest.approx(7.5)
    assert gaps.loc[("bomf", "rte"), "std"] == pytest.approx(np.std([7, 8], ddof=1))
    assert gaps.loc[("swa", "mrpc"), "mean"] == pytest.approx(1.0)
    # Avg per seed over the two tasks: BOMF (7 + 5) / 2 and (8 + 5) / 2.
    assert gaps.loc[("bomf", "avg"), "mean"] == pytest.approx(6.25)
    closed = table.frame[table.frame["quantity"] == "gap_closed_percent"].set_index("task")["mean"]
    # RTE means: SWA 71, BOMF 73, oracle 75 -> half the gap; MRPC: the oracle is not above SWA.
    assert closed["rte"] == pytest.approx(50.0) and np.isnan(closed["mrpc"])
    # Avg: per-seed task means SWA (70+80)/2, (72+80)/2 -> 75.5; BOMF 76.0; oracle 77.5 -> 25%.
    assert closed["avg"] == pytest.approx(25.0)
    assert "| Gap closed (%) | 50.0 | – | 25.0 |" in table.markdown


def test_selection_table_without_an_oracle_has_no_gap_section():
    table = selection_table([record("rte", "swa", 0, 0.7), record("rte", "bomf", 0, 0.72)], ["bomf", "swa"])
    assert "SWA-to-oracle" not in table.markdown and set(table.frame["quantity"]) == {"validation_minus_test"}


# ------------------------------------------------------------------------------------ loss vs metric


def search_points(task, search, seed, loss, **metrics):
    return pd.DataFrame({"task": task, "model": "minilm", "seed": seed, "search": search, "loss": loss, **metrics})


def test_correlation_table_gives_spearman_per_search_in_each_metrics_direction():
    loss = np.array([0.3, 0.5, 0.4, 0.9, 0.7])
    searches = pd.concat([
        # MRPC, BOMF: F1 falls as the loss rises (ρ = −1 on both seeds); accuracy on seed 0 agrees with
        # the loss's order but one swap (ρ = −0.9), and on seed 1 rises with the loss (ρ = +1).
        search_points("mrpc", "bomf", 0, loss, f1=1 - loss, accuracy=[0.9, 0.7, 0.6, 0.2, 0.5]),
        search_points("mrpc", "bomf", 1, loss, f1=1 - loss, accuracy=loss),
        # stage 1 records the primary metric only: no accuracy cell for it
        search_points("mrpc", "hpo", 0, loss, f1=1 - loss),
        # STS-B with a lower-is-better metric: an MAE that grows with the loss agrees with it (shown −1)
        search_points("stsb", "bo_loss", 0, loss, mae=loss * 2, pearson=loss),
        # one metric, not a text metric: left out
        search_points("sst2", "bomf", 0, loss, accuracy=1 - loss),
    ], ignore_index=True)
    frame = correlation_table(searches).frame.set_index(["task", "metric", "search"])
    assert frame.loc[("mrpc", "f1", "bomf"), "rho"] == pytest.approx(-1.0)
    assert frame.loc[("mrpc", "f1", "bomf"), ["std", "seeds", "points"]].tolist() == [0.0, 2, 5]
    assert frame.loc[("mrpc", "f1", "hpo"), "rho"] == pytest.approx(-1.0)
    assert frame.loc[("mrpc", "accuracy", "bomf"), "rho"] == pytest.approx((-0.9 + 1.0) / 2)
    assert ("mrpc", "accuracy", "hpo") not in frame.index
    assert frame.loc[("stsb", "mae", "bo_loss"), "rho"] == pytest.approx(-1.0)
    assert frame.loc[("stsb", "pearson", "bo_loss"), "rho"] == pytest.approx(1.0)
    assert "sst2" not in set(frame.index.get_level_values("task"))
