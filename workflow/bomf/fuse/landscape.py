"""The loss/metric landscape on the plane through three members (Garipov et al., 2018).

With members θa, θb, θc the plane is spanned by u = θc − θa and v = the part of θb − θa orthogonal to u.
Coordinates are scaled: α counts ‖θc − θa‖ along u and β counts ‖(θb − θa)⊥‖ along v, so θa lies at (0, 0),
θc at (1, 0) and θb at (γ, 1) with γ = ⟨θb − θa, θc − θa⟩ / ‖θc − θa‖². Every plane point is an affine
combination of the members (weights summing to 1, possibly negative):

    θ(α, β) = θa + α (θc − θa) + β ((θb − θa) − γ (θc − θa)).

All the geometry therefore happens in member-weight space, with inner products taken through the members'
N x N Gram matrix: the only pass over the P parameters is the one that builds it.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..tasks.models import load_member_state
from .fusion import GRAM_BLOCK_ELEMENTS, FusionObjective, one_hot
from .journal import JournaledObjective

AFFINE_TOLERANCE = 1e-6
COLLINEAR_TOLERANCE = 1e-6  # ‖(θb − θa)⊥‖ below this fraction of ‖θb − θa‖: no plane to speak of


def member_gram(matrix: torch.Tensor) -> torch.Tensor:
    """The [N, N] float64 Gram matrix of the members (rows of ``matrix``) centred on their mean.

    The plane only ever measures differences of members (weight vectors summing to 0), whose inner products
    centring leaves unchanged; it removes the common part ‖θ‖², which is far larger than the distances
    between checkpoints of one run and would otherwise cancel in them. Accumulated over blocks of columns,
    so no P-sized float64 copy exists at any time.
    """
    count, size = matrix.shape
    gram = torch.zeros(count, count, dtype=torch.float64, device=matrix.device)
    step = max(1, GRAM_BLOCK_ELEMENTS // count)
    for start in range(0, size, step):
        block = matrix[:, start:start + step].double()
        block -= block.mean(0, keepdim=True)
        gram += block @ block.T
    return gram.cpu()


def default_members(count: int) -> tuple[int, int, int]:
    """(first, middle, last): u runs along the trajectory, the middle member sets the plane's tilt."""
    if count < 3:
        raise ValueError(f"a landscape plane needs at least 3 members, got {count}")
    return 0, count // 2, count - 1


@dataclass(frozen=True)
class LandscapePlane:
    members: tuple[int, int, int]  # (a, b, c): a at (0, 0), b at (γ, 1), c at (1, 0)
    gamma: float
    length_u: float  # ‖θc − θa‖, the unit of α
    length_v: float  # ‖(θb − θa)⊥‖, the unit of β
    gram: torch.Tensor = field(repr=False, compare=False)  # member_gram of all N members

    @classmethod
    def from_gram(cls, gram: torch.Tensor, members: tuple[int, int, int]) -> "LandscapePlane":
        gram = gram.to(dtype=torch.float64, device="cpu")
        count = gram.shape[0]
        a, b, c = members
        if len({a, b, c}) != 3 or not all(0 <= i < count for i in members):
            raise ValueError(f"a landscape plane needs three distinct members out of {count}, got {members}")
        _, along_u, along_b = _directions(members, count)
        length_u = math.sqrt(max(_inner(gram, along_u, along_u), 0.0))
        if length_u == 0.0:
            raise ValueError(f"members {a} and {c} are identical: they span no direction")
        gamma = _inner(gram, along_b, along_u) / length_u**2
        perpendicular = along_b - gamma * along_u
        length_v = math.sqrt(max(_inner(gram, perpendicular, perpendicular), 0.0))
        if length_v <= COLLINEAR_TOLERANCE * math.sqrt(max(_inner(gram, along_b, along_b), 0.0)):
            raise ValueError(f"member {b} lies on the line through members {a} and {c}: they span no plane")
        return cls((a, b, c), gamma, length_u, length_v, gram)

    @property
    def count(self) -> int:
        return self.gram.shape[0]

    @property
    def member_coordinates(self) -> list[tuple[float, float]]:
        """(α, β) of members a, b, c, in that order."""
        return [(0.0, 0.0), (self.gamma, 1.0), (1.0, 0.0)]

    def weights_at(self, alpha: float, beta: float) -> torch.Tensor:
        """The affine member weights (N, float64, summing to 1) of the plane point (α, β)."""
        start, along_u, along_b = _directions(self.members, self.count)
        # Grouped as θa + (α − βγ)(θc − θa) + β(θb − θa) so each member's own coordinates give its one-hot
        # weights exactly, and a model evaluated there is that member bit for bit.
        return start + (alpha - beta * self.gamma) * along_u + beta * along_b

    def project(self, weights) -> tuple[float, float, float]:
        """(α, β, distance from the plane) of the fused point Σ wᵢθᵢ; the weights must sum to 1."""
        weights = torch.as_tensor(weights, dtype=torch.float64).cpu()
        if weights.shape != (self.count,) or abs(float(weights.sum()) - 1.0) > AFFINE_TOLERANCE:
            raise ValueError(f"project needs {self.count} affine weights (summing to 1), got {weights.tolist()}")
        start, along_u, along_b = _directions(self.members, self.count)
        perpendicular = along_b - self.gamma * along_u
        offset = weights - start
        alpha = _inner(self.gram, offset, along_u) / self.length_u**2
        beta = _inner(self.gram, offset, perpendicular) / self.length_v**2
        residual = offset - alpha * along_u - beta * perpendicular
        return alpha, beta, math.sqrt(max(_inner(self.gram, residual, residual), 0.0))


