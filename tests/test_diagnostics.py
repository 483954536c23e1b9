"""A run that learned nothing says so: in the job's output, summary.csv and the main table's caption; the
trivial answer's reference row; and the per-run fusion diagnostics (summary.csv, Table 9)."""

import json

import numpy as np
import pytest
from conftest import REPO

from bomf.records import EvaluatedModel, HpoTrial
from bomf.report.diagnostics import (HINT, constant_predictions, identical_members_message, run_message, run_warnings,
                                     tied_trials_message)
from bomf.report.tables import main_table, run_summary


def record(method, predictions, labels, score, task="mrpc", seed=0):
    return EvaluatedModel(task, "minilm", seed, method, "accuracy", test={"accuracy": score, "loss": 0.6},
                          validation={"accuracy": score, "loss": 0.6}, test_size=len(labels), predictions=predictions,
                          labels=labels)


LABELS = [1, 0, 1, 1, 0, 1]


def test_constant_predictions_of_each_kind():
    assert constant_predictions([1] * 6, LABELS)
    assert not constant_predictions([1, 1, 0, 1, 1, 1], LABELS)
    # Regression: a spread under 1% of the labels' is the mean, learned; 10% is a (poor) model.
    labels = [0.0, 1.5, 3.0, 4.5, 5.0, 2.0]
    assert constant_predictions([2.6, 2.61, 2.605, 2.6, 2.6, 2.602], labels)
    assert not constant_predictions([2.0, 2.4, 2.9, 3.1, 2.2, 2.6], labels)
    # Extractive QA answering nothing; generation repeating one text.
    assert constant_predictions(["", "", ""], [["a"], [], ["b"]])
    assert not constant_predictions(["", "Paris", ""], [["a"], [], ["b"]])
    assert not constant_predictions([1], [1])  # one example says nothing


def test_run_warnings_name_each_method_and_the_run():
    learned = [record("bomf", [1, 0, 1, 1, 0, 0], LABELS, 0.83), record("swa", [1] * 6, LABELS, 0.67)]
    assert run_warnings(learned) == {"bomf": "", "swa": "constant predictions (1 for every example)"}
    assert run_message(learned) == ""  # one method learned: the run did

    majority = [record("bomf", [1] * 6, LABELS, 0.67), record("swa", [1] * 6, LABELS, 0.67)]
    message = run_message(majority)
    assert message.startswith("mrpc/minilm/seed0 learned nothing (constant predictions (1 for every example); "
                              "every method scores the same): ")
    assert message.endswith(HINT)

    summary = run_summary(majority)
    assert list(summary["warning"]) == ["constant predictions (1 for every example); every method scores the same"] * 2
    assert (run_summary(learned)["warning"] == ["", "constant predictions (1 for every example)"]).all()

    rte = [record("bomf", LABELS, LABELS, 1.0, task="rte"), record("swa", [1, 0, 1, 1, 0, 0], LABELS, 0.83, task="rte")]
    table, _ = main_table(majority + rte, ["bomf", "swa"], resamples=100)
    assert "WARNING: mrpc/minilm/seed0 learned nothing" in table.markdown and "rte/minilm" not in table.markdown
    assert "WARNING" not in main_table(learned, ["bomf", "swa"], resamples=100)[0].markdown


def test_tied_trials_and_identical_members():
    def trial(score, metric):
        return HpoTrial({}, score, float("nan"), metric, proxy=True, trainable_fraction=1.0, epochs=1, seconds=0.0,
                        trajectory=[])

    trials = [trial(0.6825, "accuracy")] * 4 + [trial(float("nan"), "accuracy")]
    assert tied_trials_message(trials).startswith("all 4 stage-1 trials scored accuracy 0.6825 (tied")
    assert tied_trials_message([trial(0.6, "f1"), trial(0.7, "f1")]) == ""
    assert identical_members_message([0.81, 0.81, 0.81], "f1").startswith("all 3 members score validation f1 0.8100")
    assert identical_members_message([0.81, 0.82, 0.81], "f1") == ""
    assert identical_members_message([0.81, float("nan")], "f1") == ""  # one finite score: nothing to compare


# ------------------------------------------------------------------------------ the trivial reference

MAJORITY = {"name": "the training majority class", "answer": 1}


def test_each_kind_names_its_trivial_answer_from_train():
    from bomf.tasks.data import _trivial
    from bomf.tasks.registry import get_task

    train = [{"label": label} for label in (0, 1, 1, 0, 1)]
    assert _trivial(get_task("mrpc", {}), train) == MAJORITY
    assert _trivial(get_task("mrpc", {}), [{"label": 1}, {"label": 0}]) == {**MAJORITY, "answer": 0}  # tie: lowest
    assert _trivial(get_task("stsb", {}), [{"label": 1.0}, {"label": 4.0}]) == {"name": "the training mean",
                                                                              "answer": 2.5}
    assert _trivial(get_task("squad_v2", {}), []) == {"name": "no answer", "answer": ""}
    assert _trivial(get_task("samsum", {}), [{"summary": "x"}]) is None


