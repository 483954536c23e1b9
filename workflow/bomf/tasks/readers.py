"""Reading a task's raw data: GLUE TSV files (or the hub), a user's CSV/JSONL files, SQuAD 2.0 JSON, SAMSum and
E2E, each into its kind's example shape (see ``tasks``). Every failure is a ``DataError`` naming the file and,
where it applies, the line or column.
"""

import csv
import io
import json
import math
import random
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from .registry import GLUE_FORMATS, TEXT_TASKS, DataError, TaskSpec

SAMSUM_COLUMNS = ("id", "dialogue", "summary")
E2E_CSV_COLUMNS = ("mr", "ref")


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


# A custom task's file types, by suffix (any case).
CUSTOM_FORMATS = (".csv", ".jsonl")


def custom_format(path: Path) -> str:
    """".csv" or ".jsonl", from ``path``'s suffix in any case; any other suffix is a DataError naming it."""
    suffix = path.suffix.lower()
    if suffix not in CUSTOM_FORMATS:
        raise DataError(f"{path}: unsupported file type '{path.suffix or '(no suffix)'}'; a custom task's files "
                        f"are {' or '.join(CUSTOM_FORMATS)} (in any case)")
    return suffix


def read_custom(spec: TaskSpec, path: Path, text_columns: list[str], label_column: str) -> list[dict]:
    """A user's CSV or JSONL file with named text columns and a label column."""
    file_format = custom_format(path)
    text = read_text(path, "data file not found")
    wanted = [*text_columns, label_column]
    records = []
    if file_format == ".jsonl":
        for line, raw in enumerate(io.StringIO(text, newline=""), start=1):
            if raw.strip():
                try:
                    record = json.loads(raw, object_pairs_hook=partial(_unique_keys, f"{path}:{line}"))
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
        for column in text_columns:
            # str() would train on a structure's Python repr ("{'a': 1}").
            if isinstance(record[column], (dict, list)):
                kind = "an object" if isinstance(record[column], dict) else "a list"
                raise DataError(f"{path}:{line}: column {column!r} holds {kind}, not text; a text column holds "
                                f"a string (two texts are two text columns)")
        label = _label(spec, record[label_column], f"{path}:{line}: column {label_column!r}")
        examples.append({"text": [str(record[c]) for c in text_columns], "label": label})
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def _unique_keys(where: str, pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's pairs as a dict; a key given twice is an error (json.loads would keep the last)."""
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise DataError(f"{where}: key(s) {repeated} appear more than once in the object")
    return dict(pairs)


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
    local = data_config.get(TEXT_SOURCES[name][0])
    if name == "squad_v2":
        if not local:
            return read_squad_hub("train"), read_squad_hub("validation")
        return split_off_groups(read_squad_json(Path(local)), data_config["squad_test_articles"],
                                data_config["split_seed"], Path(local))
    if name == "samsum":
        if not local:
            return read_samsum_hub("train"), read_samsum_hub("test")
        return read_samsum(Path(local), "validation"), read_samsum(Path(local), "test")
    if not local:
        return read_e2e_hub("train"), read_e2e_hub("test")
    directory = Path(local)
    return read_e2e_csv(directory / "devset.csv"), read_e2e_csv(directory / "testset_w_refs.csv")


def split_off_groups(examples: list[dict], count: int, seed: int, where: Path) -> tuple[list[dict], list[dict]]:
    """(rest, held out): ``count`` whole groups drawn with ``seed`` are held out, order kept within each part."""
    groups = list(dict.fromkeys(e["group"] for e in examples))
    if count >= len(groups):
        raise DataError(f"{where}: {len(groups)} groups (articles), so {count} cannot be held out for test "
                        f"and leave any for train and validation")
    held_out = set(random.Random(seed).sample(groups, count))
    return [e for e in examples if e["group"] not in held_out], [e for e in examples if e["group"] in held_out]


# ---------------------------------------------------------------------------------------- SQuAD 2.0


def read_squad_json(path: Path) -> list[dict]:
    """One split in the official SQuAD 2.0 JSON layout: one example per question, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: SQuAD file not found")
    try:
        with path.open(encoding="utf-8") as handle:
            document = json.load(handle)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    examples = []
    for article in _field(document, "data", f"{path}", list):
        title = _field(article, "title", f"{path}: an article", str)
        where = f"{path}: article {title!r}"
        for paragraph in _field(article, "paragraphs", where, list):
            context = _field(paragraph, "context", f"{where}: a paragraph", str)
            for question in _field(paragraph, "qas", f"{where}: a paragraph", list):
                examples.append(_example(question, context, title, where))
    if not examples:
        raise DataError(f"{path}: no questions")
    return examples


def _example(question: dict, context: str, title: str, where: str) -> dict:
    question_id = _field(question, "id", f"{where}: a question", str)
    where = f"{where}: question {question_id!r}"
    text = _field(question, "question", where, str)
    # An unanswerable question lists no answers (its "plausible_answers" are not gold).
    answers = [] if question.get("is_impossible", False) else _field(question, "answers", where, list)
    texts, starts = [], []
    for answer in answers:
        answer_text = _field(answer, "text", f"{where}: an answer", str)
        start = _field(answer, "answer_start", f"{where}: an answer", int)
        if start < 0 or context[start:start + len(answer_text)] != answer_text:
            raise DataError(f"{where}: answer {answer_text!r} does not match the context at answer_start {start} "
                            f"(found {context[max(start, 0):max(start, 0) + len(answer_text)]!r})")
        texts.append(answer_text)
        starts.append(start)
    return {"id": question_id, "question": text, "context": context,
            "answers": {"text": texts, "answer_start": starts}, "group": title}


def _field(record, key: str, where: str, kind: type):
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(record).__name__}")
    if key not in record:
        raise DataError(f"{where}: missing key {key!r}")
    value = record[key]
    # bool is an int to Python, never a valid offset or id.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{where}: {key!r} should be a {kind.__name__}, found {type(value).__name__}")
    return value


def read_squad_hub(split: str) -> list[dict]:
    """One split of rajpurkar/squad_v2 from the Hugging Face hub, in ``read_squad_json``'s shape."""
    from datasets import load_dataset

    dataset = load_dataset("rajpurkar/squad_v2", split=split)
    return [{"id": row["id"], "question": row["question"], "context": row["context"],
             "answers": {"text": list(row["answers"]["text"]), "answer_start": list(row["answers"]["answer_start"])},
             "group": row["title"]}
            for row in dataset]


# ----------------------------------------------------------------------------------- SAMSum and E2E


def read_samsum(directory: Path, split: str) -> list[dict]:
    """A SAMSum split saved with ``datasets.save_to_disk`` under ``directory / split``."""
    import datasets

    path = Path(directory) / split
    if not path.is_dir():
        raise DataError(f"{path}: SAMSum split directory not found")
    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError as error:
        raise DataError(f"{path}: not a dataset saved with datasets.save_to_disk ({error})") from None
    return _samsum_examples(dataset, str(path))


def read_samsum_hub(split: str) -> list[dict]:
    """A SAMSum split from the Hugging Face hub (needs network access)."""
    import datasets

    dataset = datasets.load_dataset("knkarthick/samsum", split=split)
    return _samsum_examples(dataset, f"hub knkarthick/samsum[{split}]")


def read_e2e_csv(path: Path) -> list[dict]:
    """An E2E NLG CSV (``mr``, ``ref``; one row per reference): one example per distinct meaning
    representation, in order of first appearance, with all its references."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: E2E CSV file not found")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in E2E_CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
        pairs = [(row["mr"], row["ref"]) for row in reader]
    return _group_by_meaning(pairs, str(path))


def read_e2e_hub(split: str) -> list[dict]:
    """An E2E NLG split from the Hugging Face hub (needs network access), grouped as ``read_e2e_csv``."""
    import datasets

    dataset = datasets.load_dataset("tuetschek/e2e_nlg", split=split)
    pairs = zip(dataset["meaning_representation"], dataset["human_reference"])
    return _group_by_meaning(pairs, f"hub tuetschek/e2e_nlg[{split}]")


def _samsum_examples(dataset, where: str) -> list[dict]:
    missing = [c for c in SAMSUM_COLUMNS if c not in dataset.column_names]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)} (columns: {dataset.column_names})")
    examples = []
    for row_number, row in enumerate(dataset, start=1):
        location = f"{where} row {row_number}"
        examples.append({
            "id": str(row["id"]),
            "source": _non_empty(row["dialogue"], location, "dialogue"),
            "references": [_non_empty(row["summary"], location, "summary")],
            "group": str(row["id"]),
        })
    return examples


def _group_by_meaning(pairs: Iterable[tuple[str, str]], where: str) -> list[dict]:
    references: dict[str, list[str]] = {}  # dicts keep insertion order: first appearance of each MR
    for row_number, (mr, ref) in enumerate(pairs, start=1):
        location = f"{where} row {row_number}"
        mr = _non_empty(mr, location, "mr")
        references.setdefault(mr, []).append(_non_empty(ref, location, "ref"))
    return [{"id": str(index), "source": mr, "references": refs, "group": mr}
            for index, (mr, refs) in enumerate(references.items())]


def _non_empty(value, location: str, field: str) -> str:
    text = (value or "").strip()
    if not text:
        raise DataError(f"{location}: empty {field}")
    return text
