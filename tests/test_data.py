"""Task readers and the split protocol, on the real GLUE files and on small hand-written files."""

import csv
import json
from pathlib import Path

import pytest
from conftest import GLUE_DIR

from bomf.io import read_json, read_jsonl
from bomf.tasks import data, readers
from bomf.tasks.data import SPLITS, make_splits, prepare_task_data
from bomf.tasks.readers import load_raw_splits, read_custom, read_glue_tsv
from bomf.tasks.registry import GLUE_FORMATS, GLUE_TASKS, DataError, get_task

# Official GLUE sizes (train, dev).
GLUE_SIZES = {"rte": (2490, 277), "mrpc": (3668, 408), "cola": (8551, 1043), "sst2": (67349, 872),
              "stsb": (5749, 1500)}


@pytest.fixture(scope="module")
def rte_raw():
    return load_raw_splits(GLUE_TASKS["rte"], {"glue_dir": str(GLUE_DIR)}, {})


# --------------------------------------------------------------------------- GLUE readers on the real files


@pytest.mark.parametrize("task", sorted(GLUE_SIZES))
def test_glue_loaders_give_official_row_counts(task):
    spec = get_task(task)
    train, dev = load_raw_splits(spec, {"glue_dir": str(GLUE_DIR)}, {})
    assert (len(train), len(dev)) == GLUE_SIZES[task]
    for example in train[:50] + dev[:50]:
        assert isinstance(example["text"], list)
        assert len(example["text"]) == len(GLUE_FORMATS[task].text_columns)
        assert all(isinstance(t, str) and t for t in example["text"])
    if spec.is_regression:
        labels = {e["label"] for e in train + dev}
        assert all(isinstance(v, float) for v in labels)
        assert min(labels) == 0.0 and max(labels) == 5.0
        assert len(labels) > 100  # real-valued scores, not classes
    else:
        assert {e["label"] for e in train} == {0, 1}
        assert {e["label"] for e in dev} == {0, 1}
        assert all(type(e["label"]) is int for e in train + dev)


def test_rte_label_mapping_matches_the_raw_file():
    """RTE: entailment -> 0, not_entailment -> 1, row by row against the raw TSV."""
    path = GLUE_DIR / "RTE" / "train.tsv"
    examples = read_glue_tsv(GLUE_TASKS["rte"], path)
    raw_rows = path.read_text(encoding="utf-8").splitlines()[1:]
    assert len(raw_rows) == len(examples)
    mapping = {"entailment": 0, "not_entailment": 1}
    for raw, example in zip(raw_rows[:200], examples[:200]):
        fields = raw.split("\t")
        assert example["text"] == [fields[1], fields[2]]
        assert example["label"] == mapping[fields[3]]
    assert examples[0]["label"] == 1 and examples[1]["label"] == 0  # not_entailment, entailment


def test_stsb_scores_are_the_raw_floats():
    path = GLUE_DIR / "STS-B" / "train.tsv"
    examples = read_glue_tsv(GLUE_TASKS["stsb"], path)
    assert examples[0] == {"text": ["A plane is taking off.", "An air plane is taking off."], "label": 5.0}
    assert examples[1]["label"] == pytest.approx(3.8)


def test_single_sentence_tasks_have_one_text():
    cola = read_glue_tsv(GLUE_TASKS["cola"], GLUE_DIR / "CoLA" / "dev.tsv")  # no header in CoLA
    assert len(cola) == 1043 and all(len(e["text"]) == 1 for e in cola)
    sst2 = read_glue_tsv(GLUE_TASKS["sst2"], GLUE_DIR / "SST-2" / "dev.tsv")
    assert len(sst2) == 872 and all(len(e["text"]) == 1 for e in sst2)


