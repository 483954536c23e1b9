"""The points a fusion method chooses, and their JSON: simplex weights over the members (a tensor), coefficients
of the members' span (``Span``: TWA's), a task-vector merge (``merging.Merge``), or a state stage 2 kept beside
the members (``Stored``: the EMA). A point is all a reader needs to rebuild the method's model from the members.
The landscape's points are weight tensors too, affine ones (possibly negative)."""

from dataclasses import dataclass

import torch

from .merging import Merge


@dataclass(frozen=True)
class Stored:
    """A state stage 2 kept beside its members (``members.load_stored``: the EMA of its trajectory), as a
    point: it mixes nothing."""

    name: str


@dataclass(frozen=True, eq=False)
class Span:
    """Coefficients α of Σ αᵢθᵢ anywhere in the members' linear span: any sign, any sum (TWA's point)."""

    coefficients: torch.Tensor  # float64, one per member


@dataclass(frozen=True)
class Aligned:
    """OTFusion's point (``otfusion``): every member's neurons aligned to member ``reference`` by optimal
    transport, ``heads`` attention heads a layer taken as units, then averaged. The alignment is deterministic,
    so the members and these two rebuild it."""

    reference: int
    heads: int


def point_record(point: "torch.Tensor | Span | Merge | Stored") -> dict:
    """A point as JSON: the records.SelectedModel field that holds it (also its key in a fusion journal)."""
    if isinstance(point, Merge):
        return {"merge": point.record()}
    if isinstance(point, Stored):
        return {"stored": point.name}
    if isinstance(point, Aligned):
        return {"aligned": {"reference": point.reference, "heads": point.heads}}
    if isinstance(point, Span):
        return {"span": point.coefficients.double().tolist()}
    return {"weights": torch.as_tensor(point).double().tolist()}


def point_of(selected) -> "torch.Tensor | Span | Merge | Stored | None":
    """The point a method's record (records.SelectedModel) holds; None for a model not fused from members."""
    if selected.merge is not None:
        return Merge.from_record(selected.merge)
    if selected.stored is not None:
        return Stored(selected.stored)
    if selected.aligned is not None:
        return Aligned(**selected.aligned)
    if selected.span is not None:
        return Span(torch.tensor(selected.span, dtype=torch.float64))
    if selected.weights is not None:
        return torch.tensor(selected.weights, dtype=torch.float64)
    return None
