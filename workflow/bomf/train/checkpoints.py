"""A user's own fine-tuning checkpoints as the members of a run (config ``imported_runs``): found and ordered
when the workflow is parsed, read and checked by the import job before any fusion.

A checkpoint is a directory written by ``save_pretrained`` or by ``transformers.Trainer`` (``checkpoint-<step>``,
with ``trainer_state.json``): ``model.safetensors`` (or its sharded index) for an encoder fine-tuned in full,
``adapter_model.safetensors`` with ``adapter_config.json`` for PEFT LoRA adapters of a causal LM. Discovery is
pure Python (the Snakefile's rules list the members, so they are known at parse time); reading imports torch.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from pathlib import Path

FULL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINER_STATE = "trainer_state.json"
# Tokenizer files a checkpoint may carry (Trainer saves its processing class beside the weights).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "tokenizer.model")


class CheckpointError(ValueError):
    """Imported checkpoints that cannot be fused; the message names each file and tensor at fault."""


def checkpoint_step(directory: Path) -> int | None:
    """The training step a checkpoint was saved at: trainer_state.json's global_step, else the number that ends
    the directory's name (Trainer's checkpoint-<step>); None when neither says."""
    state = directory / TRAINER_STATE
    if state.is_file():
        try:
            return int(json.loads(state.read_text(encoding="utf-8"))["global_step"])
        except (ValueError, KeyError, TypeError):
            pass
    match = re.search(r"(\d+)$", directory.name)
    return int(match.group(1)) if match else None


def find_checkpoints(patterns: list[str]) -> list[Path]:
    """The paths ``patterns`` name (directories or globs, relative to the working directory), each once, in
    training-step order when every step is known (``checkpoint_step``), else in the order given (a glob's
    matches sorted by name)."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        found += [Path(match) for match in matches if Path(match) not in found]
    steps = [checkpoint_step(path) if path.is_dir() else None for path in found]
    if found and None not in steps:
        found = [path for _, path in sorted(zip(steps, found), key=lambda pair: pair[0])]
    return found


def weights_kind(directory: Path) -> str | None:
    """"full" (a whole model's safetensors), "adapter" (PEFT), or None when the directory holds neither."""
    if any((directory / name).is_file() for name in FULL_WEIGHTS):
        return "full"
    if (directory / ADAPTER_WEIGHTS).is_file():
        return "adapter"
    return None


def check_imported_run(name: str, entry: dict, family: str | None, landscape: bool) -> list[str]:
    """What the config check can say of one imported run's checkpoints without reading a tensor: every pattern
    matches, every match is a checkpoint directory of the kind the task fine-tunes (``family``: "encoder", full
    weights; "causal_lm", LoRA adapters), and there are enough of them."""
    where = f"imported_runs.{name}.members"
    problems = []
    for pattern in entry["members"]:
        if glob.has_magic(pattern) and not glob.glob(pattern):
            problems.append(f"{where}: '{pattern}' matches nothing{_cwd_note(pattern)}")
    directories = find_checkpoints(entry["members"])
    expected = {"encoder": "full", "causal_lm": "adapter"}.get(family)
    for path in directories:
        if not path.is_dir():
            problems.append(f"{where}: '{path}' is not a directory{_cwd_note(str(path))}")
            continue
        kind = weights_kind(path)
        if kind is None:
            inside = [p.name for p in find_checkpoints([str(path / "checkpoint-*")]) if p.is_dir()]
            hint = (f"; it holds Trainer checkpoints ({', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''}): "
                    f"name them, e.g. '{path / 'checkpoint-*'}'" if inside else
                    " (a save_pretrained or Trainer checkpoint-* directory, saved as safetensors)")
            problems.append(f"{where}: '{path}' holds no {' or '.join(FULL_WEIGHTS)} nor {ADAPTER_WEIGHTS}{hint}")
        elif expected is not None and kind != expected:
            what = ("PEFT LoRA adapters (adapter_model.safetensors)" if expected == "adapter"
                    else "whole fine-tuned models (model.safetensors)")
            problems.append(f"{where}: '{path}' holds {'an adapter' if kind == 'adapter' else 'a whole model'}, but "
                            f"task {entry['task']} fuses {what}")
    least = 3 if landscape else 2
    if len(directories) < least:
        why = "the landscape's plane needs three (figures.landscape.enabled)" if landscape else "fusion needs two"
        problems.append(f"{where}: {len(directories)} checkpoint(s) found, {why}; name more checkpoints")
    return problems


