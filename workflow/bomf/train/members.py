"""Stage 2: one full fine-tune with the chosen hyperparameters; members saved from its second half.

Each member is a safetensors file whose SHA-256 is recorded at write time in ``members.json``; readers
verify it before use, so a truncated or corrupted member is caught before any fusion work.

Members are first written to a staging directory, together with a resumable training state after every
member: an interrupted fine-tune (a killed job, a pre-empted node) continues from its last member and ends
bit-identical (on CPU) to an uninterrupted one. Only safetensors and JSON are written and read back.
"""

import hashlib
import json
import math
import os
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load, load_file, save_file

from ..io import atomic_path, read_json, write_csv, write_json
from ..layout import MEMBER_FILE
from ..records import MemberManifest
from ..runtime import seed_everything, stop_signals
from ..settings import OptimConfig, member_steps
from ..tasks.kinds import kind_of
from ..tasks.models import member_state
from .training import ExponentialAverage, TrainingState, fine_tune

STATE_FILE = "state.json"  # written last: the commit point of a training state
EMA_FILE = "ema.safetensors"  # the exponential moving average of the trajectory, beside the members


class MemberIntegrityError(RuntimeError):
    pass


def member_path(directory: str | Path, index: int) -> Path:
    return Path(directory) / MEMBER_FILE.format(index=index)


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_state_file(state: dict[str, torch.Tensor], path: Path) -> str:
    """Write a member state (CPU tensors) and return its checksum."""
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    return sha256(path)


def save_member(model: torch.nn.Module, path: Path) -> str:
    """Write what fine-tuning changed (the full state, or a LoRA model's adapters; CPU) and return its checksum."""
    return save_state_file(member_state(model), path)


def run_finetune(model_spec: dict, task, data: dict, hp, optim_config: dict, finetune_config: dict, seed: int,
                 device, out_dir: str | Path, staging_dir: str | Path | None = None,
                 precision: str = "fp32", checkpoint_seconds: float | None = None) -> pd.DataFrame:
    """Train the full model and save ``finetune.members`` members, and the exponential moving average of the
    trajectory from the first member on (``finetune.ema_decay``; null keeps none); returns the trajectory.

    Members and training states go to ``staging_dir`` (default: ``out_dir`` + ``.resume``), which survives
    an interrupted job; a valid state there is resumed from. A state is written at every member, every
    ``checkpoint_seconds`` of training (None: only at members), and when SLURM signals a time limit or a
    pre-emption (then training stops: ``training.TrainingStopped``), so a killed job loses at most that much.
    On success the members move to ``out_dir`` and the staging directory is removed.
    """
    out_dir = Path(out_dir)
    staging = Path(staging_dir) if staging_dir is not None else out_dir.with_name(out_dir.name + ".resume")
    steps_per_epoch = math.ceil(len(data["train"]) / hp.batch_size)
    steps = member_steps(steps_per_epoch * finetune_config["epochs"], finetune_config["members"],
                         finetune_config["start_fraction"])
    # How often states are written does not change what is trained: not part of the identity.
    trained = {key: value for key, value in finetune_config.items() if key != "checkpoint_minutes"}
    identity = _run_identity(model_spec, data, hp, optim_config, trained, seed, steps,
                             {"device": torch.device(device).type, "precision": precision})
    resume, checksums = _resumable_state(staging, identity)
    if resume is not None:
        print(f"resumed from step {resume.step} ({len(checksums)} of {len(steps)} members done)", flush=True)

    def save(index, step, model, row):
        path = member_path(staging, index)
        checksums[path.name] = save_member(model, path)

    def save_state(state):
        write_training_state(staging, state, identity, checksums)

    decay = finetune_config["ema_decay"]
    average = ExponentialAverage(decay, steps[0]) if decay is not None else None
    seed_everything(seed)
    model = kind_of(task).load_model(model_spec, task, device)
    with stop_signals() as stop_requested:
        trajectory = fine_tune(model, data["train"], data["val"], task, hp, OptimConfig.from_config(optim_config),
                               finetune_config["epochs"], seed, device, eval_steps=steps, on_eval=save,
                               progress="finetune", resume=resume, on_state=save_state, average=average,
                               precision=precision, checkpoint_seconds=checkpoint_seconds,
                               stop_requested=stop_requested)
    if len(checksums) != len(steps):
        raise RuntimeError(f"training diverged (non-finite loss) at step {trajectory[-1]['step']}: "
                           f"{len(checksums)} of {len(steps)} members saved; lower the learning rate")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in checksums:
        os.replace(staging / name, out_dir / name)
    stored = {}
    if average is not None:
        # The non-floating tensors (position ids) are the model's own; the rest is the average.
        stored["ema"] = {"file": EMA_FILE, "sha256": save_state_file({**member_state(model), **average.state()},
                                                                     out_dir / EMA_FILE)}
    frame = pd.DataFrame(trajectory)
    frame.insert(0, "member", [member_path(out_dir, i).name for i in range(len(frame))])
    write_csv(out_dir / "trajectory.csv", frame)
    MemberManifest(checksums, steps, vars(hp), seed, model_spec["source"], stored).write(out_dir)
    shutil.rmtree(staging)
    return frame


