"""Sequence classification and regression (the GLUE tasks, a user's CSV/JSONL tasks) for an encoder with a
fresh head (``AutoModelForSequenceClassification``), fine-tuned in full; the stage-1 proxy freezes its lowest
layers. An example is ``{"text": [one or two strings], "label": int | float}``.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..metrics import compute_metrics
from ..sources import resolve_model_source
from .models import freeze_lower_layers
from .registry import TaskSpec
from .splits import SplitData, pad_features


class SequenceData(SplitData):
    """A classification or regression split; batches are padded dynamically to their own longest example."""

    def __init__(self, examples: list[dict], tokenizer, max_length: int, task: TaskSpec):
        texts = [e["text"] for e in examples]
        pairs = [t[1] if len(t) > 1 else None for t in texts]
        first = [t[0] for t in texts]
        if any(p is not None for p in pairs):
            self.features = tokenizer(first, pairs, truncation=True, max_length=max_length)
        else:
            self.features = tokenizer(first, truncation=True, max_length=max_length)
        self.tokenizer = tokenizer
        self.is_regression = task.is_regression
        dtype = torch.float32 if task.is_regression else torch.long
        self.labels = torch.tensor([e["label"] for e in examples], dtype=dtype)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.features["input_ids"]]

    def collate(self, indices) -> dict[str, torch.Tensor]:
        return {**pad_features(self.features, indices, self.tokenizer), "labels": self.labels[indices]}

    @property
    def references(self) -> list:
        return self.labels.tolist()

    def fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps(self.features["input_ids"]).encode())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(**batch)
        return out.loss.float(), out.logits.float()

    def decode(self, outputs: list[torch.Tensor], order: list[int], model: nn.Module, batch_size: int,
               device: torch.device) -> np.ndarray:
        """Class ids, or scores for regression."""
        batched = torch.cat(outputs).cpu()
        logits = torch.empty_like(batched)
        logits[order] = batched
        return logits.squeeze(-1).numpy() if self.is_regression else logits.argmax(-1).numpy()

    def score(self, metrics: list[str], predictions: np.ndarray) -> dict[str, float]:
        return compute_metrics(metrics, predictions, self.labels.numpy())


def encode(task: TaskSpec, examples: list[dict], tokenizer, max_length: int, settings: None,
           split: str) -> SequenceData:
    return SequenceData(examples, tokenizer, max_length, task)


def load_model(model_spec: dict, task: TaskSpec, proxy: bool) -> nn.Module:
    model = load_classifier(model_spec["source"], task)
    if proxy:
        freeze_lower_layers(model, model_spec["proxy_frozen_layers"],
                            embeddings=model_spec["proxy_frozen_embeddings"])
    return model


def load_saved(model_dir: str | Path, task: TaskSpec) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)


def load_classifier(source: str, task: TaskSpec) -> nn.Module:
    """A sequence classifier (or regressor, one output and MSE loss) with a freshly initialised head.

    The head's initialisation draws from torch's global RNG: seed it before calling.
    """
    from transformers import AutoModelForSequenceClassification

    problem_type = "regression" if task.is_regression else "single_label_classification"
    return AutoModelForSequenceClassification.from_pretrained(
        resolve_model_source(source), num_labels=task.num_labels, problem_type=problem_type, dtype=torch.float32
    )
