"""Task-vector merges of the members, the field's merge baselines: θ = θ₀ + λ·τ, τ built from the members'
task vectors τᵢ = θᵢ − θ₀ (θ₀: the model stage 2 started from, head initialisation included).

- task arithmetic (Ilharco et al. 2023): τ the mean of the τᵢ, so λ = 1 is the uniform soup (SWA) and
  λ > 1 extrapolates; their coefficient on the sum Σ τᵢ is λ/N.
- TIES (Yadav et al. 2023): each τᵢ trimmed to its ``density`` share of largest magnitudes, a sign elected
  per parameter (sign of the trimmed sum), and the mean over the members that agree with it.
- DARE (Yu et al. 2024): each entry of each τᵢ dropped with probability ``drop_rate`` and the rest scaled by
  1/(1 − drop_rate), then averaged as task arithmetic does. The masks come from a CPU generator seeded by
  the run's seed and the member's index, so the same merge is rebuilt bit for bit on any device.

Each works one member at a time into the stack's preallocated buffer: memory beyond the members is a few
parameter vectors, whatever N.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

MERGES: dict[str, Callable[..., torch.Tensor]] = {}


def register(name: str):
    def decorate(merge):
        MERGES[name] = merge
        return merge

    return decorate


@dataclass(frozen=True)
class Merge:
    """One task-vector merge with its hyperparameters: a point a merge baseline scores, rebuilt from the
    members by whoever reads its record (test evaluation, export)."""

    method: str  # a key of MERGES
    hyperparameters: dict  # the merge's keyword arguments, scale (λ) included

    def record(self) -> dict:
        return {"method": self.method, **self.hyperparameters}

    @classmethod
    def from_record(cls, record: dict) -> "Merge":
        record = dict(record)
        return cls(record.pop("method"), record)

    def vector(self, matrix: torch.Tensor, base: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """θ₀ + λ·τ into ``out``, from the members (rows of ``matrix``) and θ₀ (``base``)."""
        hyperparameters = dict(self.hyperparameters)
        scale = hyperparameters.pop("scale")
        merged = MERGES[self.method](matrix, base, **hyperparameters)
        return torch.add(base, merged, alpha=scale, out=out)


@register("task_arithmetic")
def mean_task_vector(matrix: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    return matrix.mean(0) - base


@register("ties")
def ties(matrix: torch.Tensor, base: torch.Tensor, density: float) -> torch.Tensor:
    def task_vector(row: int, threshold=None) -> torch.Tensor:
        vector = matrix[row] - base
        if threshold is None:
            keep = max(1, round(density * vector.numel()))
            threshold = torch.kthvalue(vector.abs(), vector.numel() - keep + 1).values
        return vector.masked_fill_(vector.abs() < threshold, 0.0), threshold

    thresholds, elected = [], torch.zeros_like(base)
    for row in range(matrix.shape[0]):
        vector, threshold = task_vector(row)
        thresholds.append(threshold)
        elected += vector
    elected.sign_()
    total, agreeing = torch.zeros_like(base), torch.zeros_like(base)
    for row, threshold in enumerate(thresholds):
        vector, _ = task_vector(row, threshold)
        agrees = (vector.sign() == elected) & (vector != 0)
        total += vector * agrees
        agreeing += agrees
    return total.div_(agreeing.clamp_(min=1.0))


@register("dare")
def dare(matrix: torch.Tensor, base: torch.Tensor, drop_rate: float, seed: int) -> torch.Tensor:
    merged = torch.zeros_like(base)
    for row in range(matrix.shape[0]):
        # A seed of its own per (run seed, member): small seeds would repeat streams drawn elsewhere.
        stream = int.from_bytes(hashlib.sha256(f"dare/{seed}/{row}".encode()).digest()[:8], "little")
        generator = torch.Generator().manual_seed(stream)
        kept = (torch.rand(base.numel(), generator=generator) >= drop_rate).to(base)
        merged += (matrix[row] - base) * kept
    return merged.div_(matrix.shape[0] * (1.0 - drop_rate))
