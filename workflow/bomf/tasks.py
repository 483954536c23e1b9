"""Task registry: what each task reads, predicts and is scored by.

An example is ``{"text": [one or two strings], "label": int | float}``; every reader produces that shape,
so training, fusion and evaluation never look at where a task came from.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """Bad input data; the message names the file and, where it applies, the line or column."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # "classification" | "regression"
    labels: tuple[str, ...]  # classification: raw label values in class-id order; regression: ()
    metrics: tuple[str, ...]  # the first is the primary metric

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == "regression" else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"


@dataclass(frozen=True)
class GlueFormat:
    """Where a GLUE task's fields sit in its official TSV files and in the hub's nyu-mll/glue."""

    directory: str
    hub_config: str
    has_header: bool
    text_columns: tuple[int, ...]
    label_column: int


GLUE_TASKS: dict[str, TaskSpec] = {
    "rte": TaskSpec("rte", "classification", ("entailment", "not_entailment"), ("accuracy",)),
    "mrpc": TaskSpec("mrpc", "classification", ("0", "1"), ("f1", "accuracy")),
    "cola": TaskSpec("cola", "classification", ("0", "1"), ("mcc",)),
    "sst2": TaskSpec("sst2", "classification", ("0", "1"), ("accuracy",)),
    "stsb": TaskSpec("stsb", "regression", (), ("pearson", "spearman")),
}

GLUE_FORMATS: dict[str, GlueFormat] = {
    "rte": GlueFormat("RTE", "rte", True, (1, 2), 3),
    "mrpc": GlueFormat("MRPC", "mrpc", True, (3, 4), 0),
    "cola": GlueFormat("CoLA", "cola", False, (3,), 1),
    "sst2": GlueFormat("SST-2", "sst2", True, (0,), 1),
    "stsb": GlueFormat("STS-B", "stsb", True, (7, 8), 9),
}


def get_task(name: str, custom_tasks: dict | None = None) -> TaskSpec:
    if name in GLUE_TASKS:
        return GLUE_TASKS[name]
    custom = (custom_tasks or {}).get(name)
    if custom is None:
        raise KeyError(f"unknown task {name!r}: not a GLUE task ({', '.join(GLUE_TASKS)}) nor in custom_tasks")
    labels = tuple(str(v) for v in custom.get("labels", ())) if custom["kind"] == "classification" else ()
    return TaskSpec(name, custom["kind"], labels, tuple(custom["metrics"]))


def _label(spec: TaskSpec, raw, where: str) -> int | float:
    if spec.is_regression:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise DataError(f"{where}: score {raw!r} is not a number") from None
        if value != value:
            raise DataError(f"{where}: score is NaN")
        return value
    text = str(raw).strip()
    if text not in spec.labels:
        raise DataError(f"{where}: label {raw!r} is not one of the task's labels {list(spec.labels)}")
    return spec.labels.index(text)


def read_glue_tsv(spec: TaskSpec, path: Path) -> list[dict]:
    """One split of a GLUE task in the official TSV layout (quoting disabled: the files hold stray quotes)."""
    fmt = GLUE_FORMATS[spec.name]
    if not path.is_file():
        raise DataError(f"{path}: GLUE file not found (expected <glue_dir>/{fmt.directory}/{path.name})")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from None
    first_line = 2 if fmt.has_header else 1
    rows = rows[1:] if fmt.has_header else rows
    needed = max(*fmt.text_columns, fmt.label_column) + 1
    examples = []
    for line, row in enumerate(rows, start=first_line):
        where = f"{path}:{line}"
        if len(row) < needed:
            raise DataError(f"{where}: expected at least {needed} tab-separated columns, found {len(row)}")
        text = [row[i] for i in fmt.text_columns]
        examples.append({"text": text, "label": _label(spec, row[fmt.label_column], where)})
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def read_glue_hub(spec: TaskSpec, split: str) -> list[dict]:
    """One split of nyu-mll/glue from the Hugging Face hub (labels there are already class ids)."""
    from datasets import load_dataset

    fmt = GLUE_FORMATS[spec.name]
    dataset = load_dataset("nyu-mll/glue", fmt.hub_config, split=split)
    text_fields = [c for c in ("sentence1", "sentence2", "sentence", "question", "premise") if c in dataset.column_names]
    return [{"text": [row[c] for c in text_fields], "label": row["label"]} for row in dataset]


def read_custom(spec: TaskSpec, path: Path, text_columns: list[str], label_column: str) -> list[dict]:
    """A user's CSV or JSONL file with named text columns and a label column."""
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            if path.suffix == ".jsonl":
                records = []
                for line, raw in enumerate(handle, start=1):
                    if raw.strip():
                        try:
                            record = json.loads(raw)
                        except json.JSONDecodeError as err:
                            raise DataError(f"{path}:{line}: invalid JSON ({err.msg})") from None
                        if not isinstance(record, dict):
                            raise DataError(f"{path}:{line}: expected a JSON object with named columns")
                        records.append((line, record))
            else:
                reader = csv.DictReader(handle)
                records = [(line, row) for line, row in enumerate(reader, start=2)]
                columns = reader.fieldnames or []
                for column in [*text_columns, label_column]:
                    if column not in columns:
                        raise DataError(f"{path}: column {column!r} missing (columns: {columns})")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); re-save it as UTF-8") from None
    examples = []
    for line, record in records:
        where = f"{path}:{line}"
        for column in [*text_columns, label_column]:
            if record.get(column) is None:
                raise DataError(f"{where}: column {column!r} missing")
        label = _label(spec, record[label_column], f"{where}: column {label_column!r}")
        examples.append({"text": [str(record[c]) for c in text_columns], "label": label})
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def load_raw_splits(spec: TaskSpec, data_config: dict, custom_tasks: dict) -> tuple[list[dict], list[dict]]:
    """(train, test) of a task before the validation split: GLUE train and dev, or a custom pair of files."""
    if spec.name in custom_tasks:
        custom = custom_tasks[spec.name]
        read = lambda key: read_custom(spec, Path(custom[key]), custom["text_columns"], custom["label_column"])  # noqa: E731
        return read("train"), read("test")
    if data_config.get("glue_dir"):
        directory = Path(data_config["glue_dir"]) / GLUE_FORMATS[spec.name].directory
        return read_glue_tsv(spec, directory / "train.tsv"), read_glue_tsv(spec, directory / "dev.tsv")
    return read_glue_hub(spec, "train"), read_glue_hub(spec, "validation")

