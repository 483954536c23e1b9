"""Typed records of the JSON files jobs hand to each other, so each is written in one place with one shape."""

from dataclasses import asdict, dataclass
from pathlib import Path

from .io import read_json, write_json

SELECTED_MODEL_FILE = "weights.json"  # in a method's fusion directory
# The checkpoint an outer-loop baseline kept (its member state), beside its record: the only fused-model
# weights a run stores, since every other method's model is rebuilt from the members and its record.
MODEL_STATE_FILE = "model.safetensors"


@dataclass(frozen=True)
class SelectedModel:
    """How one method's model was chosen: read by test evaluation, the tables and the landscape."""

    method: str
    validation: dict[str, float]  # its validation loss and metrics
    evaluations: int  # fused models its search scored (the members' own scores and the final score not counted)
    weights: list[float] | None = None  # over the members (the member-fusion methods and the oracle)
    merge: dict | None = None  # the task-vector merges: the merge and its hyperparameters (merging.Merge)
    stored: str | None = None  # a state stage 2 kept beside the members (the EMA): its name
    params: dict | None = None  # the outer-loop baselines: the hyperparameters they trained with
    step: int | None = None  # the outer-loop baselines: the training step of the kept checkpoint
    oracle: bool = False  # chosen on the test split: an upper bound, not a method
    selected_on: str = "validation"
    search: str | None = None  # the oracle: how its subsets were enumerated

    def write(self, directory: str | Path, environment: dict) -> None:
        record = {key: value for key, value in asdict(self).items() if value is not None}
        write_json(Path(directory) / SELECTED_MODEL_FILE, {**record, "environment": environment})

    @classmethod
    def read(cls, directory: str | Path) -> "SelectedModel":
        record = read_json(Path(directory) / SELECTED_MODEL_FILE)
        record.pop("environment", None)
        return cls(**record)
