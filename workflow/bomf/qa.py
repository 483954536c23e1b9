"""SQuAD 2.0 extractive question answering for an encoder (``AutoModelForQuestionAnswering``).

An example is ``{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}, "group"}``
(empty answer lists for an unanswerable question; ``group`` is the article title). ``QAData`` plays the role
``training.Encoded`` plays for classification: a split tokenised once into overlapping windows (features),
each trained on the span of its example's first gold answer, or on the CLS token when the answer is absent.
Exact match and token F1 follow the official SQuAD 2.0 evaluation script.
"""

import collections
import hashlib
import json
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .metrics import EXAMPLE_METRICS, ExampleMetric
from .tasks import DataError
from .training import autocast

CLS_INDEX = 0  # where the tokenizers of BERT-, RoBERTa- and MPNet-like models put CLS / <s>
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PUNCTUATION = frozenset(string.punctuation)


# ---------------------------------------------------------------------------------------------- reading


def read_squad_json(path: Path) -> list[dict]:
    """One split in the official SQuAD 2.0 JSON layout: one example per question, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: SQuAD file not found")
    try:
        with path.open(encoding="utf-8") as handle:
            document = json.load(handle)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    examples = []
    for article in _field(document, "data", f"{path}", list):
        title = _field(article, "title", f"{path}: an article", str)
        where = f"{path}: article {title!r}"
        for paragraph in _field(article, "paragraphs", where, list):
            context = _field(paragraph, "context", f"{where}: a paragraph", str)
            for question in _field(paragraph, "qas", f"{where}: a paragraph", list):
                examples.append(_example(question, context, title, where))
    if not examples:
        raise DataError(f"{path}: no questions")
    return examples


def _example(question: dict, context: str, title: str, where: str) -> dict:
    question_id = _field(question, "id", f"{where}: a question", str)
    where = f"{where}: question {question_id!r}"
    text = _field(question, "question", where, str)
    # An unanswerable question lists no answers (its "plausible_answers" are not gold).
    answers = [] if question.get("is_impossible", False) else _field(question, "answers", where, list)
    texts, starts = [], []
    for answer in answers:
        answer_text = _field(answer, "text", f"{where}: an answer", str)
        start = _field(answer, "answer_start", f"{where}: an answer", int)
        if start < 0 or context[start:start + len(answer_text)] != answer_text:
            raise DataError(f"{where}: answer {answer_text!r} does not match the context at answer_start {start} "
                            f"(found {context[max(start, 0):max(start, 0) + len(answer_text)]!r})")
        texts.append(answer_text)
        starts.append(start)
    return {"id": question_id, "question": text, "context": context,
            "answers": {"text": texts, "answer_start": starts}, "group": title}


def _field(record, key: str, where: str, kind: type):
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(record).__name__}")
    if key not in record:
        raise DataError(f"{where}: missing key {key!r}")
    value = record[key]
    # bool is an int to Python, never a valid offset or id.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{where}: {key!r} should be a {kind.__name__}, found {type(value).__name__}")
    return value


def read_squad_hub(split: str) -> list[dict]:
    """One split of rajpurkar/squad_v2 from the Hugging Face hub, in ``read_squad_json``'s shape."""
    from datasets import load_dataset

    dataset = load_dataset("rajpurkar/squad_v2", split=split)
    return [{"id": row["id"], "question": row["question"], "context": row["context"],
             "answers": {"text": list(row["answers"]["text"]), "answer_start": list(row["answers"]["answer_start"])},
             "group": row["title"]}
            for row in dataset]


# ---------------------------------------------------------------------------------------------- metrics


