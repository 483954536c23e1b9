"""Typed records of the JSON files jobs hand to each other, so each is written in one place with one shape,
and their file names (the rules read them from here)."""

from dataclasses import asdict, dataclass
from pathlib import Path

from .io import read_json, write_json

SUGGESTION_FILE = "round{round}/suggest.json"  # in a run's stage-1 search directory (hpo/, hpo_full/)
HPO_TRIAL_FILE = "round{round}/trial{trial}.json"  # likewise
HPO_CHOICE_FILE = "best.json"  # likewise
GRID_POINT_FILE = "grid/frozen{frozen}/point{point}.json"  # in a run's directory
MEMBER_MANIFEST_FILE = "members.json"  # in a run's members/ directory
SELECTED_MODEL_FILE = "weights.json"  # in a method's fusion directory
EVALUATION_FILE = "test/{method}.json"  # in a run's directory, one per method
# The checkpoint an outer-loop baseline kept (its member state), beside its record: the only fused-model
# weights a run stores, since every other method's model is rebuilt from the members and its record.
MODEL_STATE_FILE = "model.safetensors"


class Record:
    """A record written as one JSON file: the fields that apply (None: a field this kind of record leaves out)
    and, for a job's own result, the environment that produced it (provenance: never read back)."""

    def write(self, path: str | Path, environment: dict | None = None) -> None:
        record = {key: value for key, value in asdict(self).items() if value is not None}
        write_json(path, record if environment is None else {**record, "environment": environment})

    @classmethod
    def read(cls, path: str | Path):
        record = read_json(path)
        record.pop("environment", None)
        return cls(**record)

    @staticmethod
    def environment_of(path: str | Path) -> dict:
        """The environment a record was written with (empty if none): what the provenance reports."""
        return read_json(path).get("environment", {})


@dataclass(frozen=True)
class Suggestion(Record):
    """One stage-1 BO round's hyperparameter points, each trained by one hpo_trial job."""

    round: int
    based_on: int  # trials of earlier rounds the suggestion saw
    points: list[dict]


@dataclass(frozen=True)
class HpoTrial(Record):
    """One stage-1 trial (``bomf.train.hpo.run_trial``): a fine-tune with one point's hyperparameters, of the
    proxy or (HPBO-full) of the full model; read by the later rounds' suggestions and by the selection."""

    params: dict
    score: float  # the best validation primary metric over its evaluations (NaN: diverged throughout)
    loss: float  # the validation loss where it scored that: breaks ties between equal scores
    metric: str
    proxy: bool
    trainable_fraction: float
    epochs: int
    seconds: float
    trajectory: list[dict]  # its validation evaluations


@dataclass(frozen=True)
class HpoChoice(Record):
    """The best stage-1 trial (``bomf.fuse.selection.best_trial``): stage 2, or the HPBO-full baseline, trains
    with its hyperparameters."""

    params: dict
    score: float
    loss: float
    metric: str
    trials: int  # trials it was chosen from
    warning: str  # why the choice is doubtful (every trial tied), or ""


@dataclass(frozen=True)
class BestCheckpointRun(Record):
    """A fine-tune that kept its best validation checkpoint (``bomf.fuse.baselines.train_keeping_best``): a point
    of the baseline grid, read by the grid's table and the grid fine-tune baseline; the HPBO-full baseline's run."""

    params: dict
    frozen_layers: int
    epochs: int
    metric: str
    best_step: int
    best: dict[str, float]  # the kept checkpoint's validation scores
    swa: dict[str, float]  # the validation scores of the uniform average of the member-step checkpoints
    seconds: float
    trajectory: list[dict]  # its validation evaluations


@dataclass(frozen=True)
class MemberManifest(Record):
    """What stage 2, or the import of a user's checkpoints, wrote beside the members: read by every job that
    loads them (each member verified against its checksum) and by the exported model's card."""

    members: dict[str, str]  # member file name -> SHA-256, in training order
    steps: list[int]  # each member's optimizer step
    hyperparameters: dict  # what stage 2 trained with ({} for imported members)
    seed: int
    source: str  # the model the members were fine-tuned from
    stored: dict[str, dict]  # states kept beside the members (the EMA): name -> {"file", "sha256"}
    imported: list[str] | None = None  # imported members: each member's checkpoint directory
    base: dict | None = None  # imported members: θ₀ of the task-vector merges, {"file", "sha256"}

    def write(self, directory: str | Path) -> None:
        super().write(Path(directory) / MEMBER_MANIFEST_FILE)

    @classmethod
    def read(cls, directory: str | Path) -> "MemberManifest":
        return super().read(Path(directory) / MEMBER_MANIFEST_FILE)


@dataclass(frozen=True)
class SelectedModel(Record):
    """How one method's model was chosen: read by test evaluation, the tables and the landscape."""

    method: str
    validation: dict[str, float]  # its validation loss and metrics
    evaluations: int  # fused models its search scored (the members' own scores and the final score not counted)
    weights: list[float] | None = None  # over the members (the member-fusion methods and the oracle)
    span: list[float] | None = None  # twa: coefficients of the members' linear span (any sign, any sum)
    merge: dict | None = None  # the task-vector merges: the merge and its hyperparameters (merging.Merge)
    stored: str | None = None  # a state stage 2 kept beside the members (the EMA): its name
    aligned: dict | None = None  # otfusion: its reference member and heads a layer (points.Aligned)
    params: dict | None = None  # the outer-loop baselines: the hyperparameters they trained with
    step: int | None = None  # the outer-loop baselines: the training step of the kept checkpoint
    oracle: bool = False  # chosen on the test split: an upper bound, not a method
    selected_on: str = "validation"
    search: str | None = None  # the oracle: how its subsets were enumerated

    def write(self, directory: str | Path, environment: dict) -> None:
        super().write(Path(directory) / SELECTED_MODEL_FILE, environment)

    @classmethod
    def read(cls, directory: str | Path) -> "SelectedModel":
        return super().read(Path(directory) / SELECTED_MODEL_FILE)


@dataclass(frozen=True)
class EvaluatedModel(Record):
    """One method's model scored on the test split, the only job that reads it: summarised per run, averaged
    and tested in the tables, quoted by the exported model's card."""

    task: str
    model: str
    seed: int
    method: str
    primary_metric: str
    test: dict[str, float]  # its test loss and metrics
    validation: dict[str, float]  # what its choice scored on validation
    test_size: int
    predictions: list  # class ids, scores or texts
    labels: list  # the references, in the same order
    example_statistics: dict[str, list] | None = None  # text-scored tasks: what the paired bootstrap resamples
