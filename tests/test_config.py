"""Configuration validation: every bad config is rejected with a message naming the offending field."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, fill_data_placeholders

from bomf.config import ConfigError, job_settings, validate_config
from bomf.settings import run_methods

DEFAULT_CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
SHIPPED_CONFIGS = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "tests" / "configs").glob("*.yaml"))


@pytest.fixture(autouse=True)
def repo_workdir(monkeypatch):
    """Relative paths in a config resolve against the working directory: the repository, as for Snakemake."""
    monkeypatch.chdir(REPO)


def custom_task(tmp: Path, **overrides) -> dict:
    """A valid custom classification task whose files exist under ``tmp``; an override of None drops the key."""
    (tmp / "train.csv").write_text("sentence,label\n" + "fine,yes\nbad,no\n" * 150)  # > val_size 200
    (tmp / "test.csv").write_text("sentence,label\ngood,yes\nawful,no\n")
    task = {"train": str(tmp / "train.csv"), "test": str(tmp / "test.csv"), "text_columns": ["sentence"],
            "label_column": "label", "kind": "classification", "labels": ["no", "yes"], "metrics": ["accuracy"]}
    return {key: value for key, value in {**task, **overrides}.items() if value is not None}


def with_custom_task(config: dict, tmp: Path, **overrides) -> None:
    config["custom_tasks"]["mine"] = custom_task(tmp, **overrides)
    config["tasks"].append("mine")


def small_custom_task(config: dict, tmp: Path) -> None:
    with_custom_task(config, tmp)
    (tmp / "train.csv").write_text("sentence,label\n" + "fine,yes\n" * 150)


def malformed_model_config(config: dict, tmp: Path) -> None:
    (tmp / "config.json").write_text('{"model_type": "bert",\n "num_hidden_layers": 6,,}')
    minilm(config)["source"] = str(tmp)


def space(config: dict, name: str) -> dict:
    return config["hpo"]["space"][name]


def minilm(config: dict) -> dict:
    """Run only the default MiniLM (6 layers, 512 positions; a pypi: source) and return its catalog entry."""
    config["models"] = ["minilm"]
    return config["model_catalog"]["minilm"]


def smollm2(config: dict) -> dict:
    """Run SAMSum with the default SmolLM2 (LoRA) and return its catalog entry."""
    config.update(tasks=["samsum"], models=["smollm2"])
    return config["model_catalog"]["smollm2"]


def too_few_member_steps(config: dict) -> None:
    """40 examples at batch size up to 32: 2 steps an epoch, 6 in 3 epochs, 3 in the second half < 5 members."""
    config["data"]["max_train"] = 40
    space(config, "batch_size")["high"] = 32
    config["finetune"].update(epochs=3, members=5, start_fraction=0.5)


def case(name: str, mutate, expected: str):
    """A bad config: ``mutate(config, tmp_path)`` breaks the default config; the error must contain
    ``expected`` (in which {tmp} stands for tmp_path)."""
    return pytest.param(mutate, expected, id=name)


BAD_CONFIGS = [
    case("unknown-task", lambda c, t: c["tasks"].append("squad"), "tasks: unknown task 'squad'"),
    case("unknown-metric", lambda c, t: with_custom_task(c, t, metrics=["bleu"]),
         "custom_tasks.mine.metrics: 'bleu'"),
    case("metric-wrong-kind", lambda c, t: with_custom_task(c, t, kind="regression", labels=None, metrics=["f1"]),
         "custom_tasks.mine.metrics: 'f1' is not a regression metric"),
    case("regression-with-labels", lambda c, t: with_custom_task(c, t, kind="regression", metrics=["pearson"]),
         "custom_tasks.mine.labels: a regression task has no labels"),
    case("classification-without-labels", lambda c, t: with_custom_task(c, t, labels=None),
         "custom_tasks.mine.labels: a classification task needs"),
    case("unquoted-yes-no-labels", lambda c, t: with_custom_task(c, t, labels=[False, True]),
         "config field 'custom_tasks.mine.labels.0': False is not of type"),
    case("custom-task-file-missing", lambda c, t: with_custom_task(c, t, train=str(t / "absent.csv")),
         "custom_tasks.mine.train: file"),
    case("custom-task-glue-name", lambda c, t: c["custom_tasks"].update(rte=custom_task(t)), "custom_tasks.rte:"),
    case("misspelled-top-level-key", lambda c, t: c.update(seed=c.pop("seeds")), "unknown key 'seed'"),
    case("misspelled-nested-key", lambda c, t: c["hpo"].update(epohcs=c["hpo"].pop("epochs")),
         "unknown key 'hpo.epohcs' (did you mean 'hpo.epochs'?)"),
    case("misspelled-model-key", lambda c, t: minilm(c).update(sorce="x"),
         "unknown key 'model_catalog.minilm.sorce'"),
    case("missing-required-key", lambda c, t: c["fusion"].pop("evaluations"), "missing key 'fusion.evaluations'"),
    case("zero-hpo-rounds", lambda c, t: c["hpo"].update(rounds=0), "config field 'hpo.rounds': 0 is less than"),
    case("negative-fusion-evaluations", lambda c, t: c["fusion"].update(evaluations=-3),
         "config field 'fusion.evaluations': -3 is less than"),
    case("lr-bounds-reversed", lambda c, t: space(c, "learning_rate").update(low=1e-3, high=1e-5),
         "hpo.space.learning_rate: low (0.001) must be below high (1e-05)"),
    case("lr-low-non-positive", lambda c, t: space(c, "learning_rate").update(low=-1),
         "config field 'hpo.space.learning_rate.low': -1 is less than or equal to the minimum of 0"),
    case("log-scale-low-zero",
         lambda c, t: c["hpo"]["space"].update(weight_decay={"low": 0, "high": 0.2, "log": True}),
         "hpo.space.weight_decay.low: a log scale needs low > 0"),
    case("batch-size-not-integer", lambda c, t: space(c, "batch_size").update(low=8.5),
         "config field 'hpo.space.batch_size.low': 8.5 is not of type 'integer'"),
    case("unknown-search-parameter", lambda c, t: c["hpo"]["space"].update(dropout={"low": 0, "high": 0.1}),
         "unknown key 'hpo.space.dropout'"),
    case("schedule-not-in-enum", lambda c, t: c["optim"].update(schedule="cosin"),
         "config field 'optim.schedule'"),
    case("too-many-frozen-layers", lambda c, t: minilm(c).update(proxy_frozen_layers=6),
         "model_catalog.minilm.proxy_frozen_layers: 6 would freeze every layer of the model (it has 6)"),
    case("max-length-beyond-positions", lambda c, t: minilm(c).update(max_length=1024),
         "model_catalog.minilm.max_length: 1024 exceeds"),
    case("one-member", lambda c, t: c["finetune"].update(members=1),
         "config field 'finetune.members': 1 is less than"),
    case("start-fraction-one", lambda c, t: c["finetune"].update(start_fraction=1.0),
         "config field 'finetune.start_fraction'"),
    case("members-without-steps", lambda c, t: too_few_member_steps(c), "finetune.members: 5 members need"),
    case("missing-glue-dir", lambda c, t: c["data"].update(glue_dir=str(t / "glue")),
         "data.glue_dir: directory '{tmp}/glue' not found"),
    case("glue-task-files-missing", lambda c, t: (c.update(tasks=["sst2"]), c["data"].update(glue_dir=str(t))),
         "data.glue_dir: '{tmp}/SST-2/train.tsv' not found (needed by task sst2)"),
    case("model-path-missing", lambda c, t: minilm(c).update(source=str(t / "no-model")),
         "model_catalog.minilm.source:"),
    case("relative-model-path-missing", lambda c, t: minilm(c).update(source="./no-model"),
         "model_catalog.minilm.source:"),
    case("model-not-in-catalog", lambda c, t: c["models"].append("bert"),
         "models: 'bert' is not in model_catalog"),
    case("unknown-selection-rule", lambda c, t: c["fusion"].update(selection="median"),
         "fusion.selection: unknown rule 'median'"),
    case("empty-seeds", lambda c, t: c.update(seeds=[]), "config field 'seeds': [] should be non-empty"),
    case("duplicate-seeds", lambda c, t: c.update(seeds=[0, 0]), "config field 'seeds': [0, 0] has non-unique"),
    case("empty-tasks", lambda c, t: c.update(tasks=[]), "tasks: empty while models is not, so nothing would be"),
    case("nothing-to-run", lambda c, t: c.update(tasks=[], models=[]), "tasks, models: nothing to run"),
    case("unknown-fusion-method", lambda c, t: c["fusion"]["methods"].append("fisher_merge"),
         "fusion.methods: unknown method 'fisher_merge'"),
    case("ema-without-its-average", lambda c, t: c["finetune"].update(ema_decay=None),
         "fusion.methods: ema needs the average stage 2 keeps; set finetune.ema_decay"),
    case("export-of-a-method-not-run", lambda c, t: c.setdefault("export", {}).update(methods=["bo_loss"]),
         "export.methods: 'bo_loss' is not run"),
    case("merge-grid-empty", lambda c, t: c["fusion"].update(ties_densities=[]), "config field 'fusion.ties_densities'"),
    case("dare-drops-everything", lambda c, t: c["fusion"].update(dare_drop_rates=[1.0]),
         "config field 'fusion.dare_drop_rates"),
    case("initial-points-over-evaluations", lambda c, t: c["fusion"].update(initial_points=20, evaluations=10),
         "fusion.initial_points: 20 exceeds fusion.evaluations (10)"),
    case("unknown-baseline", lambda c, t: c["baselines"].update(methods=["ties"]),
         "config field 'baselines.methods.0': 'ties' is not one of"),
    case("grid-freezes-every-layer",
         lambda c, t: (minilm(c), c["baselines"].update(methods=["grid_finetune"], grid={"frozen_layers": [6]})),
         "baselines.grid.frozen_layers: 6 would freeze every layer of model 'minilm' (it has 6)"),
    case("grid-batch-without-member-steps",
         lambda c, t: c["baselines"].update(methods=["grid_finetune"], grid={"batch_sizes": [512]}),
         "batch size up to 512"),
    case("grid-learning-rate-zero", lambda c, t: c["baselines"].update(grid={"learning_rates": [0.0]}),
         "config field 'baselines.grid.learning_rates.0': 0.0 is less than or equal to the minimum of 0"),
    case("landscape-range-reversed", lambda c, t: c.update(figures={"landscape": {"low": 1.0, "high": 0.0}}),
         "figures.landscape: low (1.0) must be below high (0.0)"),
    case("landscape-needs-three-members", lambda c, t: c["finetune"].update(members=2),
         "figures.landscape: the plane needs three members, finetune.members is 2"),
    case("too-few-bootstrap-resamples", lambda c, t: c.update(tables={"bootstrap_resamples": 10}),
         "config field 'tables.bootstrap_resamples': 10 is less than the minimum of 100"),
    case("generation-task-on-encoder", lambda c, t: c.update(tasks=["samsum"]),
         "model_catalog.minilm.lora: generation tasks (samsum) fine-tune a causal LM with LoRA"),
    case("lora-on-encoder-task", lambda c, t: minilm(c).update(lora={"rank": 8, "proxy_rank": 4}),
         "model_catalog.minilm.lora: LoRA is for causal LMs on generation tasks"),
    case("proxy-rank-above-rank", lambda c, t: (smollm2(c)["lora"].update(rank=4, proxy_rank=8)),
         "model_catalog.smollm2.lora.proxy_rank: 8 exceeds rank 4"),
    case("missing-samsum-dir", lambda c, t: (smollm2(c), c["data"].update(samsum_dir=str(t / "samsum"))),
         "data.samsum_dir: '{tmp}/samsum' not found"),
    case("missing-squad-file", lambda c, t: c.update(tasks=["squad_v2"], data={**c["data"], "squad_v2_file": "x.json"}),
         "data.squad_v2_file: 'x.json' not found"),
    case("lora-without-rank", lambda c, t: smollm2(c)["lora"].pop("rank"), "missing key 'model_catalog.smollm2.lora.rank'"),
    case("implied-initial-points-over-evaluations",
         lambda c, t: (c["finetune"].update(members=5), c["fusion"].update(initial_points=None, evaluations=4)),
         "fusion.initial_points: 5 (null: one per finetune.members) exceeds fusion.evaluations (4)"),
    case("custom-task-path-is-a-directory", lambda c, t: with_custom_task(c, t, test=str(t)),
         "custom_tasks.mine.test: '{tmp}' is a directory, not a file"),
    case("custom-task-column-absent", lambda c, t: with_custom_task(c, t, text_columns=["premise"]),
         "custom_tasks.mine.train: '{tmp}/train.csv' has no column 'premise' (columns: 'sentence', 'label')"),
    case("custom-task-smaller-than-validation", small_custom_task,
         "data.val_size: 200 validation examples are carved out of custom_tasks.mine.train ('{tmp}/train.csv'), "
         "which has 150; lower data.val_size"),
    case("custom-task-labels-ambiguous", lambda c, t: with_custom_task(c, t, labels=[1, "1"]),
         "custom_tasks.mine.labels: '1' given more than once"),
    case("model-config-json-malformed", malformed_model_config,
         "model_catalog.minilm.source: {tmp}/config.json is not valid JSON (line 2: Expecting property name"),
    case("method-seeds-run-nowhere", lambda c, t: c.update(method_seeds={"hpbo_full": [7]}),
         "method_seeds.hpbo_full: none of [7] is among the runs' seeds [0], so hpbo_full would run nowhere"),
    case("method-seeds-unknown-method", lambda c, t: c.update(method_seeds={"twa": [0]}),
         "method_seeds.twa: not among fusion.methods or baselines.methods"),
    case("output-dir-leaves-the-working-directory", lambda c, t: c.update(output_dir="results/../.."),
         "config field 'output_dir'"),
    case("absolute-output-dir", lambda c, t: c.update(output_dir="/tmp/results"), "config field 'output_dir'"),
    case("test-file-is-the-train-file", lambda c, t: with_custom_task(c, t, test=str(t / "train.csv")),
         "custom_tasks.mine.test: '{tmp}/train.csv' is the train file; the test split must be held out from "
         "training"),
    case("test-file-copies-the-train-file", lambda c, t: set_file(c, t, "test", "train.csv", "test.csv"),
         "custom_tasks.mine.test: '{tmp}/test.csv' has the same content as custom_tasks.mine.train "
         "('{tmp}/train.csv')"),
    case("tsv-data-file", lambda c, t: set_file(c, t, "train", "train.csv", "train.tsv"),
         "custom_tasks.mine.train: {tmp}/train.tsv: unsupported file type '.tsv'; a custom task's files are .csv "
         "or .jsonl (in any case)"),
    case("gzip-data-file", lambda c, t: set_file(c, t, "test", "test.csv", "test.csv.gz"),
         "custom_tasks.mine.test: {tmp}/test.csv.gz: unsupported file type '.gz'"),
    case("json-array-data-file", lambda c, t: set_file(c, t, "test", "test.csv", "test.json"),
         "custom_tasks.mine.test: {tmp}/test.json: unsupported file type '.json'"),
    case("header-only-test-file",
         lambda c, t: (with_custom_task(c, t), (t / "test.csv").write_text("sentence,label\n")),
         "custom_tasks.mine.test: '{tmp}/test.csv' has a header but no examples"),
    case("empty-train-file", lambda c, t: (with_custom_task(c, t), (t / "train.csv").write_text("\n")),
         "custom_tasks.mine.train: '{tmp}/train.csv' is empty"),
    case("empty-jsonl-test-file", lambda c, t: set_file(c, t, "test", None, "test.jsonl"),
         "custom_tasks.mine.test: '{tmp}/test.jsonl' is empty"),
    case("fusion-evaluations-absurd", lambda c, t: c["fusion"].update(evaluations=1000000),
         "config field 'fusion.evaluations': 1000000 is greater than the maximum of 1000 (each scores a fused model "
         "on the validation split and the GP refits on all of them (cubic in their number); the paper uses 5N = 75)"),
    case("members-absurd", lambda c, t: c["finetune"].update(members=5000),
         "config field 'finetune.members': 5000 is greater than the maximum of 100 (each member is a checkpoint"),
    case("hpo-rounds-absurd", lambda c, t: c["hpo"].update(rounds=10**6),
         "config field 'hpo.rounds': 1000000 is greater than the maximum of 100"),
    case("landscape-absurd", lambda c, t: c.update(figures={"landscape": {"size": 1000}}),
         "config field 'figures.landscape.size': 1000 is greater than the maximum of 101 (the grid's size² points"),
    case("integer-in-yaml-1.2-float-syntax", lambda c, t: c["hpo"].update(rounds="1e3"),
         "config field 'hpo.rounds': '1e3' is not of type 'integer'"),
]


def set_file(config: dict, tmp: Path, split: str, source: str | None, name: str) -> None:
    """The custom task with its ``split`` file replaced by ``tmp / name``, a copy of its file ``source`` (an
    empty file for None)."""
    with_custom_task(config, tmp)
    (tmp / name).write_bytes((tmp / source).read_bytes() if source else b"")
    config["custom_tasks"]["mine"][split] = str(tmp / name)


@pytest.mark.parametrize("mutate, expected", BAD_CONFIGS)
def test_bad_config_names_the_field(mutate, expected, tmp_path):
    config = copy.deepcopy(DEFAULT_CONFIG)
    mutate(config, tmp_path)
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert expected.format(tmp=tmp_path) in str(error.value)


def test_every_semantic_problem_is_reported_at_once():
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["tasks"].append("squad")
    config["fusion"]["selection"] = "median"
    space(config, "batch_size").update(low=64, high=8)
    with pytest.raises(ConfigError, match=r"\(3 problems\)") as error:
        validate_config(config)
    message = str(error.value)
    for expected in ("tasks: unknown task", "fusion.selection:", "hpo.space.batch_size: low"):
        assert expected in message


def test_default_config_validates_and_gets_defaults():
    config = copy.deepcopy(DEFAULT_CONFIG)
    del config["optim"], config["fusion"]["selection"], config["seeds"], config["finetune"]["start_fraction"]
    validated = validate_config(config)
    assert validated is config
    assert config["optim"]["schedule"] == DEFAULT_CONFIG["optim"]["schedule"]
    assert config["optim"]["adam_betas"] == DEFAULT_CONFIG["optim"]["adam_betas"]
    assert config["fusion"]["selection"] == "best_metric"
    assert config["seeds"] == [0]
    assert config["finetune"]["start_fraction"] == 0.5
    assert config["hpo"]["space"]["batch_size"]["log"] is False


def test_methods_run_on_their_method_seeds_only():
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["seeds"] = [0, 1]
    config["method_seeds"] = {"grid_finetune": [1], "hpbo_full": [1], "swa": [0]}
    validate_config(config)
    fusion = config["fusion"]["methods"]
    seed0, seed1 = {"model": "minilm", "seed": 0}, {"model": "minilm", "seed": "1"}  # a wildcard's string
    assert run_methods(config, seed0) == [*fusion, "oracle_subset"]
    assert run_methods(config, seed1) == [*(m for m in fusion if m != "swa"), "grid_finetune", "hpbo_full",
                                          "oracle_subset"]
    config["method_seeds"] = {}
    assert run_methods(config, seed0) == run_methods(config, seed1)


def test_regression_custom_task_validates(tmp_path):
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["custom_tasks"]["scores"] = custom_task(tmp_path, kind="regression", labels=None,
                                                   metrics=["spearman", "pearson"])
    config["tasks"] = ["scores"]
    validate_config(config)


def fill_placeholders(config: dict, model_dir: Path) -> dict:
    """tests/configs hold data placeholders (GLUE_DIR, SQUAD_FILE, ...; see conftest) and MODEL_DIR; a config.json stands in for the
    tiny model, whose layer count and positions are all validation reads."""
    fill_data_placeholders(config)
    for model in config["model_catalog"].values():
        if model["source"] == "MODEL_DIR":
            model["source"] = str(model_dir)
    return config


@pytest.mark.skipif(not SHIPPED_CONFIGS, reason="no configs/*.yaml or tests/configs/*.yaml")
@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[str(p.relative_to(REPO)) for p in SHIPPED_CONFIGS])
def test_shipped_configs_validate(path, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "bert", "num_hidden_layers": 2, "max_position_embeddings": 128}))
    validate_config(fill_placeholders(yaml.safe_load(path.read_text()), tmp_path))


def test_command_line_values_get_the_schema_types(tmp_path):
    """--config values arrive as strings (Snakemake reads them with YAML's BaseLoader); where the schema
    asks for another type they are read as a YAML config file would read them, and only those."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    with_custom_task(config, tmp_path, labels=["0", "1"])  # quoted in a file: strings, and they stay strings
    given = {"seeds": ["0", "1", "2"], "hpo": {"rounds": "3"}, "data": {"max_train": "null"},
             "fusion": {"selection": "knee"}, "optim": {"weight_decay": "1e-4"}}
    config["seeds"], config["hpo"]["rounds"] = list(given["seeds"]), given["hpo"]["rounds"]
    config["data"]["max_train"], config["fusion"]["selection"] = "null", "knee"
    config["optim"]["weight_decay"] = "1e-4"
    validate_config(config, command_line=given)
    assert config["seeds"] == [0, 1, 2] and config["hpo"]["rounds"] == 3 and config["optim"]["weight_decay"] == 1e-4
    assert config["data"]["max_train"] is None and config["fusion"]["selection"] == "knee"
    assert config["custom_tasks"]["mine"]["labels"] == ["0", "1"]
    with pytest.raises(ConfigError, match="'hpo.rounds': 'three' is not of type 'integer'"):
        validate_config({**copy.deepcopy(DEFAULT_CONFIG), "hpo": {**DEFAULT_CONFIG["hpo"], "rounds": "three"}},
                        command_line={"hpo": {"rounds": "three"}})


def test_yaml_1_1_strings_are_numbers_where_the_schema_wants_one(tmp_path):
    """PyYAML (YAML 1.1) reads 1e-3, without a dot, as a string; where the schema wants a number it is one, and
    a trailing slash on output_dir (as the README writes results/) is the same directory."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    overrides = yaml.safe_load("hpo:\n  space:\n    learning_rate: {low: 1e-5, high: 1e-3, log: true}\n"
                               "optim: {weight_decay: 1E-2}\noutput_dir: results/\n")
    assert overrides["hpo"]["space"]["learning_rate"]["low"] == "1e-5"  # the YAML 1.1 reading this undoes
    space(config, "learning_rate").update(overrides["hpo"]["space"]["learning_rate"])
    config["optim"].update(overrides["optim"])
    config["output_dir"] = overrides["output_dir"]
    with_custom_task(config, tmp_path, labels=["1e-3", "2"])  # strings where the schema takes one: kept
    validate_config(config)
    assert space(config, "learning_rate") == {"low": 1e-5, "high": 1e-3, "log": True}
    assert config["optim"]["weight_decay"] == 0.01 and config["output_dir"] == "results"
    assert config["custom_tasks"]["mine"]["labels"] == ["1e-3", "2"]


def test_data_file_suffixes_are_read_in_any_case(tmp_path):
    config = copy.deepcopy(DEFAULT_CONFIG)
    with_custom_task(config, tmp_path)
    (tmp_path / "test.JSONL").write_text('{"sentence": "good", "label": "yes"}\n')
    (tmp_path / "train.csv").rename(tmp_path / "train.CSV")
    config["custom_tasks"]["mine"].update(train=str(tmp_path / "train.CSV"), test=str(tmp_path / "test.JSONL"))
    validate_config(config)


# --------------------------------------------------------------------------- as a user sees it


def run_snakemake(workdir: Path, *args: str, targets=("all",)) -> list[str]:
    """``snakemake all`` (not a dry run: a config that passed would start jobs) in ``workdir``, which must fail;
    its output lines."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(workdir), "--cores", "1", *targets, *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=300)
    assert result.returncode != 0
    return (result.stdout + result.stderr).splitlines()


def no_python_frames(output: list[str]) -> bool:
    return not any(line.lstrip().startswith(("File \"", "Traceback")) for line in output)


def user_config(tmp_path: Path, text: str = "") -> Path:
    """The default config with the data directory made absolute, plus ``text`` appended verbatim."""
    config = (REPO / "config.yaml").read_text().replace("../shared/data", str(REPO.parent / "shared" / "data"))
    path = tmp_path / "my-config.yaml"
    path.write_text(config + text)
    return path


def custom_tasks_config(tmp_path: Path, tasks: dict, *edits: tuple[str, str]) -> Path:
    """``user_config`` running only the custom ``tasks`` (a flow mapping, as a user may write one), with each
    (old, new) text edit of config.yaml applied."""
    path = user_config(tmp_path)
    edits = (("\ntasks: [sst2]", f"\ntasks: [{', '.join(tasks)}]"),
             ("custom_tasks: {}", f"custom_tasks: {json.dumps(tasks)}"), *edits)
    text = path.read_text()
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


@pytest.mark.parametrize("args, lines", [
    (["--config", "fusion={selectoin: knee, evaluatons: 3}"],
     ["unknown key 'fusion.selectoin' (did you mean 'fusion.selection'?)",
      "unknown key 'fusion.evaluatons' (did you mean 'fusion.evaluations'?)"]),
    (["--config", "hpo={acquisition: qEI}", "fusion={acquisition: qEHVI, evaluations: 1000000}"],
     ["config field 'fusion.acquisition': 'qEHVI' is not one of ['qLogNEHVI', 'qNEHVI']",
      "config field 'fusion.evaluations': 1000000 is greater than the maximum of 1000 (each scores a fused model on "
      "the validation split and the GP refits on all of them (cubic in their number); the paper uses 5N = 75)",
      "config field 'hpo.acquisition': 'qEI' is not one of ['qLogNEI', 'qLogEI']"]),
    (["--config", "models=[..]"],
     ["config field 'models.0': '..' is not allowed: use letters, digits, _ . and - only, not only dots "
      "(it names a directory)"]),
    (["--config", "output_dir=../elsewhere"],
     ["config field 'output_dir': '../elsewhere' is not allowed: a relative path of letters, digits, _ . and -, "
      "with no '.' or '..' component"]),
], ids=["two-typos", "two-acquisitions-and-a-budget", "dot-dot-model", "output-outside"])
def test_every_config_problem_is_one_line_before_any_job(tmp_path, args, lines):
    output = run_snakemake(tmp_path, "--configfile", str(user_config(tmp_path)), *args)
    first = next(i for i, line in enumerate(output) if line.startswith("bomf: "))
    assert output[first] == f"bomf: invalid configuration ({len(lines)} problem{'s' if len(lines) > 1 else ''}):"
    assert output[first + 1:first + 1 + len(lines)] == [f"  - {line}" for line in lines]
    assert no_python_frames(output), output
    assert not (tmp_path / "results").exists() and not (tmp_path / "elsewhere").exists()


def test_a_key_given_twice_in_a_config_file_is_named_with_its_line(tmp_path):
    config = user_config(tmp_path, "\nhpo:\n  rounds: 3\n")  # config.yaml already has an hpo block
    line = [i for i, text in enumerate(config.read_text().splitlines(), 1) if text.startswith("hpo:")][-1]
    output = run_snakemake(tmp_path, "--configfile", str(config))
    assert f"  - {config}:{line}: key 'hpo' appears twice in one mapping (YAML would keep only the last); " \
           f"merge the two" in output
    assert not (tmp_path / "results").exists()


def test_data_files_that_cannot_be_right_are_named_before_any_job(tmp_path):
    """A test file that is the train file, a file of a type the readers do not read, a file with no examples:
    each named for what it is, in one run of the config check."""
    (tmp_path / "train.csv").write_text("text,label\n" + "fine,pos\nbad,neg\n" * 150)
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + "fine\tpos\n" * 300)
    (tmp_path / "header.csv").write_text("text,label\n")
    files = {"same": ("train.csv", "train.csv"), "tsv": ("train.tsv", "header.csv"),
             "empty": ("train.csv", "header.csv")}
    tasks = {name: {"train": str(tmp_path / train), "test": str(tmp_path / test), "text_columns": ["text"],
                    "label_column": "label", "kind": "classification", "labels": ["neg", "pos"],
                    "metrics": ["accuracy"]} for name, (train, test) in files.items()}
    output = run_snakemake(tmp_path, "--configfile", str(custom_tasks_config(tmp_path, tasks)), "-n")
    first = output.index("bomf: invalid configuration (4 problems):")
    assert output[first + 1:first + 5] == [
        f"  - custom_tasks.same.test: '{tmp_path}/train.csv' is the train file; the test split must be held out "
        f"from training",
        f"  - custom_tasks.tsv.train: {tmp_path}/train.tsv: unsupported file type '.tsv'; a custom task's files "
        f"are .csv or .jsonl (in any case)",
        f"  - custom_tasks.tsv.test: '{tmp_path}/header.csv' has a header but no examples",
        f"  - custom_tasks.empty.test: '{tmp_path}/header.csv' has a header but no examples"], output
    assert no_python_frames(output) and not (tmp_path / "results").exists()


