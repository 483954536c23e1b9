"""Task registry: what each task reads, predicts and is scored by.

Every reader of one task kind produces one example shape, so training, fusion and evaluation never look at
where a task came from:
- classification / regression: ``{"text": [one or two strings], "label": int | float}``;
- extractive_qa: ``{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}, "group"}``;
- generation: ``{"id", "source", "references": [...], "group"}``.
``group`` is what must not be split between train and validation (a SQuAD article, an E2E meaning
representation).
"""

import csv
import io
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """Bad input data; the message names the file and, where it applies, the line or column."""


TEXT_KINDS = ("extractive_qa", "generation")  # scored on text by ExampleMetrics, not on class ids


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # "classification" | "regression" | "extractive_qa" | "generation"
    labels: tuple[str, ...]  # classification: raw label values in class-id order; otherwise ()
    metrics: tuple[str, ...]  # the first is the primary metric
    prompt: str = ""  # generation: the prompt template, with one {source} field

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == "regression" else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"

    @property
    def is_text(self) -> bool:
        return self.kind in TEXT_KINDS


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


# Beyond GLUE: extractive QA with an encoder, generation with a causal LM (LoRA).
TEXT_TASKS: dict[str, TaskSpec] = {
    "squad_v2": TaskSpec("squad_v2", "extractive_qa", (), ("token_f1", "exact_match")),
    "samsum": TaskSpec("samsum", "generation", (), ("rouge1", "rouge2", "rougeL"),
                       prompt="Summarize the dialogue.\n{source}\nSummary:"),
    "e2e": TaskSpec("e2e", "generation", (), ("bleu", "rougeL"),
                    prompt="Describe the restaurant in one sentence.\n{source}\nDescription:"),
}
BUILTIN_TASKS: dict[str, TaskSpec] = {**GLUE_TASKS, **TEXT_TASKS}


def get_task(name: str, custom_tasks: dict | None = None) -> TaskSpec:
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    custom = (custom_tasks or {}).get(name)
    if custom is None:
        raise KeyError(f"unknown task {name!r}: not a built-in task ({', '.join(BUILTIN_TASKS)}) "
                       f"nor in custom_tasks")
    labels = tuple(str(v) for v in custom.get("labels", ())) if custom["kind"] == "classification" else ()
    return TaskSpec(name, custom["kind"], labels, tuple(custom["metrics"]))