def _directions(members: tuple[int, int, int], count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Member-weight vectors of θa, θc − θa and θb − θa."""
    a, b, c = members
    start = one_hot(a, count)
    return start, one_hot(c, count) - start, one_hot(b, count) - start


def _inner(gram: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> float:
    return float(left @ gram @ right)


def member_points(plane: LandscapePlane) -> pd.DataFrame:
    """The three members as plot points: name, alpha, beta, distance (0)."""
    return pd.DataFrame([{"name": f"member {index}", "alpha": alpha, "beta": beta, "distance": 0.0}
                         for index, (alpha, beta) in zip(plane.members, plane.member_coordinates)])


def projected_points(plane: LandscapePlane, named_weights: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Fused models (e.g. SWA, BOMF) projected onto the plane: name, alpha, beta, distance (parameter-space
    L2 distance from the plane; the plot shows where they sit, not what they score)."""
    rows = []
    for name, weights in named_weights.items():
        alpha, beta, distance = plane.project(weights)
        rows.append({"name": name, "alpha": alpha, "beta": beta, "distance": distance})
    return pd.DataFrame(rows, columns=["name", "alpha", "beta", "distance"])


class AffineObjective(FusionObjective):
    """The fusion objective at affine member weights (summing to 1, possibly negative): plane points lie off
    the simplex, which ``MemberStack.parameters`` rejects, so they are mixed by ``MemberStack.combine``."""

    @classmethod
    def of(cls, objective: FusionObjective) -> "AffineObjective":
        """The same members, model and split as ``objective``."""
        return cls(objective.stack, objective.model, objective.val, objective.task, objective.batch_size,
                   objective.device)

    def fused_model(self, weights: torch.Tensor) -> nn.Module:
        stack = self.stack
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (len(stack),) or abs(float(weights.sum()) - 1.0) > AFFINE_TOLERANCE:
            raise ValueError(f"weights: {len(stack)} affine weights (summing to 1) expected, got {weights.tolist()}")
        load_member_state(self.model, stack.state(stack.combine(weights)))
        return self.model


def grid_points(size: int, low: float, high: float) -> list[tuple[float, float]]:
    """size x size (α, β) points over [low, high]², β-major (rows of constant β)."""
    axis = np.linspace(low, high, size).tolist()
    return [(alpha, beta) for beta in axis for alpha in axis]


def evaluate_points(objective: "AffineObjective | JournaledObjective", plane: LandscapePlane,
                    points: list[tuple[float, float]]) -> pd.DataFrame:
    """Validation loss and metrics of the plane points: columns alpha, beta, then ``objective.names``. Each
    point is one call of ``objective`` at its affine weights (``weights_at``), so a journaled objective
    records and replays every evaluation."""
    rows = [{"alpha": alpha, "beta": beta, **objective(plane.weights_at(alpha, beta))} for alpha, beta in points]
    return pd.DataFrame(rows, columns=["alpha", "beta", *objective.names])


def evaluate_landscape(objective: "AffineObjective | JournaledObjective", plane: LandscapePlane, size: int,
                       low: float, high: float) -> pd.DataFrame:
    """The size x size grid of ``grid_points`` evaluated by ``evaluate_points``."""
    return evaluate_points(objective, plane, grid_points(size, low, high))
