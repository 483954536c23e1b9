"""The typed JSON records jobs hand to each other."""

import json

from bomf.records import SELECTED_MODEL_FILE, SelectedModel


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