def _label(spec: TaskSpec, raw, where: str) -> int | float:
    if spec.is_regression:
        # bool is an int to Python: JSON true must not become the score 1.0.
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise DataError(f"{where}: score {raw!r} is not a number")
        try:
            value = float(raw)
        except ValueError:
            raise DataError(f"{where}: score {raw!r} is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"{where}: score {value} is not a finite number")
        return value
    text = str(raw).strip()
    if text not in spec.labels:
        raise DataError(f"{where}: label {raw!r} is not one of the task's labels {list(spec.labels)}")
    return spec.labels.index(text)


def _present(value, where: str):
    """``value``, unless it is null or blank; ``where`` names the file, line and column."""
    if value is None:
        raise DataError(f"{where} is null")
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{where} is empty or only whitespace")
    return value


def read_text(path: Path, not_found: str) -> str:
    """The whole file as text, a UTF-8 BOM dropped; every failure names the file (and line)."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise DataError(f"{path}: {not_found}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        # Decoded whole and the BOM dropped after, so the error's offset is the file's byte offset.
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {err.start}); re-save it as UTF-8") from None


# Real documents exceed csv's default field limit of 128 KiB; 2**31 - 1 fits a C long on every platform.
_CSV_FIELD_LIMIT = 2**31 - 1


def csv_rows(path: Path, text: str, **dialect) -> list[tuple[int, list[str]]]:
    """(first line, fields) of every row of ``text``, blank rows included; a csv.Error names the row's line."""
    old_limit = csv.field_size_limit(_CSV_FIELD_LIMIT)  # process-wide, so restored below
    reader = csv.reader(io.StringIO(text, newline=""), **dialect)
    rows, line = [], 1
    try:
        for row in reader:
            rows.append((line, row))
            line = reader.line_num + 1  # a quoted field may span lines
    except csv.Error as err:
        raise DataError(f"{path}:{line}: bad CSV row ({err})") from None
    finally:
        csv.field_size_limit(old_limit)
    return rows


def read_glue_tsv(spec: TaskSpec, path: Path) -> list[dict]:
    """One split of a GLUE task in the official TSV layout (quoting disabled: the files hold stray quotes)."""
    fmt = GLUE_FORMATS[spec.name]
    text = read_text(path, f"GLUE file not found (expected <glue_dir>/{fmt.directory}/{path.name})")
    rows = csv_rows(path, text, delimiter="\t", quoting=csv.QUOTE_NONE)
    rows = rows[1:] if fmt.has_header else rows
    needed = max(*fmt.text_columns, fmt.label_column) + 1
    examples = []
    for line, row in rows:
        where = f"{path}:{line}"
        if len(row) < needed:
            raise DataError(f"{where}: expected at least {needed} tab-separated columns, found {len(row)}")
        texts = [_present(row[i], f"{where}: column {i + 1}") for i in fmt.text_columns]
        examples.append({"text": texts, "label": _label(spec, row[fmt.label_column], where)})
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
    text = read_text(path, "data file not found")
    wanted = [*text_columns, label_column]
    records = []
    if path.suffix == ".jsonl":
        for line, raw in enumerate(io.StringIO(text, newline=""), start=1):
            if raw.strip():
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{line}: invalid JSON ({err.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{line}: expected a JSON object with named columns")
                records.append((line, record))
    else:
        # strict: an unclosed quote is an error, not a field holding the rest of the file.
        rows = csv_rows(path, text, strict=True)
        header = rows[0][1] if rows else []
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise DataError(f"{path}:1: column name(s) {repeated} appear more than once in the header")
        for column in wanted:
            if column not in header:
                raise DataError(f"{path}: column {column!r} missing (columns: {header})")
        for line, row in rows[1:]:
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                raise DataError(f"{path}:{line}: {len(row)} fields, but the header has {len(header)}")
            records.append((line, dict(zip(header, row))))
    examples = []
    for line, record in records:
        for column in wanted:
            if column not in record:
                raise DataError(f"{path}:{line}: column {column!r} missing")
            _present(record[column], f"{path}:{line}: column {column!r}")
        label = _label(spec, record[label_column], f"{path}:{line}: column {label_column!r}")
        examples.append({"text": [str(record[c]) for c in text_columns], "label": label})
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def load_raw_splits(spec: TaskSpec, data_config: dict, custom_tasks: dict) -> tuple[list[dict], list[dict]]:
    """(train, test) of a task before the validation split: GLUE train and dev, a text task's splits (see
    ``TEXT_SOURCES``), or a custom pair of files."""
    if spec.name in TEXT_TASKS:
        return load_text_task(spec.name, data_config)
    if spec.name in custom_tasks:
        custom = custom_tasks[spec.name]
        read = lambda key: read_custom(spec, Path(custom[key]), custom["text_columns"], custom["label_column"])  # noqa: E731
        return read("train"), read("test")
    if data_config.get("glue_dir"):
        directory = Path(data_config["glue_dir"]) / GLUE_FORMATS[spec.name].directory
        return read_glue_tsv(spec, directory / "train.tsv"), read_glue_tsv(spec, directory / "dev.tsv")
    return read_glue_hub(spec, "train"), read_glue_hub(spec, "validation")



# Where a text task's data comes from: (config key of the local copy, its description, hub description).
TEXT_SOURCES = {
    "squad_v2": ("squad_v2_file", "train/validation carved by article out of the local SQuAD 2.0 dev articles; "
                 "test = `data.squad_test_articles` other articles of the same file", "hub: rajpurkar/squad_v2"),
    "samsum": ("samsum_dir", "train/validation carved out of SAMSum's validation split (no train split "
               "locally); test = SAMSum's test split", "hub: knkarthick/samsum"),
    "e2e": ("e2e_dir", "train/validation carved by meaning representation out of the E2E dev set (no train "
            "split locally); test = the E2E test set with references", "hub: tuetschek/e2e_nlg"),
}


def load_text_task(name: str, data_config: dict) -> tuple[list[dict], list[dict]]:
    """(train pool, test) of a text task: the hub's train and test splits, or the local copies' (see
    ``TEXT_SOURCES``: locally no train split exists, so the pool is another held-out split)."""
    from . import generation, qa

    local = data_config.get(TEXT_SOURCES[name][0])
    if name == "squad_v2":
        if not local:
            return qa.read_squad_hub("train"), qa.read_squad_hub("validation")
        return split_off_groups(qa.read_squad_json(Path(local)), data_config["squad_test_articles"],
                                data_config["split_seed"], Path(local))
    if name == "samsum":
        if not local:
            return generation.read_samsum_hub("train"), generation.read_samsum_hub("test")
        return generation.read_samsum(Path(local), "validation"), generation.read_samsum(Path(local), "test")
    if not local:
        return generation.read_e2e_hub("train"), generation.read_e2e_hub("test")
    directory = Path(local)
    return generation.read_e2e_csv(directory / "devset.csv"), generation.read_e2e_csv(directory / "testset_w_refs.csv")


def split_off_groups(examples: list[dict], count: int, seed: int, where: Path) -> tuple[list[dict], list[dict]]:
    """(rest, held out): ``count`` whole groups drawn with ``seed`` are held out, order kept within each part."""
    groups = list(dict.fromkeys(e["group"] for e in examples))
    if count >= len(groups):
        raise DataError(f"{where}: {len(groups)} groups (articles), so {count} cannot be held out for test "
                        f"and leave any for train and validation")
    held_out = set(random.Random(seed).sample(groups, count))
    return [e for e in examples if e["group"] not in held_out], [e for e in examples if e["group"] in held_out]
