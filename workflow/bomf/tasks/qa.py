"""SQuAD 2.0 extractive question answering for an encoder (``AutoModelForQuestionAnswering``), fine-tuned in
full; the stage-1 proxy freezes its lowest layers.

An example is ``{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}, "group"}``
(empty answer lists for an unanswerable question; ``group`` is the article title). ``QAData`` is a split
tokenised once into overlapping windows (features), each trained on the span of its example's first gold
answer, or on the CLS token when the answer is absent; it is scored by exact match and token F1
(``text_metrics``).
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import METRICS
from ..sources import resolve_model_source
from .models import freeze_lower_layers
from .registry import TaskSpec
from .splits import SplitData, in_unit_order, pad_features

CLS_INDEX = 0  # where the tokenizers of BERT-, RoBERTa- and MPNet-like models put CLS / <s>
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class _Window:
    """What post-processing needs of one feature: its example, and the context characters of its tokens."""

    example: int
    offsets: np.ndarray  # (tokens, 2) character span in the context of each token
    in_context: np.ndarray  # (tokens,) whether a token belongs to the context (answers may start there)


class QAData(SplitData):
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

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.inputs["input_ids"]]

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Model kwargs for these features, padded to their longest; ``model(**batch).loss`` is their mean loss."""
        return {**pad_features(self.inputs, indices, self.tokenizer), "start_positions": self.start_positions[indices],
                "end_positions": self.end_positions[indices]}

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

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple]:
        """The mean over features of (start + end cross-entropy) / 2, as the model's own loss, but over each
        feature's own tokens: the model's softmax also spans the batch's padding, which would make a feature's
        loss depend on the longest feature batched with it."""
        inputs = {key: value for key, value in batch.items() if key not in ("start_positions", "end_positions")}
        out = model(**inputs)
        padding = batch["attention_mask"] == 0
        starts = out.start_logits.float().masked_fill(padding, -torch.inf)
        ends = out.end_logits.float().masked_fill(padding, -torch.inf)
        loss = (F.cross_entropy(starts, batch["start_positions"]) + F.cross_entropy(ends, batch["end_positions"])) / 2
        return loss, (out.start_logits.float(), out.end_logits.float())

    def decode(self, outputs: list[tuple], order: list[int], model: nn.Module, batch_size: int,
               device: torch.device) -> list[str]:
        """The predicted answer of each example ("" for no answer)."""
        outputs = [(starts.cpu().numpy(), ends.cpu().numpy()) for starts, ends in outputs]
        return self.predictions(in_unit_order([row for starts, _ in outputs for row in starts], order),
                                in_unit_order([row for _, ends in outputs for row in ends], order))

    def score(self, metrics: list[str], predictions: list[str]) -> dict[str, float]:
        return {name: METRICS[name](predictions, self.references) for name in metrics}

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


def encode(task: TaskSpec, examples: list[dict], tokenizer, max_length: int, settings: dict, split: str) -> QAData:
    """``settings``: the config's qa section (window stride, answer search and the no-answer threshold)."""
    return QAData(examples, tokenizer, max_length, settings["stride"], settings["n_best"],
                  settings["max_answer_length"], settings["null_score_threshold"])


def load_model(model_spec: dict, task: TaskSpec, proxy: bool) -> nn.Module:
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(resolve_model_source(model_spec["source"]),
                                                          dtype=torch.float32)
    if proxy:
        freeze_lower_layers(model, model_spec["proxy_frozen_layers"],
                            embeddings=model_spec["proxy_frozen_embeddings"])
    return model


def load_saved(model_dir: str | Path, task: TaskSpec) -> nn.Module:
    from transformers import AutoModelForQuestionAnswering

    return AutoModelForQuestionAnswering.from_pretrained(model_dir, dtype=torch.float32)