class StaleStateError(RuntimeError):
    pass


def _run_identity(model_spec: dict, data: dict, hp, optim_config: dict, finetune_config: dict, seed: int,
                  steps: list[int], compute: dict) -> dict:
    """What a training state must have been written by to be resumed (as JSON reads it back): a run never
    continues on another kind of device or in another precision."""
    identity = {"model": model_spec, "seed": seed, "hyperparameters": vars(hp), "optim": optim_config,
                "finetune": finetune_config, "steps": steps, "compute": compute,
                "data": {name: data[name].fingerprint() for name in ("train", "val")}}
    return json.loads(json.dumps(identity))


def write_training_state(directory: Path, state: TrainingState, identity: dict, checksums: dict) -> None:
    """A training state: tensors (model, optimizer, RNGs) in a safetensors file named by the step, the rest in
    ``state.json``, written last. At a member's step the model is not written again: it is the member just
    saved."""
    tensors, optimizer = _flatten_optimizer(state.optimizer)
    if not checksums or identity["steps"][len(checksums) - 1] != state.step:
        tensors |= {f"model.{name}": t.detach().to("cpu", copy=True).contiguous() for name, t in state.model.items()}
    tensors |= {"rng.torch": state.rng, "rng.data_order": state.data_order}
    tensors |= {f"average.{name}": tensor for name, tensor in (state.average or {}).items()}
    if state.cuda_rng is not None:
        tensors["rng.cuda"] = state.cuda_rng
    tensor_file = directory / f"state-step{state.step:09d}.safetensors"
    with atomic_path(tensor_file) as tmp:
        save_file(tensors, str(tmp))
    write_json(directory / STATE_FILE, {
        "identity": identity, "step": state.step, "elapsed": state.elapsed, "members": dict(checksums),
        "tensors": {tensor_file.name: sha256(tensor_file)}, "optimizer": optimizer,
        "scheduler": state.scheduler, "scaler": state.scaler, "trajectory": state.trajectory,
        "average": state.average is not None, "running_loss": state.running_loss,
        "running_count": state.running_count})
    for old in directory.glob("state-step*.safetensors"):
        if old != tensor_file:
            old.unlink()