def test_the_trivial_answer_is_scored_on_the_runs_test_split():
    from bomf.report.diagnostics import trivial_record

    run = [EvaluatedModel("mrpc", "minilm", 0, "bomf", "f1", {"f1": 0.9, "accuracy": 0.8, "loss": 0.5}, {}, 6,
                          [1, 0, 1, 1, 0, 0], LABELS)]
    reference = trivial_record(run, MAJORITY)
    # 4 of 6 labels are 1: accuracy 4/6; F1 = 2·4 / (2·4 + 2 false positives) = 0.8; no loss.
    assert reference.method == "trivial" and reference.predictions == [1] * 6
    assert reference.test == {"f1": pytest.approx(0.8), "accuracy": pytest.approx(4 / 6)}
    labels = [0.0, 1.0, 2.0, 5.0]
    regression = [EvaluatedModel("stsb", "minilm", 0, "bomf", "pearson", {"pearson": 0.5, "mae": 1.0}, {}, 4,
                                 [0.1, 1.2, 2.0, 4.0], labels)]
    # The mean has no correlation (0 by the metrics' convention); MAE |2 − y| = (2 + 1 + 0 + 3) / 4.
    assert trivial_record(regression, {"name": "the training mean", "answer": 2.0}).test == {
        "pearson": 0.0, "mae": pytest.approx(1.5)}


def test_a_best_method_within_a_standard_error_of_the_trivial_answer_is_told():
    labels = [1] * 68 + [0] * 32
    near = [1] * 68 + [1] * 2 + [0] * 30  # accuracy 0.98: far above 0.68
    at = [1] * 60 + [0] * 8 + [0] * 2 + [1] * 30  # accuracy 0.62, nowhere above 0.68
    learned = [record("bomf", near, labels, 0.98), record("swa", at, labels, 0.62)]
    warnings = run_warnings(learned, MAJORITY)
    # SE of accuracy 0.62 on 100 examples: sqrt(0.62 · 0.38 / 100) = 0.0485.
    assert warnings == {"bomf": "", "swa": "test accuracy 0.6200 within one standard error (0.0485) of the "
                                           "training majority class (0.6800)"}
    assert run_message(learned, MAJORITY) == ""
    assert run_message([record("bomf", at, labels, 0.62), record("oracle_subset", near, labels, 0.98)],
                       MAJORITY).startswith("mrpc/minilm/seed0 learned nothing (its best method, bomf, test "
                                            "accuracy 0.6200 within one standard error")
    # A constant prediction that is the trivial answer is named as such.
    assert run_warnings([record("swa", [1] * 6, LABELS, 4 / 6)], MAJORITY)["swa"].startswith(
        "constant predictions (1 for every example: the training majority class)")


def test_tied_trials_name_the_kinds_trivial_answer():
    def trial(metric):
        return HpoTrial({}, 0.5, float("nan"), metric, proxy=True, trainable_fraction=1.0, epochs=1, seconds=0.0,
                        trajectory=[])

    assert "(tied, typically the training majority class)" in tied_trials_message([trial("accuracy")] * 2)
    assert "(tied, typically no answer)" in tied_trials_message([trial("token_f1")] * 2)
    assert "(tied):" in tied_trials_message([trial("rouge1")] * 2)  # generation has no trivial answer


def test_the_trivial_row_sits_below_the_methods_unmarked():
    from bomf.report.tables import ablation_table, all_metrics_table

    labels = [1] * 6 + [0] * 4
    records = [record("bomf", [1] * 6 + [0] * 4, labels, 1.0), record("bo_loss", [1] * 10, labels, 0.6),
               record("bo_metric", [1] * 5 + [0] * 5, labels, 0.9)]
    table = ablation_table(records, {"mrpc": {"trivial": MAJORITY}})
    trivial = table.frame[table.frame["method"] == "trivial"]
    assert list(trivial["mean"]) == [pytest.approx(60.0)] * 2 and set(trivial["mark"]) == {""}  # task and avg
    assert table.frame[table.frame["method"] != "trivial"]["mark"].tolist().count("best") == 2
    lines = table.markdown.splitlines()
    assert "Trivial answer" in [line for line in lines if line.startswith("|")][-1]
    assert "Trivial answer (majority class, mean or no answer): the test score" in table.markdown
    assert "trivial" not in set(ablation_table(records).frame["method"])  # no split.json record: no row
    everything = all_metrics_table(records, ["bomf", "bo_loss"], {"mrpc": {"trivial": MAJORITY}})
    assert set(everything.frame.loc[everything.frame["method"] == "trivial", "metric"]) == {"accuracy"}  # no loss


