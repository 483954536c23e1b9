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
parameter vectors, whatever N. Each also works on blocks of columns, one at a time, brought to the buffer's
device: a stack kept in host memory (``MemberStack`` within ``fusion.device_memory``) is merged chunk by chunk,
with the same arithmetic per entry as in one block, so the result is the same.
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

    def vector(self, matrix: torch.Tensor, base: torch.Tensor, out: torch.Tensor,
               blocks: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """θ₀ + λ·τ into ``out``, from the members (rows of ``matrix``) and θ₀ (``base``), ``blocks`` of columns
        (start, stop) at a time (None: all at once)."""
        hyperparameters = dict(self.hyperparameters)
        scale = hyperparameters.pop("scale")
        MERGES[self.method](matrix, base, out=out, blocks=blocks, **hyperparameters)  # τ, into out
        for columns, theta0 in _base_blocks(base, out, blocks):
            torch.add(theta0, out[columns], alpha=scale, out=out[columns])
        return out


def _base_blocks(base: torch.Tensor, out: torch.Tensor, blocks: list[tuple[int, int]] | None):
    """(columns, θ₀ on those columns on ``out``'s device) for each block (None: one block of every column)."""
    for start, stop in blocks or [(0, base.numel())]:
        yield slice(start, stop), base[start:stop].to(out.device)


def _member_blocks(matrix: torch.Tensor, base: torch.Tensor, out: torch.Tensor, blocks: list[tuple[int, int]] | None):
    """(columns, the members' and θ₀'s entries there on ``out``'s device) for each block of columns."""
    for columns, theta0 in _base_blocks(base, out, blocks):
        yield columns, matrix[:, columns].to(out.device), theta0


@register("task_arithmetic")
def mean_task_vector(matrix: torch.Tensor, base: torch.Tensor, out: torch.Tensor | None = None,
                     blocks: list[tuple[int, int]] | None = None) -> torch.Tensor:
    out = torch.empty_like(base) if out is None else out
    for columns, members, theta0 in _member_blocks(matrix, base, out, blocks):
        # Summed member by member, as the other merges do: the same order of additions in any block.
        mean = out[columns].copy_(members[0])
        for row in range(1, matrix.shape[0]):
            mean += members[row]
        mean.div_(matrix.shape[0]).sub_(theta0)
    return out


@register("ties")
def ties(matrix: torch.Tensor, base: torch.Tensor, density: float, out: torch.Tensor | None = None,
         blocks: list[tuple[int, int]] | None = None) -> torch.Tensor:
    out = torch.empty_like(base) if out is None else out
    # Each member's trimming threshold over all its entries, where the members are: a selection, so exact
    # wherever it is computed.
    keep = max(1, round(density * base.numel()))
    thresholds = [torch.kthvalue((matrix[row] - base).abs(), base.numel() - keep + 1).values.to(out.device)
                  for row in range(matrix.shape[0])]

    def task_vector(members: torch.Tensor, theta0: torch.Tensor, row: int) -> torch.Tensor:
        vector = members[row] - theta0
        return vector.masked_fill_(vector.abs() < thresholds[row], 0.0)

    for columns, members, theta0 in _member_blocks(matrix, base, out, blocks):
        elected = torch.zeros_like(theta0)
        for row in range(matrix.shape[0]):
            elected += task_vector(members, theta0, row)
        elected.sign_()
        total, agreeing = torch.zeros_like(theta0), torch.zeros_like(theta0)
        for row in range(matrix.shape[0]):
            vector = task_vector(members, theta0, row)
            agrees = (vector.sign() == elected) & (vector != 0)
            total += vector * agrees
            agreeing += agrees
        torch.div(total, agreeing.clamp_(min=1.0), out=out[columns])
    return out


@register("dare")
def dare(matrix: torch.Tensor, base: torch.Tensor, drop_rate: float, seed: int, out: torch.Tensor | None = None,
         blocks: list[tuple[int, int]] | None = None) -> torch.Tensor:
    out = torch.zeros_like(base) if out is None else out.zero_()
    for row in range(matrix.shape[0]):
        # A seed of its own per (run seed, member): small seeds would repeat streams drawn elsewhere.
        stream = int.from_bytes(hashlib.sha256(f"dare/{seed}/{row}".encode()).digest()[:8], "little")
        generator = torch.Generator().manual_seed(stream)
        kept = torch.rand(base.numel(), generator=generator) >= drop_rate
        for columns, theta0 in _base_blocks(base, out, blocks):
            out[columns] += (matrix[row, columns].to(out.device) - theta0) * kept[columns].to(out)
    return out.div_(matrix.shape[0] * (1.0 - drop_rate))
