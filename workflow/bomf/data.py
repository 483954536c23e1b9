"""Split protocol: validation for every selection step is carved out of train; the task's test split
(GLUE dev) is used only for reporting."""

import random
from pathlib import Path

from .io import write_json, write_jsonl
from .tasks import TaskSpec, load_raw_splits

SPLITS = ("train", "val", "test")


def make_splits(train: list[dict], test: list[dict], data_config: dict) -> dict[str, list[dict]]:
    """Seeded split: shuffle train, take ``val_size`` for validation, subsample the rest and the test set."""
    rng = random.Random(data_config["split_seed"])
    val_size = data_config["val_size"]
    if val_size >= len(train):
        raise ValueError(f"data.val_size={val_size} leaves no training examples (train has {len(train)})")
    shuffled = rng.sample(train, len(train))
    splits = {"train": shuffled[val_size:], "val": shuffled[:val_size], "test": test}
    for split, key in (("train", "max_train"), ("test", "max_test")):
        limit = data_config.get(key)
        if limit is not None and limit < len(splits[split]):
            splits[split] = rng.sample(splits[split], limit)
    return splits


def prepare_task_data(spec: TaskSpec, data_config: dict, custom_tasks: dict, out_dir: str | Path) -> dict:
    """Read a task, split it and write ``{train,val,test}.jsonl`` and ``split.json`` into ``out_dir``."""
    train, test = load_raw_splits(spec, data_config, custom_tasks)
    splits = make_splits(train, test, data_config)
    out_dir = Path(out_dir)
    for split in SPLITS:
        write_jsonl(out_dir / f"{split}.jsonl", splits[split])
    summary = {
        "task": spec.name,
        "source": _describe_source(spec, data_config, custom_tasks),
        "protocol": "validation carved out of train (seeded); test = the task's held-out split, reporting only",
        "split_seed": data_config["split_seed"],
        "raw_sizes": {"train": len(train), "test": len(test)},
        "sizes": {split: len(splits[split]) for split in SPLITS},
    }
    write_json(out_dir / "split.json", summary)
    return summary


def _describe_source(spec: TaskSpec, data_config: dict, custom_tasks: dict) -> str:
    if spec.name in custom_tasks:
        return f"custom: {custom_tasks[spec.name]['train']}, {custom_tasks[spec.name]['test']}"
    if data_config.get("glue_dir"):
        return f"local GLUE: {Path(data_config['glue_dir']).resolve()}"
    return "hub: nyu-mll/glue"