def read_training_state(directory: Path, identity: dict) -> tuple[TrainingState, dict[str, str]]:
    """The state in ``directory`` and its members' checksums; StaleStateError if it cannot be trusted."""
    saved = read_json(directory / STATE_FILE)
    if saved["identity"] != identity:
        changed = sorted(k for k in identity.keys() | saved["identity"].keys()
                         if identity.get(k) != saved["identity"].get(k))
        raise StaleStateError(f"written for another run (different {', '.join(changed)})")
    members, steps, step = saved["members"], identity["steps"], saved["step"]
    done = len(members)
    if (done != len(saved["trajectory"]) or done > len(steps) or (done and step < steps[done - 1])
            or (done < len(steps) and step >= steps[done])):
        raise StaleStateError(f"step {step} does not match its {done} members")
    _verify(directory, {**members, **saved["tensors"]})
    (tensor_file,) = saved["tensors"]
    tensors = load_file(str(directory / tensor_file))
    model = {key[len("model."):]: value for key, value in tensors.items() if key.startswith("model.")}
    if not model:  # a state at a member's step: the member is the model
        if not done or step != steps[done - 1]:
            raise StaleStateError(f"step {step} holds no model and is no member's step")
        model = load_file(str(directory / list(members)[-1]))
    state = TrainingState(
        step=step, model=model,
        optimizer=_unflatten_optimizer(tensors, saved["optimizer"]), scheduler=saved["scheduler"],
        data_order=tensors["rng.data_order"], rng=tensors["rng.torch"], cuda_rng=tensors.get("rng.cuda"),
        trajectory=saved["trajectory"], elapsed=saved["elapsed"], scaler=saved["scaler"],
        running_loss=saved["running_loss"], running_count=saved["running_count"],
        average={key[len("average."):]: value for key, value in tensors.items() if key.startswith("average.")}
        if saved["average"] else None)
    return state, dict(members)


def _verify(directory: Path, checksums: dict[str, str]) -> None:
    for name, expected in checksums.items():
        path = directory / name
        if not path.is_file() or sha256(path) != expected:
            raise StaleStateError(f"{name} is missing or does not match its recorded checksum")


def _resumable_state(staging: Path, identity: dict) -> tuple[TrainingState | None, dict[str, str]]:
    """The valid state in ``staging`` (with its members' checksums), or none; an invalid one is removed."""
    if not staging.exists():
        return None, {}
    try:
        return read_training_state(staging, identity)
    except (StaleStateError, OSError, ValueError, LookupError, TypeError) as error:
        print(f"ignoring the resume state in {staging} and starting afresh: {error}", flush=True)
        shutil.rmtree(staging)
        return None, {}


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


def _verified_state(path: Path, expected: str) -> dict[str, torch.Tensor]:
    """A state file's tensors, checked against its recorded checksum on the one read of the file (a shared
    filesystem serves each member once per job, not twice)."""
    if not path.is_file():
        raise MemberIntegrityError(f"{path}: member file missing")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise MemberIntegrityError(f"{path}: checksum {actual[:12]}… differs from the recorded "
                                   f"{expected[:12]}… (truncated or corrupted); rerun the finetune rule")
    return load(data)


class Members(Sequence):
    """A run's members in order, each read (and verified) when it is taken: a ``MemberStack`` built from them
    holds one member in host memory at a time beside its matrix, not all N."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.files = list(MemberManifest.read(self.directory).members.items())
        for name, _ in self.files:  # a missing file is found before any work; a corrupted one when read
            if not (self.directory / name).is_file():
                raise MemberIntegrityError(f"{self.directory / name}: member file missing")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        name, expected = self.files[index]
        return _verified_state(self.directory / name, expected)

    def __iter__(self):
        return (self[index] for index in range(len(self)))


def load_members(directory: str | Path) -> Members:
    """Every member's state dict, in order, each verified against the checksum recorded when it was written
    (read on access: ``Members``)."""
    return Members(directory)


def load_stored(directory: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """The states stage 2 kept beside its members (members.json ``stored``: the EMA), each verified."""
    directory = Path(directory)
    return {name: _verified_state(directory / entry["file"], entry["sha256"])
            for name, entry in MemberManifest.read(directory).stored.items()}


def load_base(directory: str | Path) -> dict[str, torch.Tensor] | None:
    """θ₀ of the task-vector merges where it is stored beside the members (members.json ``base``: imported
    members, whose fine-tune's start is not the run's own model), verified; None for stage 2's members."""
    directory = Path(directory)
    base = MemberManifest.read(directory).base
    return _verified_state(directory / base["file"], base["sha256"]) if base else None