def test_a_config_file_snakemake_cannot_read_is_named_with_its_line(tmp_path):
    """Snakemake reads --configfile files before any workflow code and names no line: python -m bomf.check
    names each file, its line and the problem. The working directory's config.yaml, read by the Snakefile, is
    checked there before Snakemake reads it."""
    (tmp_path / "bracket.yaml").write_text("tasks: [sst2\nmodels: [minilm]\n")
    (tmp_path / "comments.yaml").write_text("# tasks: [sst2]\n")
    (tmp_path / "list.yaml").write_text("# a list\n- tasks: [sst2]\n")
    files = ["bracket.yaml", "comments.yaml", "list.yaml", "absent.yaml"]
    result = subprocess.run([sys.executable, "-m", "bomf.check", *files], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "bomf: invalid configuration (4 problems):",
        "  - bracket.yaml:2: not valid YAML (expected ',' or ']', but got ':', while parsing a flow sequence that "
        "starts on line 1)",
        "  - comments.yaml: holds no settings (it is empty or only comments); a config file maps keys to values, "
        "e.g. 'tasks: [sst2]'",
        "  - list.yaml:2: the top level is a list, not a mapping of keys to values (e.g. 'tasks: [sst2]')",
        f"  - absent.yaml: config file not found (relative to the working directory {tmp_path})"]

    default = (REPO / "config.yaml").read_text()
    line = next(i for i, text in enumerate(default.splitlines(), 1) if text.startswith("  rounds:"))
    (tmp_path / "config.yaml").write_text(default.replace("\n  rounds:", "\n\trounds:"))
    output = run_snakemake(tmp_path, "-n", targets=())
    assert output[output.index("bomf: invalid configuration (1 problem):") + 1] == (
        f"  - config.yaml:{line}: not valid YAML (found character '\\t' that cannot start any token)")
    assert no_python_frames(output) and not (tmp_path / "results").exists()


