"""Split protocol: validation for every selection step is carved out of train; the task's test split
(GLUE dev) is used only for reporting."""

import random
from pathlib import Path

from ..io import write_json, write_jsonl
from ..runtime import tell_user
from .kinds import kind_of
from .readers import TEXT_SOURCES, load_raw_splits
from .registry import TaskSpec

SPLITS = ("train", "val", "test")


def make_splits(train: list[dict], test: list[dict], data_config: dict) -> dict[str, list[dict]]:
    """Seeded split: shuffle train, take ``val_size`` for validation, subsample the rest and the test set.

    Examples with a ``group`` (a SQuAD article, an E2E meaning representation) are carved by whole groups,
    so no group is in both train and validation; ``val_size`` examples are drawn from the carved groups.
    """
    rng = random.Random(data_config["split_seed"])
    val_size = data_config["val_size"]
    if val_size >= len(train):
        raise ValueError(f"data.val_size={val_size} leaves no training examples (train has {len(train)})")
    if "group" in train[0]:
        train_part, val_part = _carve_groups(train, val_size, rng)
    else:
        shuffled = rng.sample(train, len(train))
        train_part, val_part = shuffled[val_size:], shuffled[:val_size]
    if not train_part:
        raise ValueError(f"data.val_size={val_size} takes every group of train for validation")
    splits = {"train": train_part, "val": val_part, "test": test}
    for split, key in (("train", "max_train"), ("test", "max_test")):
        limit = data_config.get(key)
        if limit is not None and limit < len(splits[split]):
            splits[split] = rng.sample(splits[split], limit)
    return splits


def _carve_groups(examples: list[dict], val_size: int, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """(train, validation): whole groups in a seeded order go to validation until it has ``val_size`` examples."""
    groups: dict[str, list[dict]] = {}
    for example in examples:
        groups.setdefault(example["group"], []).append(example)
    order = rng.sample(list(groups), len(groups))
    val: list[dict] = []
    taken = 0
    while len(val) < val_size:
        val += groups[order[taken]]
        taken += 1
    return [e for name in order[taken:] for e in groups[name]], rng.sample(val, val_size)


def prepare_task_data(spec: TaskSpec, data_config: dict, custom_tasks: dict, out_dir: str | Path) -> dict:
    """Read a task, split it and write ``{train,val,test}.jsonl`` and ``split.json`` into ``out_dir``."""
    train, test = load_raw_splits(spec, data_config, custom_tasks)
    if spec.kind == "classification":
        where = custom_tasks[spec.name]["train"] if spec.name in custom_tasks else _describe_source(
            spec, data_config, custom_tasks)
        _warn_unlearnable_labels(spec, train, test, where)
    splits = make_splits(train, test, data_config)
    out_dir = Path(out_dir)
    for split in SPLITS:
        write_jsonl(out_dir / f"{split}.jsonl", splits[split])
    summary = {
        "task": spec.name,
        "source": _describe_source(spec, data_config, custom_tasks),
        "protocol": _describe_protocol(spec, data_config),
        "split_seed": data_config["split_seed"],
        "raw_sizes": {"train": len(train), "test": len(test)},
        "sizes": {split: len(splits[split]) for split in SPLITS},
        "trivial": _trivial(spec, splits["train"]),
    }
    duplicates = _duplicates(splits)
    if duplicates is not None:
        summary["duplicates"] = duplicates
        test_size = len(splits["test"])
        if duplicates["test_in_train"] > test_size / 2:  # the test score mostly measures memorisation
            tell_user(f"{spec.name}: {duplicates['test_in_train']} of {test_size} test examples (more than half) "
                      f"also occur in train, so test scores mostly measure memorisation; hold out a test set "
                      f"that does not repeat the training texts")
        elif any(duplicates.values()):
            tell_user(f"{spec.name}: {duplicates['val_in_train']} validation and {duplicates['test_in_train']} "
                      f"test examples also occur in train")
    write_json(out_dir / "split.json", summary)
    return summary


def _trivial(spec: TaskSpec, train: list[dict]) -> dict | None:
    """The kind's trivial answer from train (None where the kind has none): the tables score it on test."""
    trivial = kind_of(spec).trivial
    return None if trivial is None else {"name": trivial.name, "answer": trivial.of(train)}


def _duplicates(splits: dict[str, list[dict]]) -> dict[str, int] | None:
    """How many validation and test examples have exactly the text of a train example: repeated texts in
    the source data leak train into the held-out splits, and no split by shuffling can prevent it."""
    if "text" not in splits["train"][0]:
        return None  # QA and generation examples: kept apart by ``group`` instead
    train = {tuple(e["text"]) for e in splits["train"]}
    return {f"{split}_in_train": sum(tuple(e["text"]) in train for e in splits[split]) for split in ("val", "test")}


def _warn_unlearnable_labels(spec: TaskSpec, train: list[dict], test: list[dict], where: str) -> None:
    """A declared label no training example has: the model cannot learn it (``where``: the training data)."""
    in_train = {example["label"] for example in train}
    in_test = {example["label"] for example in test}
    for index, label in enumerate(spec.labels):
        if index not in in_train:
            tell_user(f"{spec.name}: label {label!r} never occurs in the training data ({where}; "
                      f"{'only in test' if index in in_test else 'nor in test'}), so the model cannot learn "
                      f"to predict it; check the data or the task's labels")


def _describe_protocol(spec: TaskSpec, data_config: dict) -> str:
    if spec.name in TEXT_SOURCES and data_config.get(TEXT_SOURCES[spec.name][0]):
        return TEXT_SOURCES[spec.name][1] + "; reporting only on test"
    return "validation carved out of train (seeded); test = the task's held-out split, reporting only"


def _describe_source(spec: TaskSpec, data_config: dict, custom_tasks: dict) -> str:
    if spec.name in TEXT_SOURCES:
        key, _, hub = TEXT_SOURCES[spec.name]
        return f"local: {data_config[key]}" if data_config.get(key) else hub
    if spec.name in custom_tasks:
        return f"custom: {custom_tasks[spec.name]['train']}, {custom_tasks[spec.name]['test']}"
    if data_config.get("glue_dir"):
        return f"local GLUE: {data_config['glue_dir']}"
    return "hub: nyu-mll/glue"