def test_task_specs():
    assert get_task("mrpc").primary_metric == "f1"
    assert get_task("cola").primary_metric == "mcc"
    assert get_task("stsb").num_labels == 1 and get_task("stsb").is_regression
    assert get_task("rte").num_labels == 2 and not get_task("rte").is_regression
    custom = get_task("mine", {"mine": {"kind": "classification", "labels": ["neg", "neu", "pos"],
                                        "metrics": ["accuracy"]}})
    assert custom.labels == ("neg", "neu", "pos") and custom.num_labels == 3
    with pytest.raises(KeyError, match="nope"):
        get_task("nope", {})


# --------------------------------------------------------------------------- the split protocol


def _indexed(n: int) -> list[dict]:
    return [{"text": [f"example {i}"], "label": i % 2, "id": i} for i in range(n)]


def test_make_splits_carves_val_from_train_without_overlap(rte_raw):
    train, test = rte_raw
    splits = make_splits(train, test, {"split_seed": 3, "val_size": 200})
    assert len(splits["val"]) == 200
    assert len(splits["train"]) == len(train) - 200
    val_ids = {id(e) for e in splits["val"]}
    train_ids = {id(e) for e in splits["train"]}
    assert not val_ids & train_ids
    assert val_ids | train_ids == {id(e) for e in train}  # nothing lost, nothing from test
    assert splits["test"] is test  # untouched without max_test
    assert splits["val"] != train[:200]  # shuffled, not the head of the file


def test_make_splits_is_seeded_and_deterministic():
    train, test = _indexed(100), _indexed(30)
    config = {"split_seed": 7, "val_size": 10, "max_train": 40, "max_test": 12}
    first = make_splits(train, test, config)
    second = make_splits(_indexed(100), _indexed(30), config)
    for split in SPLITS:
        assert [e["id"] for e in first[split]] == [e["id"] for e in second[split]]
    other = make_splits(train, test, {**config, "split_seed": 8})
    assert [e["id"] for e in other["val"]] != [e["id"] for e in first["val"]]


def test_make_splits_limits():
    train, test = _indexed(100), _indexed(30)
    splits = make_splits(train, test, {"split_seed": 0, "val_size": 10, "max_train": 40, "max_test": 12})
    assert [len(splits[s]) for s in SPLITS] == [40, 10, 12]
    train_ids = [e["id"] for e in splits["train"]]
    val_ids = [e["id"] for e in splits["val"]]
    assert len(set(train_ids)) == 40 and not set(train_ids) & set(val_ids)
    test_ids = [e["id"] for e in splits["test"]]
    assert len(set(test_ids)) == 12 and set(test_ids) <= set(range(30))
    # Limits larger than the data leave it whole.
    whole = make_splits(train, test, {"split_seed": 0, "val_size": 10, "max_train": 1000, "max_test": 1000})
    assert len(whole["train"]) == 90 and whole["test"] is test
    # The validation split does not depend on max_train / max_test.
    assert [e["id"] for e in whole["val"]] == val_ids


def test_make_splits_rejects_val_as_large_as_train():
    with pytest.raises(ValueError, match="val_size"):
        make_splits(_indexed(10), _indexed(5), {"split_seed": 0, "val_size": 10})


def test_prepare_task_data_writes_the_four_files(tmp_path, rte_raw):
    config = {"glue_dir": str(GLUE_DIR), "split_seed": 0, "val_size": 32, "max_train": 64, "max_test": 48}
    summary = prepare_task_data(GLUE_TASKS["rte"], config, {}, tmp_path / "rte")
    files = sorted(p.name for p in (tmp_path / "rte").iterdir())
    assert files == ["split.json", "test.jsonl", "train.jsonl", "val.jsonl"]
    written = read_json(tmp_path / "rte" / "split.json")
    assert written == summary
    assert written["sizes"] == {"train": 64, "val": 32, "test": 48}
    assert written["raw_sizes"] == {"train": 2490, "test": 277}
    assert written["task"] == "rte" and written["split_seed"] == 0
    assert written["source"] == f"local GLUE: {GLUE_DIR}"  # as configured: no machine path is resolved into it
    splits = {s: read_jsonl(tmp_path / "rte" / f"{s}.jsonl") for s in SPLITS}
    assert {s: len(v) for s, v in splits.items()} == written["sizes"]
    # What is written is exactly make_splits' output (JSON round trip of the same examples).
    expected = make_splits(*rte_raw, config)
    for split in SPLITS:
        assert splits[split] == expected[split]
    train_texts = {json.dumps(e["text"]) for e in splits["train"]}
    assert not train_texts & {json.dumps(e["text"]) for e in splits["val"]}