def normalize_answer(text: str) -> str:
    """The official script's normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _gold_answers(references: Sequence[str]) -> list[str]:
    # As the official script: answers that normalise to nothing are dropped; no answer means "" is gold.
    return [answer for answer in references if normalize_answer(answer)] or [""]


def _exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    same = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def _best_over_gold(score):
    def statistics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        rows = [max(score(p, gold) for gold in _gold_answers(refs)) for p, refs in zip(predictions, references)]
        return np.array(rows, dtype=float).reshape(-1, 1)

    return statistics


EXAMPLE_METRICS["exact_match"] = ExampleMetric(_best_over_gold(_exact))
EXAMPLE_METRICS["token_f1"] = ExampleMetric(_best_over_gold(_token_f1))


# ---------------------------------------------------------------------------------------------- features


@dataclass(frozen=True)
class _Window:
    """What post-processing needs of one feature: its example, and the context characters of its tokens."""

    example: int
    offsets: np.ndarray  # (tokens, 2) character span in the context of each token
    in_context: np.ndarray  # (tokens,) whether a token belongs to the context (answers may start there)


class QAData:
    """A split tokenised once into overlapping windows of question + context (the training units)."""

    def __init__(self, examples: list[dict], tokenizer, max_length: int, stride: int = 64, n_best: int = 20,
                 max_answer_length: int = 30, null_score_threshold: float = 0.0):
        self.examples = examples
        self.tokenizer = tokenizer
        self.n_best = n_best
        self.max_answer_length = max_answer_length
        self.null_score_threshold = null_score_threshold
        # Some SQuAD questions start with runs of spaces that only waste the window.
        encoded = tokenizer([e["question"].lstrip() for e in examples], [e["context"] for e in examples],
                            truncation="only_second", max_length=max_length, stride=stride,
                            return_overflowing_tokens=True, return_offsets_mapping=True)
        self.inputs = {key: encoded[key] for key in MODEL_INPUTS if key in encoded}
        self.windows, starts, ends = [], [], []
        for feature, example in enumerate(encoded["overflow_to_sample_mapping"]):
            in_context = np.array([sequence == 1 for sequence in encoded.sequence_ids(feature)])
            offsets = np.array(encoded["offset_mapping"][feature], dtype=np.int64)
            self.windows.append(_Window(example, offsets, in_context))
            start, end = _answer_tokens(examples[example]["answers"], offsets, in_context)
            starts.append(start)
            ends.append(end)
        self.start_positions = torch.tensor(starts, dtype=torch.long)
        self.end_positions = torch.tensor(ends, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.windows)

    def batch(self, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        """Model kwargs for these features, padded to their longest; ``model(**batch).loss`` is their mean loss."""
        rows = [{key: values[i] for key, values in self.inputs.items()} for i in indices]
        padded = self.tokenizer.pad(rows, return_tensors="pt")
        padded["start_positions"] = self.start_positions[indices]
        padded["end_positions"] = self.end_positions[indices]
        return {key: value.to(device) for key, value in padded.items()}

    def fingerprint(self) -> str:
        """sha256 of every feature's tokens and answer positions: identifies the encoded split."""
        digest = hashlib.sha256()
        for ids, start, end in zip(self.inputs["input_ids"], self.start_positions.tolist(),
                                   self.end_positions.tolist()):
            # The length first, so feature boundaries are part of what is hashed.
            digest.update(np.array([len(ids), *ids, start, end], dtype=np.int64).tobytes())
        return digest.hexdigest()

    @property
    def references(self) -> list[list[str]]:
        return [list(e["answers"]["text"]) for e in self.examples]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, metrics: list[str], batch_size: int,
                 device: torch.device) -> tuple[dict[str, float], list[str]]:
        """Mean loss over features, the metrics over examples, and the predicted answer of each example."""
        was_training = model.training
        model.eval()
        total_loss, start_logits, end_logits = 0.0, [], []
        for first in range(0, len(self), batch_size):
            indices = list(range(first, min(first + batch_size, len(self))))
            with autocast(device):
                out = model(**self.batch(indices, device))
            total_loss += out.loss.float().item() * len(indices)
            start_logits.extend(out.start_logits.float().cpu().numpy())
            end_logits.extend(out.end_logits.float().cpu().numpy())
        model.train(was_training)
        predictions = self.predictions(start_logits, end_logits)
        scores = {"loss": total_loss / len(self)}
        scores.update({name: EXAMPLE_METRICS[name](predictions, self.references) for name in metrics})
        return scores, predictions

    def predictions(self, start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray]) -> list[str]:
        """Each example's answer from its features' logits (padded rows are fine: padding is never context)."""
        best = [(-np.inf, "") for _ in self.examples]  # (span score, span text)
        null = [np.inf for _ in self.examples]
        for window, starts, ends in zip(self.windows, start_logits, end_logits):
            starts, ends = starts[:len(window.offsets)], ends[:len(window.offsets)]
            # The example's null score is its most confident "no answer" over windows, as HF's run_qa.
            null[window.example] = min(null[window.example], starts[CLS_INDEX] + ends[CLS_INDEX])
            score, text = self._best_span(window, starts, ends)
            if score > best[window.example][0]:
                best[window.example] = (score, text)
        return [text if np.isfinite(score) and null_score - score <= self.null_score_threshold else ""
                for (score, text), null_score in zip(best, null)]

    def _best_span(self, window: _Window, starts: np.ndarray, ends: np.ndarray) -> tuple[float, str]:
        """The highest-scoring valid span among the n_best starts x n_best ends (-inf when none is valid)."""
        top_starts = np.argsort(starts)[::-1][:self.n_best]
        top_ends = np.argsort(ends)[::-1][:self.n_best]
        length = top_ends[None, :] - top_starts[:, None] + 1
        valid = (window.in_context[top_starts][:, None] & window.in_context[top_ends][None, :]
                 & (length >= 1) & (length <= self.max_answer_length))
        if not valid.any():
            return -np.inf, ""
        scores = np.where(valid, starts[top_starts][:, None] + ends[top_ends][None, :], -np.inf)
        row, column = np.unravel_index(np.argmax(scores), scores.shape)
        context = self.examples[window.example]["context"]
        span = context[window.offsets[top_starts[row], 0]:window.offsets[top_ends[column], 1]]
        return float(scores[row, column]), span


def _answer_tokens(answers: dict, offsets: np.ndarray, in_context: np.ndarray) -> tuple[int, int]:
    """Token span of the first gold answer if it lies wholly in this window's context, else (CLS, CLS)."""
    if not answers["text"]:
        return CLS_INDEX, CLS_INDEX
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    context_tokens = np.flatnonzero(in_context)
    window_start, window_end = offsets[context_tokens[0], 0], offsets[context_tokens[-1], 1]
    if start_char < window_start or end_char > window_end:
        return CLS_INDEX, CLS_INDEX
    # The first token ending after the answer starts, and the last token starting before it ends.
    start = context_tokens[np.argmax(offsets[context_tokens, 1] > start_char)]
    end = context_tokens[np.flatnonzero(offsets[context_tokens, 0] < end_char)[-1]]
    return int(start), int(end)
