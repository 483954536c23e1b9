"""A split tokenised once for its task kind, and the one evaluation loop every kind shares.

``SplitData`` owns evaluation (eval mode, batching, loss accumulation, metrics; in float32 on every device, so
scores do not depend on the precision training used: ``bomf.device``); each kind's subclass
(``sequence.SequenceData``, ``qa.QAData``, ``generation.GenerationData``) tokenises its examples into training
units (sequences, QA windows) and supplies the batches, what a batch's output keeps, and the decoding of
those into one prediction per example.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np
import torch
from torch import nn


class SplitData(ABC):
    """One split of a task, tokenised; ``len`` counts training units, which ``batch`` turns into model input."""

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def lengths(self) -> list[int]:
        """Each unit's length in tokens: evaluation batches units of similar length together."""

    @abstractmethod
    def collate(self, indices) -> dict[str, torch.Tensor]:
        """Model kwargs for these units (CPU tensors), labels included: ``model(**batch).loss`` is their mean
        loss."""

    def batch(self, indices, device: torch.device) -> dict[str, torch.Tensor]:
        """``collate``'s batch on ``device``."""
        return {key: value.to(device) for key, value in self.collate(indices).items()}

    def batches(self, index_lists: Iterable, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        """The batch of each index list in turn. On CUDA a worker thread collates the next two into pinned
        memory while the device computes (what a GPU job's extra CPUs are for), and each is copied without
        blocking; on the CPU they are collated in line, leaving the cores to the model."""
        index_lists = iter(index_lists)
        if device.type != "cuda":
            yield from (self.batch(indices, device) for indices in index_lists)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="collate") as worker:
            pending = [worker.submit(self._pinned, indices) for indices in islice(index_lists, 2)]
            while pending:
                host = pending.pop(0).result()
                pending += [worker.submit(self._pinned, indices) for indices in islice(index_lists, 1)]
                yield {key: value.to(device, non_blocking=True) for key, value in host.items()}

    def _pinned(self, indices) -> dict[str, torch.Tensor]:
        return {key: value.pin_memory() for key, value in self.collate(indices).items()}

    @abstractmethod
    def fingerprint(self) -> str:
        """A digest of the split's tokens and labels, identifying the encoded split."""

    @property
    @abstractmethod
    def references(self) -> list:
        """Per example, what its prediction is scored against (a label, a score, answer or reference texts)."""

    @abstractmethod
    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, object]:
        """The batch's mean loss per unit (a float32 scalar on the device, read once per evaluation), and what
        ``decode`` needs of the model's output (left on the device: ``decode`` copies it once)."""

    @abstractmethod
    def decode(self, outputs: list, order: list[int], model: nn.Module, batch_size: int,
               device: torch.device) -> list:
        """One prediction per example from every batch's ``forward`` output, whose rows are the units ``order``
        lists, in that order (generation generates here)."""

    @abstractmethod
    def score(self, metrics: list[str], predictions) -> dict[str, float]:
        """The named metrics of the predictions."""

    # no_grad, not inference_mode: a model that caches tensors on its first long input (rotary tables) would
    # keep inference tensors that a later training step cannot save for backward.
    @torch.no_grad()
    def evaluate(self, model: nn.Module, metrics: list[str], batch_size: int,
                 device: torch.device) -> tuple[dict[str, float], list]:
        """Mean loss over the split's units, the metrics over its examples, and each example's prediction.

        Units are batched in order of length (shortest first, ties in file order), so a batch is padded to
        little more than its own units' length; predictions come back in the split's order. The loss is summed
        on the device (in float64) and read once: one synchronisation."""
        was_training = model.training
        model.eval()
        try:
            total_loss, outputs = 0.0, []
            order = sorted(range(len(self)), key=self.lengths.__getitem__)
            index_lists = [order[start:start + batch_size] for start in range(0, len(self), batch_size)]
            for indices, batch in zip(index_lists, self.batches(index_lists, device)):
                loss, output = self.forward(model, batch)
                total_loss = total_loss + loss.double() * len(indices)
                outputs.append(output)
            predictions = self.decode(outputs, order, model, batch_size, device)
        finally:
            model.train(was_training)
        return {"loss": float(total_loss) / len(self), **self.score(metrics, predictions)}, predictions


def pad_rows(rows: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    """Rows of ids as one int64 [rows, longest] tensor, padded with ``value`` at their end (``left``: their
    start): what a tokenizer's ``pad`` returns, without its per-batch Python cost."""
    width = max(map(len, rows))
    padded = np.full((len(rows), width), value, dtype=np.int64)
    for row, ids in enumerate(rows):
        if left:
            padded[row, width - len(ids):] = ids
        else:
            padded[row, :len(ids)] = ids
    return torch.from_numpy(padded)


def pad_features(features: dict[str, list[list[int]]], indices, tokenizer) -> dict[str, torch.Tensor]:
    """These units of a tokenizer's output as padded tensors, as ``tokenizer.pad`` returns them (its pad values,
    its padding side)."""
    values = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0, "token_type_ids": tokenizer.pad_token_type_id}
    left = tokenizer.padding_side == "left"
    return {key: pad_rows([rows[i] for i in indices], values[key], left) for key, rows in features.items()}


def in_unit_order(rows: list, order: list[int]) -> list:
    """``rows``, whose k-th is unit ``order[k]``'s, rearranged so that the i-th is unit i's."""
    restored = [None] * len(rows)
    for row, unit in zip(rows, order, strict=True):
        restored[unit] = row
    return restored
