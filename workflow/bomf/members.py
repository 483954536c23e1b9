"""Stage 2: one full fine-tune with the chosen hyperparameters; members saved from its second half.

Each member is a safetensors file whose SHA-256 is recorded at write time in ``members.json``; readers
verify it before use, so a truncated or corrupted member is caught before any fusion work.
"""

import hashlib
import math
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from .io import atomic_path, read_json, write_csv, write_json
from .models import load_classifier
from .runtime import seed_everything
from .training import OptimConfig, fine_tune, member_steps


class MemberIntegrityError(RuntimeError):
    pass


def member_path(directory: str | Path, index: int) -> Path:
    return Path(directory) / f"member{index:02d}.safetensors"


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_member(model: torch.nn.Module, path: Path) -> str:
    """Write the model's full state (fp32, CPU) and return its checksum."""
    state = {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    return sha256(path)


def run_finetune(source: str, task, data: dict, hp, optim_config: dict, finetune_config: dict, seed: int,
                 device, out_dir: str | Path) -> pd.DataFrame:
    """Train the full model and save ``finetune.members`` members; returns the trajectory."""
    out_dir = Path(out_dir)
    steps_per_epoch = math.ceil(len(data["train"]) / hp.batch_size)
    steps = member_steps(steps_per_epoch * finetune_config["epochs"], finetune_config["members"],
                         finetune_config["start_fraction"])
    checksums = {}

    def save(index, step, model, row):
        path = member_path(out_dir, index)
        checksums[path.name] = save_member(model, path)

    seed_everything(seed)
    model = load_classifier(source, task)
    trajectory = fine_tune(model, data["train"], data["val"], task, hp, OptimConfig.from_config(optim_config),
                           finetune_config["epochs"], seed, device, eval_steps=steps, on_eval=save,
                           progress="finetune")
    if len(checksums) != len(steps):
        raise RuntimeError(f"training diverged (non-finite loss) at step {trajectory[-1]['step']}: "
                           f"{len(checksums)} of {len(steps)} members saved; lower the learning rate")
    frame = pd.DataFrame(trajectory)
    frame.insert(0, "member", [member_path(out_dir, i).name for i in range(len(frame))])
    write_csv(out_dir / "trajectory.csv", frame)
    write_json(out_dir / "members.json", {"members": checksums, "steps": steps, "hyperparameters": vars(hp),
                                          "seed": seed, "source": source})
    return frame


def load_members(directory: str | Path) -> list[dict[str, torch.Tensor]]:
    """Every member's state dict, each verified against the checksum recorded when it was written."""
    directory = Path(directory)
    manifest = read_json(directory / "members.json")
    states = []
    for name, expected in manifest["members"].items():
        path = directory / name
        if not path.is_file():
            raise MemberIntegrityError(f"{path}: member file missing")
        actual = sha256(path)
        if actual != expected:
            raise MemberIntegrityError(f"{path}: checksum {actual[:12]}… differs from the recorded "
                                       f"{expected[:12]}… (truncated or corrupted); rerun the finetune rule")
        states.append(load_file(str(path)))
    return states
