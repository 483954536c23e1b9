"""The typed JSON records jobs hand to each other."""

import json
import math

from bomf.records import (EVALUATION_FILE, GRID_POINT_FILE, HPO_CHOICE_FILE, HPO_TRIAL_FILE, MEMBER_MANIFEST_FILE,
                          SELECTED_MODEL_FILE, BestCheckpointRun, EvaluatedModel, HpoChoice, HpoTrial, MemberManifest,
                          SelectedModel, Suggestion)


def test_selected_model_round_trips_and_writes_only_what_applies(tmp_path):
    fused = SelectedModel("bomf", {"loss": 0.5, "accuracy": 0.75}, 15, weights=[0.25, 0.75])
    fused.write(tmp_path / "bomf", {"device": "cpu"})
    written = json.loads((tmp_path / "bomf" / SELECTED_MODEL_FILE).read_text())
    assert written == {"method": "bomf", "validation": {"loss": 0.5, "accuracy": 0.75}, "evaluations": 15,
                       "weights": [0.25, 0.75], "oracle": False, "selected_on": "validation",
                       "environment": {"device": "cpu"}}
    assert SelectedModel.read(tmp_path / "bomf") == fused

    grid = SelectedModel("grid_finetune", {"loss": 0.4}, 0, params={"learning_rate": 1e-4}, step=120)
    grid.write(tmp_path / "grid", {})
    assert "weights" not in json.loads((tmp_path / "grid" / SELECTED_MODEL_FILE).read_text())
    assert SelectedModel.read(tmp_path / "grid") == grid


def test_member_manifest_round_trips_and_writes_the_import_fields_only_for_imported_members(tmp_path):
    trained = MemberManifest({"member00.safetensors": "a" * 64}, [8], {"learning_rate": 1e-4}, 0, "base",
                             {"ema": {"file": "ema.safetensors", "sha256": "b" * 64}})
    trained.write(tmp_path / "trained")
    written = json.loads((tmp_path / "trained" / MEMBER_MANIFEST_FILE).read_text())
    assert list(written) == ["members", "steps", "hyperparameters", "seed", "source", "stored"]
    assert MemberManifest.read(tmp_path / "trained") == trained

    imported = MemberManifest({"member00.safetensors": "a" * 64}, [500], {}, 0, "base", {}, imported=["ckpt-500"],
                              base={"file": "base.safetensors", "sha256": "c" * 64})
    imported.write(tmp_path / "imported")
    assert json.loads((tmp_path / "imported" / MEMBER_MANIFEST_FILE).read_text())["imported"] == ["ckpt-500"]
    assert MemberManifest.read(tmp_path / "imported") == imported


def test_stage_1_records_round_trip(tmp_path):
    suggestion = Suggestion(1, based_on=4, points=[{"learning_rate": 1e-4, "batch_size": 16}])
    suggestion.write(tmp_path / "round1" / "suggest.json")
    assert Suggestion.read(tmp_path / "round1" / "suggest.json") == suggestion

    path = tmp_path / HPO_TRIAL_FILE.format(round=0, trial=1)
    trial = HpoTrial({"learning_rate": 1e-4, "batch_size": 16}, 0.75, 0.52, "accuracy", proxy=True,
                     trainable_fraction=0.4, epochs=2, seconds=3.5, trajectory=[{"step": 4, "val_accuracy": 0.75}])
    trial.write(path, {"device": "cpu"})
    assert json.loads(path.read_text())["environment"] == {"device": "cpu"}  # provenance, not read back
    assert HpoTrial.read(path) == trial

    choice = HpoChoice({"learning_rate": 1e-4, "batch_size": 16}, 0.8, math.nan, "accuracy", 8, "")
    choice.write(tmp_path / HPO_CHOICE_FILE)
    read = HpoChoice.read(tmp_path / HPO_CHOICE_FILE)
    assert (read.params, read.score, read.metric, read.trials, read.warning) == (choice.params, 0.8, "accuracy", 8, "")
    assert math.isnan(read.loss)


def test_evaluated_model_round_trips_with_example_statistics_only_for_text_tasks(tmp_path):
    path = tmp_path / EVALUATION_FILE.format(method="bomf")
    scored = EvaluatedModel("rte", "minilm", 0, "bomf", "accuracy", {"loss": 0.6, "accuracy": 0.75},
                            {"loss": 0.5, "accuracy": 0.8}, 4, [1, 0, 1, 1], [1, 0, 0, 1])
    scored.write(path)
    assert "example_statistics" not in json.loads(path.read_text())
    assert EvaluatedModel.read(path) == scored
    text = EvaluatedModel("e2e", "tiny", 0, "swa", "bleu", {"bleu": 0.3}, {"bleu": 0.2}, 1, ["a pub"], [["a pub"]],
                          example_statistics={"bleu": [[2, 1, 1, 0, 0, 0, 0, 0, 2, 2]]})
    text.write(path)
    assert EvaluatedModel.read(path) == text


def test_grid_point_round_trips(tmp_path):
    path = tmp_path / GRID_POINT_FILE.format(frozen=2, point=3)
    point = BestCheckpointRun({"learning_rate": 1e-4, "batch_size": 16}, 2, 3, "f1", best_step=12,
                              best={"loss": 0.4, "f1": 0.8}, swa={"loss": 0.5, "f1": 0.7}, seconds=9.0,
                              trajectory=[{"step": 12, "val_f1": 0.8}])
    point.write(path, {"device": "cpu"})
    assert BestCheckpointRun.read(path) == point