# --------------------------------------------------------------------------------- fusion diagnostics

def test_weight_and_member_diagnostics_by_hand():
    from bomf.report.diagnostics import fusion_diagnostics, standard_error, weight_diagnostics

    assert weight_diagnostics([0.0, 1.0, 0.0]) == {"effective_members": 1.0, "largest_weight": 1.0, "vertex": True}
    assert weight_diagnostics([0.25] * 4)["effective_members"] == pytest.approx(4.0)
    # (0.5 + 0.3 + 0.2)² / (0.25 + 0.09 + 0.04) = 1 / 0.38
    assert weight_diagnostics([0.5, 0.3, 0.2]) == {"effective_members": pytest.approx(1 / 0.38),
                                                   "largest_weight": 0.5, "vertex": False}
    bomf = EvaluatedModel("mrpc", "minilm", 0, "bomf", "accuracy", {"accuracy": 0.7}, {"accuracy": 0.8}, 6,
                          [1] * 6, LABELS)
    found = fusion_diagnostics(bomf, [0.5, 0.5, 0.0], [0.75, 0.78, 0.79], 400)
    assert found == {"effective_members": pytest.approx(2.0), "largest_weight": 0.5, "vertex": False,
                     "member_range": pytest.approx(0.04), "member_std": pytest.approx(0.0208167, abs=1e-6),
                     "gain_over_best_member": pytest.approx(0.01), "validation_se": pytest.approx(0.02)}
    none = fusion_diagnostics(bomf, None, [], None)
    assert none["vertex"] is None and all(np.isnan(none[k]) for k in none if k != "vertex")
    # Not a proportion: the test bootstrap's std, rescaled from the test size to the validation size.
    f1 = EvaluatedModel("mrpc", "minilm", 0, "bomf", "f1", {"f1": 0.8}, {"f1": 0.8}, 100,
                        [1] * 60 + [0] * 10 + [1] * 10 + [0] * 20, [1] * 70 + [0] * 30)
    assert standard_error(f1, 0.8, 25) == pytest.approx(2 * standard_error(f1, 0.8, 100))
    assert 0.02 < standard_error(f1, 0.8, 100) < 0.06


def test_diagnostics_table_and_summary_from_the_committed_cpu_runs():
    """Table 9 is built from what results/cpu/minilm already holds: the weights, the searches' histories, the
    test records and split.json."""
    import pandas as pd

    from bomf.records import SelectedModel
    from bomf.report.diagnostics import weight_diagnostics
    from bomf.report.tables import fusion_diagnostics_table, member_scores, run_summary

    root = REPO / "results/cpu/minilm"
    run = root / "mrpc/minilm/seed0"
    records = [EvaluatedModel.read(run / f"test/{m}.json") for m in ("bomf", "swa", "best_member")]
    weights = {("mrpc", "minilm", 0, m): SelectedModel.read(run / f"fusion/{m}").weights
               for m in ("bomf", "swa", "best_member")}
    history = pd.read_csv(run / "fusion/bomf/history.csv").assign(task="mrpc", model="minilm", seed=0,
                                                                 search="bomf")
    split = json.loads((root / "data/mrpc/split.json").read_text())
    members = history.loc[history["source"] == "member", "f1"].tolist()
    assert member_scores(history, "mrpc", "minilm", 0, "f1") == members and len(members) == 10
    table = fusion_diagnostics_table(records, weights, history, {"mrpc": split}, resamples=200)
    (row,) = table.frame.to_dict("records")
    expected = weight_diagnostics(weights["mrpc", "minilm", 0, "bomf"])
    assert row["effective_members"] == pytest.approx(expected["effective_members"]) and not row["vertex"]
    assert row["member_range"] == pytest.approx(max(members) - min(members))
    assert row["gain_over_best_member"] == pytest.approx(records[0].validation["f1"] - max(members))
    assert row["validation_size"] == 400 and 0.01 < row["validation_se"] < 0.05
    assert "| MRPC (F1) | 0 |" in table.markdown
    summary = run_summary(records, {m: w for (_, _, _, m), w in weights.items()}, members, split).set_index("method")
    assert summary.loc["best_member", "vertex"] and summary.loc["swa", "effective_members"] == pytest.approx(10.0)
    assert summary.loc["bomf", "member_range"] == pytest.approx(row["member_range"])