def test_bomf_check_reads_the_files_as_snakemake_merges_them(tmp_path, monkeypatch):
    """Over the working directory's config.yaml, in order, and checked as the workflow checks them."""
    from bomf.check import check

    assert check(["config.yaml"]) is None
    (tmp_path / "mine.yaml").write_text("hpo:\n  rounds: 3\nfusion:\n  evaluatons: 3\n")
    assert check([str(tmp_path / "mine.yaml")]) == ("invalid configuration (1 problem):\n  - unknown key "
                                                   "'fusion.evaluatons' (did you mean 'fusion.evaluations'?)")


def test_bad_data_is_one_line_naming_file_and_line_and_leaves_nothing(tmp_path):
    """A data problem the config check cannot see (a value in the middle of a file: a score that is no number, a
    text that is a JSON object) stops its data job with one line on the terminal; the traceback stays in the job's
    log and no partial split is left. A declared label only test has, and a test set mostly repeating train, are
    warnings from a data job that succeeds. The config, as a user writes it, reads 5e-5 as a number and
    output_dir: results/ as results."""
    scores, structured, unseen = (tmp_path / name for name in ("scores.csv", "structured.jsonl", "unseen.csv"))
    scores.write_text("text,score\n" + "".join(f"sentence {i},{i % 5}.0\n" for i in range(250)) + "odd one,inf\n")
    structured.write_text("".join(json.dumps({"text": f"sentence {i}", "label": "pos"}) + "\n" for i in range(2))
                          + '{"text": {"a": 1}, "label": "pos"}\n' + '{"text": "fine", "label": "neg"}\n' * 250)
    unseen.write_text("text,label\n" + "".join(f"sentence {i % 5},{('neg', 'pos')[i % 2]}\n" for i in range(250)))
    (tmp_path / "test.csv").write_text("text,label\nsentence 0,pos\nsentence 1,neg\nsentence 2,pos\nnew,maybe\n")
    (tmp_path / "test_scores.csv").write_text("text,score\nfine,1.0\nbad,2.0\n")
    classification = {"text_columns": ["text"], "label_column": "label", "kind": "classification",
                      "labels": ["neg", "pos", "maybe"], "metrics": ["accuracy"]}
    tasks = {"scores": {"train": str(scores), "test": str(tmp_path / "test_scores.csv"), "text_columns": ["text"],
                        "label_column": "score", "kind": "regression", "metrics": ["pearson"]},
             "structured": {"train": str(structured), "test": str(tmp_path / "test.csv"), **classification},
             "unseen": {"train": str(unseen), "test": str(tmp_path / "test.csv"), **classification}}
    config = custom_tasks_config(tmp_path, tasks, ("{low: 5.0e-5, high: 5.0e-4,", "{low: 5e-5, high: 5e-4,"),
                                 ("\nseeds:", "\noutput_dir: results/\nseeds:"))
    output = run_snakemake(tmp_path, "--configfile", str(config), "--keep-going",
                           targets=[f"results/data/{task}/split.json" for task in tasks])
    # The three jobs run in any order.
    assert sorted(line for line in output if line.startswith(("bomf error: ", "bomf warning: "))) == [
        f"bomf error: {scores}:252: column 'score': score inf is not a finite number "
        f"(traceback: logs/data/scores.log)",
        f"bomf error: {structured}:3: column 'text' holds an object, not text; a text column holds a string (two "
        f"texts are two text columns) (traceback: logs/data/structured.log)",
        "bomf warning: unseen: 3 of 4 test examples (more than half) also occur in train, so test scores mostly "
        "measure memorisation; hold out a test set that does not repeat the training texts",
        f"bomf warning: unseen: label 'maybe' never occurs in the training data ({unseen}; only in test), so the "
        f"model cannot learn to predict it; check the data or the task's labels"], output
    assert no_python_frames(output)
    assert "Traceback (most recent call last)" in (tmp_path / "logs/data/scores.log").read_text()
    for failed in ("scores", "structured"):  # no split file, not even a temporary one
        assert not list((tmp_path / "results/data" / failed).rglob("*.*"))
    assert (tmp_path / "results/data/unseen/split.json").is_file()


def test_job_settings_do_not_depend_on_the_order_of_a_config_file():
    """Snakemake compares params as text: the same values written in another order are no edit."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    validate_config(config)
    reordered = yaml.safe_load(yaml.safe_dump(config, sort_keys=True))
    reordered["hpo"]["space"] = dict(reversed(list(reordered["hpo"]["space"].items())))
    wildcards = {"task": "sst2", "model": "minilm", "seed": "0"}
    keys = ("optim", "hpo", "data.split_seed")
    assert repr(job_settings(config, wildcards, keys)) == repr(job_settings(reordered, wildcards, keys))
    assert set(job_settings(config, wildcards, keys)) == {"optim", "hpo", "data", "custom_tasks", "model_catalog",
                                                          "output_dir"}
