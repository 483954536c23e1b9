"""A run that learned nothing says so: in the job's output, summary.csv and the main table's caption."""

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
