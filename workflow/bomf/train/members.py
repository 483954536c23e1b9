"""Stage 2: one full fine-tune with the chosen hyperparameters; members saved from its second half.

Each member is a safetensors file whose SHA-256 is recorded at write time in ``members.json``; readers
verify it before use, so a truncated or corrupted member is caught before any fusion work.

Members are first written to the run's resume directory (``train.resume``), together with a training state
after every member (which refers to the member just written rather than writing the model again) and every
``finetune.checkpoint_minutes``: an interrupted fine-tune (a killed job, a pre-empted node) continues from its
last state and ends bit-identical (on CPU) to an uninterrupted one.
"""

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load, save_file

from ..io import atomic_path, sha256, write_csv
from ..layout import MEMBER_FILE
from ..records import MemberManifest
from ..runtime import seed_everything
from ..settings import OptimConfig, member_steps
from ..tasks.kinds import kind_of
from ..tasks.models import member_state
from .resume import ResumeDirectory, Saved, StaleStateError, checkpointed, training_identity
from .training import ExponentialAverage, fine_tune

EMA_FILE = "ema.safetensors"  # the exponential moving average of the trajectory, beside the members


class MemberIntegrityError(RuntimeError):
    pass


def member_path(directory: str | Path, index: int) -> Path:
    return Path(directory) / MEMBER_FILE.format(index=index)


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
    identity = training_identity(model_spec, data, seed, device, precision, hyperparameters=vars(hp),
                                 optim=optim_config, finetune=finetune_config, steps=steps)
    resume = ResumeDirectory(staging, identity, check=lambda saved: _check_members(saved, steps))
    checksums = dict(resume.saved.files) if resume.saved is not None else {}
    if resume.saved is not None:
        print(f"resumed from step {resume.saved.state.step} ({len(checksums)} of {len(steps)} members done)",
              flush=True)

    def save(index, step, model, row):
        path = member_path(staging, index)
        checksums[path.name] = save_member(model, path)

    def save_state(state):
        # At a member's step the member just saved is the model: referred to, not written again.
        at_member = bool(checksums) and steps[len(checksums) - 1] == state.step
        resume.write(Saved(state, dict(checksums)), model_file=list(checksums)[-1] if at_member else None)

    decay = finetune_config["ema_decay"]
    average = ExponentialAverage(decay, steps[0]) if decay is not None else None
    seed_everything(seed)
    model = kind_of(task).load_model(model_spec, task, device, precision=precision)
    with checkpointed(resume, checkpoint_seconds, save_state) as resumable:
        trajectory = fine_tune(model, data["train"], data["val"], task, hp, OptimConfig.from_config(optim_config),
                               finetune_config["epochs"], seed, device, eval_steps=steps, on_eval=save,
                               progress="finetune", average=average, precision=precision, **resumable)
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
    resume.remove()
    return frame


def _check_members(saved: Saved, steps: list[int]) -> None:
    """A stage-2 state's step lies between its last member's step and the next one's."""
    done, step = len(saved.files), saved.state.step
    if (done != len(saved.state.trajectory) or done > len(steps) or (done and step < steps[done - 1])
            or (done < len(steps) and step >= steps[done])):
        raise StaleStateError(f"step {step} does not match its {done} members")


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
    # safetensors' load from bytes returns the tensors in a different order in every process; sorted, as
    # load_file gives them, the members' stack has one column order, so its sums (the landscape's Gram) and
    # DARE's seeded masks are the same in every run.
    return dict(sorted(load(data).items()))


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