def _cwd_note(path: str) -> str:
    return "" if Path(path).is_absolute() else f" (relative to the working directory {Path.cwd()})"


def read_checkpoint(directory: Path) -> dict:
    """The tensors a checkpoint directory holds, as saved (a sharded model's shards joined)."""
    from safetensors.torch import load_file

    if weights_kind(directory) == "adapter":
        return load_file(str(directory / ADAPTER_WEIGHTS))
    if (directory / FULL_WEIGHTS[0]).is_file():
        return load_file(str(directory / FULL_WEIGHTS[0]))
    index = json.loads((directory / FULL_WEIGHTS[1]).read_text(encoding="utf-8"))
    state = {}
    for shard in sorted(set(index["weight_map"].values())):
        state |= load_file(str(directory / shard))
    return state


def tensor_problems(where: str, state: dict, expected: dict, head: str) -> list[str]:
    """How a checkpoint's tensors (name -> tensor) differ from the ones the run's model has (name -> shape):
    missing, unexpected and misshapen tensors, each named. ``head`` says what the task's head must be."""
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    problems = []
    if missing:
        problems.append(f"{where}: {len(missing)} tensor(s) of the model missing: {_names(missing)}")
    if unexpected:
        problems.append(f"{where}: {len(unexpected)} tensor(s) the model does not have: {_names(unexpected)} "
                        f"(another architecture?)")
    for name in expected:
        if name in state and tuple(state[name].shape) != tuple(expected[name]):
            problems.append(f"{where}: tensor {name} has shape {list(state[name].shape)}, the run's model "
                            f"{list(expected[name])}{head if name in _head_names(expected) else ''}")
    return problems


