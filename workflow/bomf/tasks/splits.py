"""A split tokenised once for its task kind, and the one evaluation loop every kind shares.

``SplitData`` owns evaluation (eval mode, batching, loss accumulation, metrics; in float32 on every device, so
scores do not depend on the precision training used: ``bomf.device``); each kind's subclass
(``sequence.SequenceData``, ``qa.QAData``, ``generation.GenerationData``) tokenises its examples into training
units (sequences, QA windows) and supplies the batches, what a batch's output keeps, and the decoding of
those into one prediction per example.
"""

from abc import ABC, abstractmethod

import torch
from torch import nn


class SplitData(ABC):
    """One split of a task, tokenised; ``len`` counts training units, which ``batch`` turns into model input."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def batch(self, indices, device: torch.device) -> dict[str, torch.Tensor]:
        """Model kwargs for these units, labels included: ``model(**batch).loss`` is their mean loss."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A digest of the split's tokens and labels, identifying the encoded split."""

    @property
    @abstractmethod
    def references(self) -> list:
        """Per example, what its prediction is scored against (a label, a score, answer or reference texts)."""

    @abstractmethod
    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, object]:
        """The batch's mean loss per unit, and what ``decode`` needs of the model's output."""

    @abstractmethod
    def decode(self, outputs: list, model: nn.Module, batch_size: int, device: torch.device) -> list:
        """One prediction per example from every batch's ``forward`` output (generation generates here)."""

    @abstractmethod
    def score(self, metrics: list[str], predictions) -> dict[str, float]:
        """The named metrics of the predictions."""

    @torch.no_grad()
    def evaluate(self, model: nn.Module, metrics: list[str], batch_size: int,
                 device: torch.device) -> tuple[dict[str, float], list]:
        """Mean loss over the split's units, the metrics over its examples, and each example's prediction."""
        was_training = model.training
        model.eval()
        try:
            total_loss, outputs = 0.0, []
            for start in range(0, len(self), batch_size):
                indices = list(range(start, min(start + batch_size, len(self))))
                loss, output = self.forward(model, self.batch(indices, device))
                total_loss += loss * len(indices)
                outputs.append(output)
            predictions = self.decode(outputs, model, batch_size, device)
        finally:
            model.train(was_training)
        return {"loss": total_loss / len(self), **self.score(metrics, predictions)}, predictions
