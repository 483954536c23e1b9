"""The points a fusion method chooses, and their JSON: simplex weights over the members (a tensor), a task-vector
merge (``merging.Merge``), or a state stage 2 kept beside the members (``Stored``: the EMA). A point is all a
reader needs to rebuild the method's model from the members. The landscape's points are weight tensors too,
affine ones (possibly negative)."""

from dataclasses import dataclass

import torch

from .merging import Merge


@dataclass(frozen=True)
class Stored:
    """A state stage 2 kept beside its members (``members.load_stored``: the EMA of its trajectory), as a
    point: it mixes nothing."""

    name: str


def point_record(point: "torch.Tensor | Merge | Stored") -> dict:
    """A point as JSON: the records.SelectedModel field that holds it (also its key in a fusion journal)."""
    if isinstance(point, Merge):
        return {"merge": point.record()}
    if isinstance(point, Stored):
        return {"stored": point.name}
    return {"weights": torch.as_tensor(point).double().tolist()}


def point_of(selected) -> "torch.Tensor | Merge | Stored | None":
    """The point a method's record (records.SelectedModel) holds; None for a model not fused from members."""
    if selected.merge is not None:
        return Merge.from_record(selected.merge)
    if selected.stored is not None:
        return Stored(selected.stored)
    if selected.weights is not None:
        return torch.tensor(selected.weights, dtype=torch.float64)
    return None
