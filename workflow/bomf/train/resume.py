"""What lets a killed training job continue: a resume directory beside its output (not a Snakemake output,
so it survives the job's failure) holding its last training state and what the job keeps beside it.

Every training job uses it: stage-1 trials, the grid fine-tunes, HPBO-full and stage 2. A state is written
every ``finetune.checkpoint_minutes`` of training and when SLURM signals a time limit or a pre-emption
(``runtime.stop_signals``), so a killed job loses at most that much, and a rerun resumes from it and ends
bit-identical (on CPU) to an uninterrupted run. Only safetensors and JSON are written and read back: tensors
in a file named by the step, the rest in ``state.json``, written last (the commit point), and every file
checked against its recorded checksum before it is trusted.
"""

import json
import shutil
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..io import atomic_path, read_json, sha256, write_json
from ..runtime import stop_signals
from .training import TrainingState

STATE_FILE = "state.json"  # written last: the commit point of a training state


class StaleStateError(RuntimeError):
    pass


@dataclass
class Saved:
    """A training state and what its job keeps beside it."""

    state: TrainingState
    files: dict[str, str] = field(default_factory=dict)  # files written beside it (stage 2's members): checksums
    kept: dict[str, torch.Tensor] = field(default_factory=dict)  # the job's own tensors (a best checkpoint)
    notes: dict = field(default_factory=dict)  # the job's own JSON


def training_identity(model_spec: dict, data: dict, seed: int, device, precision: str, **settings) -> dict:
    """What a training state must have been written by to be resumed (as JSON reads it back): the model, the
    data, the seed and the job's ``settings``; a run never continues on another kind of device or in another
    precision."""
    identity = {"model": model_spec, "seed": seed, **settings,
                "compute": {"device": torch.device(device).type, "precision": precision},
                "data": {name: data[name].fingerprint() for name in ("train", "val")}}
    return json.loads(json.dumps(identity))


def write_training_state(directory: Path, saved: Saved, identity: dict, model_file: str | None = None) -> None:
    """Write ``saved``; ``model_file``, one of its files that holds exactly the state's model (stage 2's member
    of that step), is referred to instead of writing the model again."""
    state = saved.state
    tensors, optimizer = _flatten_optimizer(state.optimizer)
    if model_file is None:
        tensors |= {f"model.{name}": t.detach().to("cpu", copy=True).contiguous() for name, t in state.model.items()}
    tensors |= {"rng.torch": state.rng, "rng.data_order": state.data_order}
    tensors |= {f"average.{name}": tensor for name, tensor in (state.average or {}).items()}
    tensors |= {f"kept.{name}": t.detach().to("cpu", copy=True).contiguous() for name, t in saved.kept.items()}
    if state.cuda_rng is not None:
        tensors["rng.cuda"] = state.cuda_rng
    tensor_file = directory / f"state-step{state.step:09d}.safetensors"
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(tensor_file) as tmp:
        save_file(tensors, str(tmp))
    write_json(directory / STATE_FILE, {
        "identity": identity, "step": state.step, "elapsed": state.elapsed, "files": dict(saved.files),
        "model_file": model_file, "tensors": {tensor_file.name: sha256(tensor_file)}, "optimizer": optimizer,
        "scheduler": state.scheduler, "scaler": state.scaler, "trajectory": state.trajectory,
        "average": state.average is not None, "running_loss": state.running_loss,
        "running_count": state.running_count, "notes": saved.notes})
    for old in directory.glob("state-step*.safetensors"):
        if old != tensor_file:
            old.unlink()


def read_training_state(directory: Path, identity: dict) -> Saved:
    """The state in ``directory``; StaleStateError if it cannot be trusted."""
    saved = read_json(directory / STATE_FILE)
    if saved["identity"] != identity:
        changed = sorted(k for k in identity.keys() | saved["identity"].keys()
                         if identity.get(k) != saved["identity"].get(k))
        raise StaleStateError(f"written for another run (different {', '.join(changed)})")
    _verify(directory, {**saved["files"], **saved["tensors"]})
    (tensor_file,) = saved["tensors"]
    tensors = load_file(str(directory / tensor_file))

    def prefixed(prefix: str) -> dict[str, torch.Tensor]:
        return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}

    model_file = saved["model_file"]
    if model_file is not None and model_file not in saved["files"]:
        raise StaleStateError(f"its model is in {model_file}, which it does not list")
    state = TrainingState(
        step=saved["step"], model=load_file(str(directory / model_file)) if model_file else prefixed("model."),
        optimizer=_unflatten_optimizer(tensors, saved["optimizer"]), scheduler=saved["scheduler"],
        data_order=tensors["rng.data_order"], rng=tensors["rng.torch"], cuda_rng=tensors.get("rng.cuda"),
        trajectory=saved["trajectory"], elapsed=saved["elapsed"], scaler=saved["scaler"],
        running_loss=saved["running_loss"], running_count=saved["running_count"],
        average=prefixed("average.") if saved["average"] else None)
    return Saved(state, dict(saved["files"]), prefixed("kept."), saved["notes"])


def _verify(directory: Path, checksums: dict[str, str]) -> None:
    for name, expected in checksums.items():
        path = directory / name
        if not path.is_file() or sha256(path) != expected:
            raise StaleStateError(f"{name} is missing or does not match its recorded checksum")


class ResumeDirectory:
    """A training job's resume directory: the valid state found there (``saved``, or None; an invalid one is
    removed with one line saying why), ``write`` for new states and ``remove`` once the job's output is
    complete. ``check`` (a Saved -> None raising StaleStateError) adds the job's own consistency checks."""

    def __init__(self, directory: str | Path, identity: dict, check: Callable[[Saved], None] | None = None):
        self.directory, self.identity = Path(directory), identity
        self.saved = self._read(check)

    @property
    def resume(self) -> TrainingState | None:
        return self.saved.state if self.saved is not None else None

    def _read(self, check) -> Saved | None:
        if not self.directory.exists():
            return None
        try:
            saved = read_training_state(self.directory, self.identity)
            if check is not None:
                check(saved)
        except (StaleStateError, OSError, ValueError, LookupError, TypeError) as error:
            print(f"ignoring the resume state in {self.directory} and starting afresh: {error}", flush=True)
            shutil.rmtree(self.directory)
            return None
        return saved

    def write(self, saved: Saved, model_file: str | None = None) -> None:
        write_training_state(self.directory, saved, self.identity, model_file)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def checkpointed(resume: ResumeDirectory | None, checkpoint_seconds: float | None,
                 on_state: Callable[[TrainingState], None] | None = None):
    """The ``fine_tune`` keywords of a resumable training job: resume from ``resume``'s state, and write one
    every ``checkpoint_seconds`` and when SLURM's signal comes (``on_state``: a job that keeps more than the
    training state writes it with what it keeps). Without a resume directory: none."""
    if resume is None:
        yield {}
        return
    with stop_signals() as stop_requested:
        yield {"resume": resume.resume, "checkpoint_seconds": checkpoint_seconds, "stop_requested": stop_requested,
               "on_state": on_state or (lambda state: resume.write(Saved(state)))}


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state_dict as flat tensors (``optimizer.<param>.<name>``) and JSON (everything else)."""
    tensors, scalars = {}, {}
    for param, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{param}.{name}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars[f"{param}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], saved: dict) -> dict:
    state = defaultdict(dict)
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param, name = key.split(".", 2)
            state[int(param)][name] = value
    for key, value in saved["scalars"].items():
        param, name = key.split(".", 1)
        state[int(param)][name] = value
    return {"state": dict(state), "param_groups": saved["param_groups"]}