def _names(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _head_names(expected: dict) -> set[str]:
    """The tensors of the task's head, by the names transformers gives heads (classifier, qa_outputs, score)."""
    return {name for name in expected if name.startswith(("classifier.", "qa_outputs.", "score."))}


def file_digests(directory: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
            for name in names if (directory / name).is_file()}


def consistency_problems(directories: list[Path], base_config: dict) -> list[str]:
    """Architecture and tokenizer files the same in every checkpoint: config.json's model_type and architectures
    (also against the base model's), and byte-identical tokenizer files."""
    problems = []
    first_tokenizer, first_architectures = None, None
    for directory in directories:
        config_file = directory / "config.json"
        if config_file.is_file():
            config = json.loads(config_file.read_text(encoding="utf-8"))
            if config.get("model_type") != base_config.get("model_type"):
                problems.append(f"{config_file}: model_type {config.get('model_type')!r}, the base model's is "
                                f"{base_config.get('model_type')!r}")
            if first_architectures is None:
                first_architectures = (config_file, config.get("architectures"))
            elif config.get("architectures") != first_architectures[1]:
                problems.append(f"{config_file}: architectures {config.get('architectures')} differ from "
                                f"{first_architectures[0]}'s {first_architectures[1]}")
        digests = file_digests(directory, TOKENIZER_FILES)
        if not digests:
            continue
        if first_tokenizer is None:
            first_tokenizer = (directory, digests)
            continue
        for name in sorted(digests.keys() | first_tokenizer[1].keys()):
            if digests.get(name) != first_tokenizer[1].get(name):
                problems.append(f"{directory / name}: tokenizer file differs from {first_tokenizer[0] / name} "
                                f"(missing from one, or other contents); the members must share one tokenizer")
    return problems


def tokenizer_directory(directories: list[Path]) -> Path | None:
    """The first checkpoint that carries tokenizer files, if any does."""
    return next((d for d in directories if file_digests(d, TOKENIZER_FILES)), None)


def adapter_config_problems(directory: Path, lora: dict, where: str) -> list[str]:
    """An adapter's rank, scaling and target modules against the base's model_catalog lora section."""
    config_file = directory / "adapter_config.json"
    if not config_file.is_file():
        return [f"{config_file}: missing (PEFT writes it beside adapter_model.safetensors)"]
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    pairs = (("r", saved.get("r"), "rank", lora["rank"]),
             ("lora_alpha", saved.get("lora_alpha"), "alpha", lora["alpha"]),
             ("target_modules", sorted(saved.get("target_modules") or []), "target_modules",
              sorted(lora["target_modules"])))
    return [f"{config_file}: {key} {value}, but {where}.lora.{field} is {expected}; set it to the adapters' value"
            for key, value, field, expected in pairs if value != expected]


def import_checkpoints(run, directories: list[Path], validation, out_dir) -> "pd.DataFrame":
    """Check a user's checkpoints against the run's model, then write them as the run's members (the files
    stage 2 writes: one member state each, members.json with checksums, trajectory.csv with each member's
    validation scores) and θ₀ for the task-vector merges; returns the trajectory.

    Every check runs before anything is written; all problems are raised together as one CheckpointError.
    θ₀ is the base model where the base sets a tensor, and the members' mean where the fine-tune's
    initialisation is unknown (a fresh head, LoRA's A matrices: whatever a load with another seed changes).
    """
    import pandas as pd
    import torch

    from ..io import write_csv
    from ..records import MemberManifest
    from ..sources import resolve_model_source
    from ..tasks.models import is_lora, load_member_state, member_state
    from .members import member_path, save_state_file

    model = run.load_model()
    initial = member_state(model)
    lora = is_lora(model)
    base_config = json.loads((Path(resolve_model_source(run.model_spec["source"])) / "config.json").read_text())
    problems = consistency_problems(directories, base_config)
    if lora:
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        expected = {name: t.shape for name, t in get_peft_model_state_dict(model).items()}
        where = f"model_catalog.{run.catalog_name}"
        problems += [p for d in directories for p in adapter_config_problems(d, run.model_spec["lora"], where)]
    else:
        expected = {name: t.shape for name, t in initial.items()}
    head = (f" (the head of task {run.task.name}: "
            f"{'one output' if run.task.is_regression else f'{run.task.num_labels} labels'})")
    for directory in directories:
        problems += tensor_problems(str(directory / _weights_name(directory)), read_checkpoint(directory),
                                    expected, head)
    tokenizers = tokenizer_directory(directories)
    if tokenizers is not None and not problems:
        from transformers import AutoTokenizer

        if AutoTokenizer.from_pretrained(tokenizers).get_vocab() != run.tokenizer.get_vocab():
            problems.append(f"{tokenizers}: its tokenizer's vocabulary differs from the base model's "
                            f"({run.model_spec['source']}); name the base the checkpoints were fine-tuned from")
    if problems:
        raise CheckpointError(f"{len(directories)} checkpoints of imported run '{run.model_name}' cannot be fused "
                              f"({len(problems)} problem(s)):\n" + "\n".join(f"  - {p}" for p in problems))

    reseeded = member_state(run.load_model(seed=run.seed + 1))
    unknown = {name: torch.zeros_like(t) for name, t in initial.items() if not torch.equal(t, reseeded[name])}
    out_dir = Path(out_dir)
    checksums, rows = {}, []
    # Each checkpoint is read again here rather than kept from the checks: one state in memory at a time.
    for index, directory in enumerate(directories):
        state = {name: t.to(torch.float32) if t.is_floating_point() else t
                 for name, t in read_checkpoint(directory).items()}
        if lora:
            set_peft_model_state_dict(model, state)
        else:
            load_member_state(model, state)
        member = member_state(model)
        for name, total in unknown.items():
            total += member[name] / len(directories)
        path = member_path(out_dir, index)
        checksums[path.name] = save_state_file(member, path)
        scores, _ = validation.evaluate(model, list(run.task.metrics), run.config["optim"]["eval_batch_size"],
                                        run.device)
        rows.append({"member": path.name, "step": checkpoint_step(directory), "checkpoint": str(directory),
                     **{f"val_{name}": value for name, value in scores.items()}})
        print(f"{directory} -> {path.name}: validation {scores}", flush=True)
    base_file = out_dir / "base.safetensors"
    trajectory = pd.DataFrame(rows)
    write_csv(out_dir / "trajectory.csv", trajectory)
    MemberManifest(checksums, steps=[row["step"] for row in rows], hyperparameters={}, seed=run.seed,
                   source=run.model_spec["source"], stored={}, imported=[str(d) for d in directories],
                   base={"file": base_file.name, "sha256": save_state_file(initial | unknown, base_file)}
                   ).write(out_dir)
    return trajectory


def _weights_name(directory: Path) -> str:
    if weights_kind(directory) == "adapter":
        return ADAPTER_WEIGHTS
    return FULL_WEIGHTS[0] if (directory / FULL_WEIGHTS[0]).is_file() else FULL_WEIGHTS[1]