def test_split_records_a_relative_data_directory_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(GLUE_DIR.parent)
    config = {"glue_dir": GLUE_DIR.name, "split_seed": 0, "val_size": 8, "max_train": 16, "max_test": 8}
    summary = prepare_task_data(GLUE_TASKS["rte"], config, {}, tmp_path / "rte")
    assert summary["source"] == f"local GLUE: {GLUE_DIR.name}"


# --------------------------------------------------------------------------- custom tasks


def _custom(tmp_path: Path, train: Path, test: Path, **extra) -> dict:
    return {"mine": {"kind": "classification", "labels": ["neg", "pos"], "metrics": ["accuracy", "f1"],
                     "train": str(train), "test": str(test), "text_columns": ["premise", "hypothesis"],
                     "label_column": "gold", **extra}}


def test_custom_csv_and_jsonl_tasks(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text('id,premise,hypothesis,gold\n1,"A, quoted",B one,pos\n2,C,D,neg\n3,E,F, neg \n'
                     "4,G,H,pos\n", encoding="utf-8")
    test = tmp_path / "test.jsonl"
    test.write_text('{"premise": "x", "hypothesis": "y", "gold": "neg", "other": 1}\n\n'
                    '{"premise": "z", "hypothesis": 5, "gold": "pos"}\n', encoding="utf-8")
    custom = _custom(tmp_path, train, test)
    spec = get_task("mine", custom)
    loaded_train, loaded_test = load_raw_splits(spec, {"glue_dir": str(GLUE_DIR)}, custom)
    assert loaded_train == [{"text": ["A, quoted", "B one"], "label": 1}, {"text": ["C", "D"], "label": 0},
                            {"text": ["E", "F"], "label": 0}, {"text": ["G", "H"], "label": 1}]
    assert loaded_test == [{"text": ["x", "y"], "label": 0}, {"text": ["z", "5"], "label": 1}]

    summary = prepare_task_data(spec, {"split_seed": 1, "val_size": 1}, custom, tmp_path / "out")
    assert summary["sizes"] == {"train": 3, "val": 1, "test": 2}
    assert str(train) in summary["source"]


def test_custom_regression_jsonl(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text('{"s": "a", "y": 0.5}\n{"s": "b", "y": "2.25"}\n', encoding="utf-8")
    spec = get_task("reg", {"reg": {"kind": "regression", "metrics": ["pearson"]}})
    assert read_custom(spec, path, ["s"], "y") == [{"text": ["a"], "label": 0.5}, {"text": ["b"], "label": 2.25}]


# --------------------------------------------------------------------------- bad data names file and place


def test_missing_files(tmp_path):
    missing = tmp_path / "RTE" / "train.tsv"
    with pytest.raises(DataError, match="GLUE file not found") as err:
        read_glue_tsv(GLUE_TASKS["rte"], missing)
    assert str(missing) in str(err.value)
    with pytest.raises(DataError, match="not found") as err:
        load_raw_splits(GLUE_TASKS["rte"], {"glue_dir": str(tmp_path)}, {})
    assert str(missing) in str(err.value)
    with pytest.raises(DataError, match="data file not found") as err:
        read_custom(GLUE_TASKS["rte"], tmp_path / "absent.csv", ["a"], "b")
    assert "absent.csv" in str(err.value)


def test_missing_column_csv(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("premise,gold\nA,pos\n", encoding="utf-8")
    spec = get_task("mine", _custom(tmp_path, path, path))
    with pytest.raises(DataError) as err:
        read_custom(spec, path, ["premise", "hypothesis"], "gold")
    assert str(path) in str(err.value) and "'hypothesis'" in str(err.value)


def test_missing_column_jsonl_names_the_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"premise": "a", "gold": "pos"}\n{"gold": "neg"}\n', encoding="utf-8")
    spec = get_task("mine", _custom(tmp_path, path, path))
    with pytest.raises(DataError) as err:
        read_custom(spec, path, ["premise"], "gold")
    assert f"{path}:2" in str(err.value) and "'premise'" in str(err.value)


def test_jsonl_key_given_twice_names_the_line_and_key(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"premise": "a", "gold": "pos"}\n{"premise": "b", "gold": "pos", "gold": "neg"}\n',
                    encoding="utf-8")
    spec = get_task("mine", _custom(tmp_path, path, path))
    with pytest.raises(DataError) as err:
        read_custom(spec, path, ["premise"], "gold")
    assert str(err.value) == f"{path}:2: key(s) ['gold'] appear more than once in the object"


def test_invalid_json_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"premise": "a", "gold": "pos"}\n{"premise": "b", \n', encoding="utf-8")
    spec = get_task("mine", _custom(tmp_path, path, path))
    with pytest.raises(DataError, match="invalid JSON") as err:
        read_custom(spec, path, ["premise"], "gold")
    assert f"{path}:2" in str(err.value)


def test_label_outside_label_set_csv(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("premise,hypothesis,gold\nA,B,pos\nC,D,maybe\n", encoding="utf-8")
    spec = get_task("mine", _custom(tmp_path, path, path))
    with pytest.raises(DataError) as err:
        read_custom(spec, path, ["premise", "hypothesis"], "gold")
    message = str(err.value)
    assert f"{path}:3" in message and "'gold'" in message and "'maybe'" in message


def test_label_outside_label_set_glue_tsv(tmp_path):
    lines = (GLUE_DIR / "RTE" / "dev.tsv").read_text(encoding="utf-8").splitlines()[:6]
    fields = lines[4].split("\t")
    lines[4] = "\t".join([*fields[:3], "contradiction"])
    path = tmp_path / "dev.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_glue_tsv(GLUE_TASKS["rte"], path)
    assert f"{path}:5" in str(err.value) and "contradiction" in str(err.value)


def _stsb_copy(tmp_path: Path, line: int, score: str) -> Path:
    """A copy of the first lines of the real STS-B train file with the score of ``line`` (1-based) replaced."""
    lines = (GLUE_DIR / "STS-B" / "train.tsv").read_text(encoding="utf-8").splitlines()[:8]
    fields = lines[line - 1].split("\t")
    fields[9] = score
    lines[line - 1] = "\t".join(fields)
    directory = tmp_path / "glue" / "STS-B"
    directory.mkdir(parents=True)
    (directory / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (directory / "dev.tsv").write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")
    return directory / "train.tsv"


def test_stsb_score_not_a_number(tmp_path):
    path = _stsb_copy(tmp_path, 4, "n/a")
    with pytest.raises(DataError, match="not a number") as err:
        load_raw_splits(GLUE_TASKS["stsb"], {"glue_dir": str(tmp_path / "glue")}, {})
    assert f"{path}:4" in str(err.value) and "'n/a'" in str(err.value)


def test_stsb_score_nan(tmp_path):
    path = _stsb_copy(tmp_path, 3, "nan")
    with pytest.raises(DataError) as err:
        read_glue_tsv(GLUE_TASKS["stsb"], path)
    assert str(err.value) == f"{path}:3: score nan is not a finite number"


def test_short_row_names_the_line(tmp_path):
    lines = (GLUE_DIR / "RTE" / "dev.tsv").read_text(encoding="utf-8").splitlines()[:4]
    lines[2] = "\t".join(lines[2].split("\t")[:2])
    path = tmp_path / "dev.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="columns") as err:
        read_glue_tsv(GLUE_TASKS["rte"], path)
    assert f"{path}:3" in str(err.value)


@pytest.mark.parametrize("content", ["", "index\tsentence1\tsentence2\tlabel\n"])
def test_empty_glue_file(tmp_path, content):
    path = tmp_path / "train.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="no examples") as err:
        read_glue_tsv(GLUE_TASKS["rte"], path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name,content", [("empty.csv", ""), ("header.csv", "premise,gold\n"),
                                          ("empty.jsonl", ""), ("blank.jsonl", "\n\n")])
def test_empty_custom_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    spec = get_task("mine", _custom(tmp_path, path, path))
    with pytest.raises(DataError) as err:
        read_custom(spec, path, ["premise"], "gold")
    assert str(path) in str(err.value)


def test_non_utf8_csv(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("premise,gold\ncaf\u00e9 cr\u00e8me,pos\n".encode("latin-1"))
    spec = get_task("mine", _custom(tmp_path, path, path))
    with pytest.raises(DataError, match="UTF-8") as err:
        read_custom(spec, path, ["premise"], "gold")
    assert str(path) in str(err.value)


def test_non_utf8_glue_tsv(tmp_path):
    """The GLUE reader owes the same DataError as the custom reader for a file that is not UTF-8."""
    path = tmp_path / "train.tsv"
    path.write_bytes("index\tsentence1\tsentence2\tlabel\n0\tcaf\u00e9\tb\tentailment\n".encode("latin-1"))
    try:
        read_glue_tsv(GLUE_TASKS["rte"], path)
    except Exception as err:  # noqa: BLE001 - the type is what is checked
        raised = err
    else:
        raised = None
    assert isinstance(raised, DataError) and str(path) in str(raised), (
        f"PACKAGE BUG (bomf/readers.py read_glue_tsv): a non-UTF-8 GLUE file raised {type(raised).__name__}: "
        f"{raised} -- expected DataError naming {path}")


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"premise": "a", "gold": "pos"}\n["b", "neg"]\n', encoding="utf-8")
    spec = get_task("mine", _custom(tmp_path, path, path))
    try:
        read_custom(spec, path, ["premise"], "gold")
    except Exception as err:  # noqa: BLE001 - the type is what is checked
        raised = err
    else:
        raised = None
    assert isinstance(raised, DataError) and f"{path}:2" in str(raised), (
        f"PACKAGE BUG (bomf/readers.py read_custom): a JSONL line that is not an object raised "
        f"{type(raised).__name__}: {raised} -- expected DataError naming {path}:2")


@pytest.mark.parametrize("bad_test", [
    "premise,hypothesis,gold\nA,B,pos\nC,D,maybe\n",  # a label outside the label set, on the last line
    "premise,gold\nA,pos\n",  # a missing text column
    "premise,hypothesis,gold\n",  # an empty split
])
def test_bad_data_leaves_no_partial_outputs(tmp_path, bad_test):
    """Every split is read and checked before the first file is written, so a rerun never sees half a task."""
    train = tmp_path / "train.csv"
    train.write_text("premise,hypothesis,gold\nA,B,pos\nC,D,neg\nE,F,pos\n", encoding="utf-8")
    test = tmp_path / "test.csv"
    test.write_text(bad_test, encoding="utf-8")
    custom = _custom(tmp_path, train, test)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        prepare_task_data(get_task("mine", custom), {"split_seed": 0, "val_size": 1}, custom, out)
    assert str(test) in str(err.value)
    assert not out.exists() or not any(out.iterdir())


# --------------------------------------------------------------------------- the exact line a user sees


def _read_mine(path: Path, text_columns=("premise", "hypothesis")) -> list[dict]:
    return read_custom(get_task("mine", _custom(path.parent, path, path)), path, list(text_columns), "gold")


def _message(read, *args) -> str:
    with pytest.raises(DataError) as err:
        read(*args)
    return str(err.value)


REGRESSION = get_task("reg", {"reg": {"kind": "regression", "metrics": ["pearson"]}})


@pytest.mark.parametrize("name,content,shown", [
    ("scores.csv", "s,y\na,0.5\nb,inf\n", "score inf is not a finite number"),
    ("scores.csv", "s,y\na,0.5\nb,-inf\n", "score -inf is not a finite number"),
    ("scores.csv", "s,y\na,0.5\nb,NaN\n", "score nan is not a finite number"),
    ("scores.jsonl", '\n{"s": "a", "y": 0.5}\n{"s": "b", "y": Infinity}\n', "score inf is not a finite number"),
    ("scores.jsonl", '\n{"s": "a", "y": 0.5}\n{"s": "b", "y": NaN}\n', "score nan is not a finite number"),
    ("scores.jsonl", '\n{"s": "a", "y": 0.5}\n{"s": "b", "y": true}\n', "score True is not a number"),
    ("scores.jsonl", '\n{"s": "a", "y": 0.5}\n{"s": "b", "y": [1]}\n', "score [1] is not a number"),
])
def test_regression_score_must_be_a_finite_number(tmp_path, name, content, shown):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert _message(read_custom, REGRESSION, path, ["s"], "y") == f"{path}:3: column 'y': {shown}"


@pytest.mark.parametrize("row,count", [("E,F,neg,extra", 4), ("E,F", 2)])
def test_csv_row_needs_as_many_fields_as_the_header(tmp_path, row, count):
    path = tmp_path / "data.csv"
    # The quoted field spans two lines and the blank line is skipped: lines are the file's lines.
    path.write_text(f'premise,hypothesis,gold\n"A\na",B,pos\n\nC,D,neg\n{row}\n', encoding="utf-8")
    assert _message(_read_mine, path) == f"{path}:6: {count} fields, but the header has 3"


def test_csv_header_with_a_repeated_column(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("gold,premise,hypothesis,premise,gold\npos,A,B,C,neg\n", encoding="utf-8")
    assert _message(_read_mine, path) == (
        f"{path}:1: column name(s) ['gold', 'premise'] appear more than once in the header")


def test_empty_text_is_rejected(tmp_path):
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("premise,hypothesis,gold\nA,B,pos\nC, \t,neg\n", encoding="utf-8")
    assert _message(_read_mine, csv_path) == f"{csv_path}:3: column 'hypothesis' is empty or only whitespace"
    jsonl_path = tmp_path / "data.jsonl"
    jsonl_path.write_text('{"premise": "", "hypothesis": "h", "gold": "pos"}\n', encoding="utf-8")
    assert _message(_read_mine, jsonl_path) == f"{jsonl_path}:1: column 'premise' is empty or only whitespace"
    lines = (GLUE_DIR / "RTE" / "dev.tsv").read_text(encoding="utf-8").splitlines()[:4]
    fields = lines[2].split("\t")
    lines[2] = "\t".join([fields[0], fields[1], "", fields[3]])
    glue_path = tmp_path / "dev.tsv"
    glue_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _message(read_glue_tsv, GLUE_TASKS["rte"], glue_path) == (
        f"{glue_path}:3: column 3 is empty or only whitespace")


@pytest.mark.parametrize("record,shown", [
    ('{"premise": null, "hypothesis": "h", "gold": "pos"}', "column 'premise' is null"),
    ('{"premise": "p", "hypothesis": "h", "gold": null}', "column 'gold' is null"),
    ('{"premise": "p", "gold": "pos"}', "column 'hypothesis' missing"),
])
def test_null_column_is_told_apart_from_a_missing_one(tmp_path, record, shown):
    path = tmp_path / "data.jsonl"
    path.write_text('{"premise": "p", "hypothesis": "h", "gold": "pos"}\n' + record + "\n", encoding="utf-8")
    assert _message(_read_mine, path) == f"{path}:2: {shown}"
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("premise,hypothesis,gold\nA,B,\n", encoding="utf-8")
    assert _message(_read_mine, csv_path) == f"{csv_path}:2: column 'gold' is empty or only whitespace"


def test_utf8_bom_is_accepted(tmp_path):
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + "premise,hypothesis,gold\ncaf\u00e9,B,pos\n".encode("utf-8"))
    assert _read_mine(csv_path) == [{"text": ["caf\u00e9", "B"], "label": 1}]
    jsonl_path = tmp_path / "bom.jsonl"
    jsonl_path.write_bytes(b"\xef\xbb\xbf" + b'{"premise": "A", "hypothesis": "B", "gold": "neg"}\n')
    assert _read_mine(jsonl_path) == [{"text": ["A", "B"], "label": 0}]


def test_long_csv_field_loads(tmp_path):
    long_text = "word " * 60_000  # 300,000 characters, over csv's default limit of 131,072
    path = tmp_path / "long.csv"
    path.write_text(f'premise,hypothesis,gold\n"{long_text}",B,pos\n', encoding="utf-8")
    limit = csv.field_size_limit()
    assert _read_mine(path) == [{"text": [long_text, "B"], "label": 1}]
    assert csv.field_size_limit() == limit  # the process-wide limit is restored


def test_csv_error_names_the_line(tmp_path, monkeypatch):
    path = tmp_path / "data.csv"
    path.write_text('premise,hypothesis,gold\nA,B,pos\nC,"D unclosed,neg\nE,F,pos\n', encoding="utf-8")
    assert _message(_read_mine, path) == f"{path}:3: bad CSV row (unexpected end of data)"
    monkeypatch.setattr(readers, "_CSV_FIELD_LIMIT", 10)
    path.write_text("premise,hypothesis,gold\nA,B,pos\nC,longer than ten,neg\n", encoding="utf-8")
    assert _message(_read_mine, path) == f"{path}:3: bad CSV row (field larger than field limit (10))"


def test_non_utf8_names_the_line(tmp_path):
    raw = b"\xef\xbb\xbf" + "premise,gold\nA,pos\ncaf\u00e9,neg\n".encode("latin-1")
    offset = raw.index(b"\xe9")  # counted from the file's first byte, the BOM included
    for name in ("latin1.csv", "latin1.jsonl"):
        path = tmp_path / name
        path.write_bytes(raw)
        assert _message(_read_mine, path, ["premise"]) == (
            f"{path}:3: not UTF-8 text (byte {offset}); re-save it as UTF-8")
    path = tmp_path / "train.tsv"
    path.write_bytes("index\tsentence1\tsentence2\tlabel\n0\tcaf\u00e9\tb\tentailment\n".encode("latin-1"))
    assert _message(read_glue_tsv, GLUE_TASKS["rte"], path) == (
        f"{path}:2: not UTF-8 text (byte 37); re-save it as UTF-8")


def test_directory_is_not_a_file(tmp_path):
    directory = tmp_path / "data.csv"
    directory.mkdir()
    assert _message(_read_mine, directory) == f"{directory}: is a directory, not a file"
    glue = tmp_path / "glue"
    (glue / "RTE" / "train.tsv").mkdir(parents=True)
    assert _message(load_raw_splits, GLUE_TASKS["rte"], {"glue_dir": str(glue)}, {}) == (
        f"{glue / 'RTE' / 'train.tsv'}: is a directory, not a file")


def test_split_counts_held_out_texts_that_also_occur_in_train(tmp_path, capsys):
    train = tmp_path / "train.csv"
    # Every text three times: at most two copies fit in a validation split of two, so both are also in train.
    train.write_text("premise,hypothesis,gold\n" + "A,B,pos\nC,D,neg\nE,F,pos\n" * 3, encoding="utf-8")
    test = tmp_path / "test.csv"
    test.write_text("premise,hypothesis,gold\nA,B,neg\nA,X,pos\nB,A,neg\n", encoding="utf-8")
    custom = _custom(tmp_path, train, test)
    summary = prepare_task_data(get_task("mine", custom), {"split_seed": 0, "val_size": 2}, custom, tmp_path / "out")
    assert summary["duplicates"] == {"val_in_train": 2, "test_in_train": 1}  # the text, not the label, counts
    assert read_json(tmp_path / "out" / "split.json")["duplicates"] == summary["duplicates"]
    assert capsys.readouterr().out == "bomf warning: mine: 2 validation and 1 test examples also occur in train\n"

    test.write_text("premise,hypothesis,gold\nX,Y,pos\n", encoding="utf-8")
    train.write_text("premise,hypothesis,gold\nA,B,pos\nC,D,neg\nE,F,pos\n", encoding="utf-8")
    summary = prepare_task_data(get_task("mine", custom), {"split_seed": 0, "val_size": 1}, custom, tmp_path / "out")
    assert summary["duplicates"] == {"val_in_train": 0, "test_in_train": 0}
    assert capsys.readouterr().out == ""


def test_heavy_overlap_and_labels_never_in_train_are_warned_before_training(tmp_path, capsys):
    """More than half of test repeating train texts gets its own warning; a declared label no training example
    has (only in test, or nowhere) is named with the train file."""
    custom = _custom(tmp_path, tmp_path / "train.csv", tmp_path / "test.csv", labels=["neg", "pos", "maybe"])
    (tmp_path / "train.csv").write_text("premise,hypothesis,gold\n" + "A,B,pos\nC,D,pos\nE,F,pos\n" * 2)
    (tmp_path / "test.csv").write_text("premise,hypothesis,gold\nA,B,neg\nC,D,pos\nX,Y,pos\n")
    prepare_task_data(get_task("mine", custom), {"split_seed": 0, "val_size": 1}, custom, tmp_path / "out")
    assert capsys.readouterr().out.splitlines() == [
        f"bomf warning: mine: label 'neg' never occurs in the training data ({tmp_path}/train.csv; only in test), "
        f"so the model cannot learn to predict it; check the data or the task's labels",
        f"bomf warning: mine: label 'maybe' never occurs in the training data ({tmp_path}/train.csv; nor in test), "
        f"so the model cannot learn to predict it; check the data or the task's labels",
        "bomf warning: mine: 2 of 3 test examples (more than half) also occur in train, so test scores mostly "
        "measure memorisation; hold out a test set that does not repeat the training texts"]


@pytest.mark.parametrize("value, kind", [('{"a": 1}', "an object"), ('["one", "two"]', "a list")])
def test_a_jsonl_text_column_holding_a_structure_is_rejected(tmp_path, value, kind):
    path = tmp_path / "train.jsonl"
    path.write_text('{"premise": "fine", "hypothesis": "x", "gold": "pos"}\n'
                    f'{{"premise": "fine", "hypothesis": {value}, "gold": "pos"}}\n')
    assert _message(_read_mine, path) == (f"{path}:2: column 'hypothesis' holds {kind}, not text; a text column "
                                          f"holds a string (two texts are two text columns)")


@pytest.mark.parametrize("name", ["train.tsv", "train.json", "train.csv.gz", "train"])
def test_a_data_file_of_another_type_is_named(tmp_path, name):
    path = tmp_path / name
    path.write_text("premise,hypothesis,gold\nA,B,pos\n")
    suffix = path.suffix or "(no suffix)"
    assert _message(_read_mine, path) == (f"{path}: unsupported file type '{suffix}'; a custom task's files are "
                                          f".csv or .jsonl (in any case)")


def test_split_of_a_text_task_has_no_duplicate_count(tmp_path, monkeypatch):
    """QA and generation examples have no ``text`` list; their groups keep train and validation apart."""
    qa = [{"id": str(i), "question": "q", "context": "c", "answers": {"text": [], "answer_start": []},
           "group": f"article {i % 3}"} for i in range(6)]
    monkeypatch.setattr(data, "load_raw_splits", lambda *args: (qa, qa[:2]))
    summary = prepare_task_data(get_task("squad_v2"), {"split_seed": 0, "val_size": 2}, {}, tmp_path / "out")
    assert "duplicates" not in summary and summary["sizes"] == {"train": 4, "val": 2, "test": 2}
