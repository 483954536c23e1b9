"""Configuration checks, run before any job is scheduled, and the part of the config each job reads.

``validate_config`` checks the config against ``workflow/schemas/config.schema.yaml`` (types, ranges,
misspelled keys; defaults filled in), then ``check_semantics`` checks what a schema cannot say: names that
live in code registries, bounds that must be ordered, budgets that must fit together, files that must exist.
Every message names the offending config field. Relative paths resolve against the working directory.
"""

import difflib
import json
import math
import re
from pathlib import Path

from .settings import canonical, catalog_name, config_runs, member_steps, run_methods
from .tasks.registry import DataError, get_task

DEFAULT_SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
# Settings of how a job runs, not of what it computes: never part of a job's params (an edit reruns nothing);
# the rules that need them hand them over as resources.
RUN_ONLY = (("finetune", "checkpoint_minutes"),)
# The schema's name patterns in words (names become directories of every run).
PATTERNS = {
    "^[A-Za-z0-9_-]+$": "use letters, digits, _ and - only (it names a directory)",
    "^(?!\\.+$)[A-Za-z0-9_.-]+$": "use letters, digits, _ . and - only, not only dots (it names a directory)",
    "^[a-z0-9_]+$": "use lower-case letters, digits and _ only",
    "^(?!(.*/)?\\.\\.?(/|$))[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/?$":
        "a relative path of letters, digits, _ . and -, with no '.' or '..' component",
}
# A number in YAML 1.2's syntax (the JSON one, plus a leading + and a bare dot: 1e-3, +5, .5, 1.).
YAML12_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
BOOLEAN_HINT = " (YAML reads unquoted yes/no/true/false as booleans: quote the value)"


class ConfigError(ValueError):
    """An invalid configuration; the message names each offending field and what to do about it."""


def validate_config(config: dict, schema_path: str | Path | None = None, command_line=None,
                    config_files=()) -> dict:
    """Check ``config`` against the schema (filling in its defaults), then its semantics; returns it.

    ``command_line``: the values given with ``--config`` (``workflow.config_settings.config``), which
    Snakemake hands over as strings; each is first read as YAML would read it in a config file, where the
    schema asks for another type there (``seeds=[0,1,2]``, ``hpo={rounds: 3}``). From either source, ``1e-3``
    (a string to YAML 1.1) is a number where the schema wants one.
    """
    import jsonschema
    import yaml
    from snakemake.utils import validate

    path = Path(schema_path or DEFAULT_SCHEMA)
    schema = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, given in (command_line or {}).items():
        config[key] = _typed(config[key], given, schema.get("properties", {}).get(key), schema)
    validator = jsonschema.validators.validator_for(schema)(schema)
    _yaml12_numbers(config, validator)
    # Every schema violation at once, one line each; only a valid config gets its defaults and the checks
    # that need them.
    errors = validator.iter_errors(config)
    problems = [*duplicate_keys(config_files),
                *(line for error in sorted(errors, key=lambda e: [str(part) for part in e.absolute_path])
                  for line in schema_messages(error))]
    if problems:
        raise ConfigError(problem_list(problems))
    validate(config, str(path), set_default=True)
    config["output_dir"] = config["output_dir"].rstrip("/")  # results/ is results: paths join it with "/"
    check_semantics(config)
    return config


def config_file_problem(path: str | Path) -> str | None:
    """What keeps ``path`` from being read as a config file (missing, not YAML, not a mapping of keys), with its
    line; None if it reads. Snakemake reads every --configfile before any workflow code runs and names neither
    file nor line (a missing one gets a traceback): ``python -m bomf.check`` runs this first."""
    import yaml

    path = Path(path)
    if path.is_dir():
        return f"{path}: is a directory, not a config file"
    if not path.is_file():
        return f"{path}: config file not found{_cwd_note(str(path))}"
    try:
        text = path.read_text(encoding="utf-8")
        top, settings = yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except UnicodeDecodeError as err:
        return f"{path}: not UTF-8 text (byte {err.start}); re-save it as UTF-8"
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        context = f", {err.context} that starts on line {err.context_mark.line + 1}" if err.context_mark else ""
        return f"{path}:{mark.line + 1}: not valid YAML ({err.problem}{context})"
    if settings is None:
        return f"{path}: holds no settings (it is empty or only comments); a config file maps keys to values, " \
               f"e.g. 'tasks: [sst2]'"
    if not isinstance(settings, dict):
        kind = "list" if isinstance(settings, list) else f"single value ({settings!r})"
        return f"{path}:{top.start_mark.line + 1}: the top level is a {kind}, not a mapping of keys to values " \
               f"(e.g. 'tasks: [sst2]')"
    return None


def duplicate_keys(paths) -> list[str]:
    """A key given twice in one mapping of a config file: YAML keeps the last silently, losing the first block."""
    import yaml

    problems = []

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    problems.append(f"{path}:{key_node.start_mark.line + 1}: key '{key}' appears twice in one "
                                    f"mapping (YAML would keep only the last); merge the two")
                seen.add(key)
            return super().construct_mapping(node, deep)

    for path in paths:
        yaml.load(Path(path).read_text(encoding="utf-8"), Loader=Loader)
    return problems


def problem_list(problems: list[str]) -> str:
    count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
    return f"invalid configuration ({count}):\n" + "\n".join(f"  - {p}" for p in problems)


def _typed(value, given, schema: dict | None, root: dict):
    """``value`` (the merged config's) with each string that came from the command line (``given``) read as
    YAML where ``schema`` does not take a string there."""
    import yaml

    if schema is None:  # an unknown key: the schema check names it
        return value
    if "$ref" in schema:  # "#/$defs/<name>"
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if isinstance(given, dict) and isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {key: _typed(item, given[key], properties.get(key, extra if isinstance(extra, dict) else None), root)
                if key in given else item for key, item in value.items()}
    if isinstance(given, list) and isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_typed(item, item, schema["items"], root) for item in value]
    if isinstance(value, str) and value == given:
        allowed = schema.get("type", [])
        allowed = {allowed} if isinstance(allowed, str) else set(allowed)
        if allowed and "string" not in allowed:
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:  # left as given: the schema check names the field
                return value
            if _json_type(parsed) in allowed or (_json_type(parsed) == "integer" and "number" in allowed):
                return parsed
    return value


def _yaml12_numbers(config: dict, validator) -> None:
    """Every string YAML 1.2 reads as a number but PyYAML's YAML 1.1 does not (``1e-3``: no dot) read as one,
    where the schema wants a number: the value then means what it says in a config file as on the command line."""
    for error in list(validator.iter_errors(config)):
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        if (error.validator == "type" and "number" in wanted and isinstance(error.instance, str)
                and YAML12_NUMBER.fullmatch(error.instance) and error.absolute_path):
            *parents, last = error.absolute_path
            container = config
            for part in parents:
                container = container[part]
            container[last] = float(error.instance)


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(type(value), "")


def field(path) -> str:
    return ".".join(str(part) for part in path)


def schema_messages(error) -> list[str]:
    """One line per problem of a schema violation, naming the field: unknown and missing keys get their full
    path, one line each."""
    where = list(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = list(error.schema.get("properties", {}))
        return [f"unknown key '{field([*where, key])}'{_suggestion(where, key, known)}"
                for key in error.instance if key not in known]
    if error.validator == "required":
        return [f"missing key '{field([*where, key])}'" for key in error.validator_value if key not in error.instance]
    if error.validator == "pattern" and error.validator_value in PATTERNS:
        return [f"config field '{field(where)}': {error.instance!r} is not allowed: {PATTERNS[error.validator_value]}"]
    hint = BOOLEAN_HINT if error.validator == "type" and isinstance(error.instance, bool) else ""
    if error.validator == "maximum" and "$comment" in error.schema:  # a budget bound: the schema says why
        hint = f" ({error.schema['$comment']})"
    return [f"config field '{field(where) or '<top level>'}': {error.message}{hint}"]


def _suggestion(where: list, key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean '{field([*where, close[0]])}'?)" if close else f" (known keys: {', '.join(known)})"


def check_semantics(config: dict) -> None:
    """Everything the schema cannot check, on a schema-valid config with its defaults filled in; raises one
    ConfigError listing every problem found."""
    problems = [
        *check_runs(config),
        *check_tasks(config),
        *check_custom_tasks(config["custom_tasks"]),
        *check_custom_task_files(config),
        *check_glue_files(config),
        *check_text_task_files(config),
        *check_models(config),
        *check_imported_runs(config),
        *check_search_space(config["hpo"]["space"]),
        *check_member_steps(config),
        *check_fusion(config),
        *check_figures(config),
        *check_method_seeds(config),
        *check_selection_study(config),
    ]
    if problems:
        raise ConfigError(problem_list(problems))


def _builtin_tasks() -> dict:
    from .tasks.registry import BUILTIN_TASKS

    return BUILTIN_TASKS


def run_tasks(config: dict) -> list[str]:
    """The tasks of every run: those fine-tuned (tasks), then those of imported runs."""
    imported = [entry["task"] for entry in config["imported_runs"].values()]
    return list(dict.fromkeys([*config["tasks"], *imported]))


def check_runs(config: dict) -> list[str]:
    tasks, models = config["tasks"], config["models"]
    if bool(tasks) != bool(models):
        given, empty = ("tasks", "models") if tasks else ("models", "tasks")
        return [f"{empty}: empty while {given} is not, so nothing would be fine-tuned; list both, or empty both "
                f"and name imported runs under imported_runs"]
    if not tasks and not config["imported_runs"]:
        return ["tasks, models: nothing to run; list the tasks and models to fine-tune, or name the checkpoints "
                "to fuse under imported_runs"]
    return []


def check_tasks(config: dict) -> list[str]:
    builtin = _builtin_tasks()
    known = [*builtin, *config["custom_tasks"]]
    wheres = [("tasks", name) for name in config["tasks"]]
    wheres += [(f"imported_runs.{run}.task", entry["task"]) for run, entry in config["imported_runs"].items()]
    return [f"{where}: unknown task '{name}'; the built-in tasks are {', '.join(builtin)}, and other tasks must "
            f"be defined under custom_tasks{_listed(config['custom_tasks'])}"
            for where, name in wheres if name not in known]


def _listed(names) -> str:
    return f" (defined: {', '.join(names)})" if names else ""


def check_custom_tasks(custom_tasks: dict) -> list[str]:
    from .tasks.kinds import KINDS

    problems = []
    for name, task in custom_tasks.items():
        where = f"custom_tasks.{name}"
        if name in _builtin_tasks():
            problems.append(f"{where}: '{name}' is a built-in task's name; give the custom task another name")
        regression = task["kind"] == "regression"
        if regression and "labels" in task:
            problems.append(f"{where}.labels: a regression task has no labels; remove the key")
        if not regression and "labels" not in task:
            problems.append(f"{where}.labels: a classification task needs its label values, in class-index order")
        labels = [str(label).strip() for label in task.get("labels", [])]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            problems.append(f"{where}.labels: {', '.join(map(repr, twice))} given more than once (labels are "
                            f"compared as text, so 1 and \"1\" are the same label); list each label once")
        allowed = KINDS[task["kind"]].metrics
        problems += [f"{where}.metrics: '{metric}' is not a {task['kind']} metric; use one of {', '.join(allowed)}"
                     for metric in task["metrics"] if metric not in allowed]
    return problems


def check_custom_task_files(config: dict) -> list[str]:
    """The files of every requested custom task: present, of a supported type, holding examples with the named
    columns, train larger than the validation set carved out of it, and test not train again. Cheap (a header,
    a row count and a byte comparison), so it runs before any job; the values themselves are checked when the
    data job reads them."""
    problems, requested = [], run_tasks(config)
    for name, task in config["custom_tasks"].items():
        if name not in requested:
            continue
        readable = []
        for split in ("train", "test"):
            where, path = f"custom_tasks.{name}.{split}", Path(task[split])
            if path.is_dir():
                problems.append(f"{where}: '{path}' is a directory, not a file")
                continue
            if not path.is_file():
                problems.append(f"{where}: file '{path}' not found{_cwd_note(task[split])}")
                continue
            try:
                columns, rows = _columns_and_rows(path)
            except DataError as err:
                problems.append(f"{where}: {err}")
                continue
            except json.JSONDecodeError as err:
                problems.append(f"{where}: '{path}' line 1 is not valid JSON ({err.msg})")
                continue
            readable.append(path)
            if not rows:  # before the columns and val_size, which an empty file would only seem to break
                what = "has a header but no examples" if columns else "is empty"
                problems.append(f"{where}: '{path}' {what}")
                continue
            absent = [c for c in [*task["text_columns"], task["label_column"]] if c not in columns]
            if absent:
                problems.append(f"{where}: '{path}' has no column {', '.join(map(repr, absent))} (columns: "
                                f"{', '.join(map(repr, columns))})")
            if split == "train" and rows <= config["data"]["val_size"]:
                problems.append(f"data.val_size: {config['data']['val_size']} validation examples are carved out "
                                f"of {where} ('{path}'), which has {rows}; lower data.val_size")
        if len(readable) == 2:
            problems += _test_is_train(f"custom_tasks.{name}", *readable)
    return problems


def _test_is_train(where: str, train: Path, test: Path) -> list[str]:
    """A test file that is the train file (or a copy of it) would report scores on the training data."""
    import filecmp

    if train.samefile(test):
        return [f"{where}.test: '{test}' is the train file; the test split must be held out from training"]
    if filecmp.cmp(train, test, shallow=False):
        return [f"{where}.test: '{test}' has the same content as {where}.train ('{train}'); the test split must "
                f"be held out from training"]
    return []


def _columns_and_rows(path: Path) -> tuple[list[str], int]:
    """The column names (CSV header, or the first JSONL record's keys) and the number of records, read as
    the data job reads the file (``bomf.tasks.readers``)."""
    from .tasks.readers import csv_rows, custom_format, read_text

    file_format = custom_format(path)
    text = read_text(path, "data file not found")
    if file_format == ".jsonl":
        lines = [line for line in text.splitlines() if line.strip()]
        first = json.loads(lines[0]) if lines else {}
        return (list(first) if isinstance(first, dict) else []), len(lines)
    rows = [row for _, row in csv_rows(path, text, strict=True)]
    return (rows[0] if rows else []), len([row for row in rows[1:] if row])


def check_glue_files(config: dict) -> list[str]:
    """With data.glue_dir set, the train and dev files of every requested GLUE task."""
    from .tasks.registry import GLUE_FORMATS

    glue_dir = config["data"]["glue_dir"]
    requested = [name for name in run_tasks(config) if name in GLUE_FORMATS]
    if glue_dir is None or not requested:
        return []
    if not Path(glue_dir).is_dir():
        return [f"data.glue_dir: directory '{glue_dir}' not found{_cwd_note(glue_dir)}; point it at a GLUE "
                f"directory, or set it to null to load GLUE from the hub"]
    paths = [(name, Path(glue_dir) / GLUE_FORMATS[name].directory / split)
             for name in requested for split in ("train.tsv", "dev.tsv")]
    return [f"data.glue_dir: '{path}' not found (needed by task {name})"
            for name, path in paths if not path.is_file()]


def check_text_task_files(config: dict) -> list[str]:
    """The local copy (file or directory) of every requested text task whose data key is set."""
    from .tasks.readers import TEXT_SOURCES

    problems = []
    for name in run_tasks(config):
        if name not in TEXT_SOURCES:
            continue
        key = TEXT_SOURCES[name][0]
        local = config["data"][key]
        if local is not None and not Path(local).exists():
            problems.append(f"data.{key}: '{local}' not found{_cwd_note(local)} (needed by task {name}); point "
                            f"it at the local copy, or set it to null to load {name} from the hub")
    return problems


def _cwd_note(path: str) -> str:
    return "" if Path(path).is_absolute() else f" (relative to the working directory {Path.cwd()})"


def check_models(config: dict) -> list[str]:
    catalog = config["model_catalog"]
    problems = [f"models: '{name}' is not in model_catalog (known: {', '.join(catalog)})"
                for name in config["models"] if name not in catalog]
    for name in config["models"]:
        if name in catalog:
            problems += check_model_kind(name, catalog[name], config, config["tasks"])
            problems += check_model_source(name, catalog[name], grid_frozen_layers(config))
    return problems


def _model_family(config: dict, task: str) -> str | None:
    """"encoder" or "causal_lm" for a known task, else None (check_tasks names it)."""
    from .tasks.kinds import kind_of

    if task not in _builtin_tasks() and task not in config["custom_tasks"]:
        return None
    return kind_of(get_task(task, config["custom_tasks"])).model_family


def check_model_kind(name: str, model: dict, config: dict, tasks: list[str]) -> list[str]:
    """Causal-LM kinds (generation) fine-tune with LoRA; encoder kinds (the others) in full."""
    where = f"model_catalog.{name}"
    families = {task: family for task in tasks if (family := _model_family(config, task))}
    causal_lm = [task for task, family in families.items() if family == "causal_lm"]
    encoder = [task for task, family in families.items() if family == "encoder"]
    problems = []
    if causal_lm and "lora" not in model:
        problems.append(f"{where}.lora: generation tasks ({', '.join(causal_lm)}) fine-tune a causal LM with "
                        f"LoRA; give the model a lora section (rank, proxy_rank)")
    if encoder and "lora" in model:
        problems.append(f"{where}.lora: LoRA is for causal LMs on generation tasks; tasks {', '.join(encoder)} "
                        f"need an encoder without lora (run them from another config)")
    if encoder and "proxy_frozen_layers" not in model:
        problems.append(f"{where}.proxy_frozen_layers: tasks {', '.join(encoder)} fine-tune an encoder, whose "
                        f"stage-1 proxy freezes this many of the lowest layers")
    if "lora" in model and model["lora"]["proxy_rank"] > model["lora"]["rank"]:
        problems.append(f"{where}.lora.proxy_rank: {model['lora']['proxy_rank']} exceeds rank "
                        f"{model['lora']['rank']}; the proxy must be the cheaper model")
    return problems


def grid_frozen_layers(config: dict) -> list[int]:
    """Frozen-layer counts the baseline grid runs with (none when the grid fine-tune is not requested)."""
    baselines = config["baselines"]
    return baselines["grid"]["frozen_layers"] if "grid_finetune" in baselines["methods"] else []


def check_model_source(name: str, model: dict, grid_frozen: list[int] = ()) -> list[str]:
    """A local or pypi: source must exist (resolve_model_source raises FileNotFoundError otherwise); its
    config.json bounds the frozen-layer counts and max_length."""
    from .sources import resolve_model_source

    where = f"model_catalog.{name}"
    try:
        resolved = resolve_model_source(model["source"])
    except FileNotFoundError as err:
        return [f"{where}.source: {err}"]
    if not Path(resolved).is_dir():
        return []  # a hub id (checked when it is downloaded) or a GGUF file (checked when converted)
    config_file = Path(resolved) / "config.json"
    if not config_file.is_file():
        return [f"{where}.source: '{resolved}' holds no config.json; point it at a save_pretrained directory"]
    try:
        model_config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        detail = f"line {err.lineno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else "not UTF-8"
        return [f"{where}.source: {config_file} is not valid JSON ({detail})"]
    problems = []
    layers = model_config.get("num_hidden_layers")
    if layers is not None and model.get("proxy_frozen_layers", 0) >= layers:
        problems.append(f"{where}.proxy_frozen_layers: {model['proxy_frozen_layers']} would freeze every layer "
                        f"of the model (it has {layers}); use at most {layers - 1}")
    if layers is not None and grid_frozen and max(grid_frozen) >= layers:
        problems.append(f"baselines.grid.frozen_layers: {max(grid_frozen)} would freeze every layer of model "
                        f"'{name}' (it has {layers}); use at most {layers - 1}")
    positions = model_config.get("max_position_embeddings")
    if positions is not None and model["max_length"] > positions:
        problems.append(f"{where}.max_length: {model['max_length']} exceeds the model's "
                        f"max_position_embeddings ({positions})")
    return problems


def check_imported_runs(config: dict) -> list[str]:
    """Each imported run's name, task, base model and checkpoint directories (``bomf.train.checkpoints``: what can be
    said without reading a tensor; the import job checks the tensors before any fusion)."""
    from .train.checkpoints import check_imported_run

    catalog = config["model_catalog"]
    problems = []
    for name, entry in config["imported_runs"].items():
        where = f"imported_runs.{name}"
        if name in catalog:
            problems.append(f"{where}: '{name}' is a model_catalog entry's name, and an imported run's name stands "
                            f"where a model's does in its paths; give the run another name")
        base = entry["base"]
        if base not in catalog:
            problems.append(f"{where}.base: '{base}' is not in model_catalog (known: {', '.join(catalog)}); add the "
                            f"model the checkpoints were fine-tuned from there")
        else:
            problems += check_model_kind(base, catalog[base], config, [entry["task"]])
            problems += check_model_source(base, catalog[base])
        problems += check_imported_run(name, entry, _model_family(config, entry["task"]),
                                       config["figures"]["landscape"]["enabled"])
    return problems


def check_search_space(space: dict) -> list[str]:
    problems = []
    for name, bounds in space.items():
        where = f"hpo.space.{name}"
        if bounds["low"] >= bounds["high"]:
            problems.append(f"{where}: low ({bounds['low']}) must be below high ({bounds['high']})")
        if bounds["log"] and bounds["low"] <= 0:
            problems.append(f"{where}.low: a log scale needs low > 0 (got {bounds['low']}); "
                            f"raise it or set log: false")
    return problems


def check_member_steps(config: dict) -> list[str]:
    """Members need distinct optimiser steps after start_fraction of the shortest possible fine-tune (the
    largest searched batch size). Without data.max_train the training set size is unknown until the data
    is read, so nothing is checked."""
    max_train = config["data"]["max_train"]
    if max_train is None or not config["tasks"]:
        return []
    finetune = config["finetune"]
    largest_batch = config["hpo"]["space"]["batch_size"]["high"]
    if "grid_finetune" in config["baselines"]["methods"]:
        largest_batch = max(largest_batch, *config["baselines"]["grid"]["batch_sizes"])
    steps = math.ceil(max_train / largest_batch) * finetune["epochs"]
    try:
        member_steps(steps, finetune["members"], finetune["start_fraction"])
    except ValueError:
        return [f"finetune.members: {finetune['members']} members need {finetune['members']} distinct optimiser "
                f"steps after start_fraction={finetune['start_fraction']} of training, but with data.max_train="
                f"{max_train}, batch size up to {largest_batch} (hpo.space.batch_size.high, or "
                f"baselines.grid.batch_sizes) and {finetune['epochs']} epoch(s) training can be as short as "
                f"{steps} steps; "
                f"lower finetune.members or start_fraction, or train longer"]
    return []


def check_fusion(config: dict) -> list[str]:
    from .fuse.methods import SETTINGS as METHODS
    from .fuse.selection import SELECTION_RULES
    from .train.checkpoints import find_checkpoints

    fusion = config["fusion"]
    problems = [f"fusion.methods: unknown method '{method}'; registered methods are {', '.join(METHODS)}"
                for method in fusion["methods"] if method not in METHODS]
    if "ema" in fusion["methods"] and config["finetune"]["ema_decay"] is None:
        problems.append("fusion.methods: ema needs the average stage 2 keeps; set finetune.ema_decay (e.g. 0.99)")
    methods = [*fusion["methods"], *config["baselines"]["methods"]]
    problems += [f"export.methods: '{method}' is not run; it must be one of fusion.methods or baselines.methods "
                 f"({', '.join(methods)})" for method in config["export"]["methods"] if method not in methods]
    if fusion["selection"] not in SELECTION_RULES:
        problems.append(f"fusion.selection: unknown rule '{fusion['selection']}'; registered rules are "
                        f"{', '.join(SELECTION_RULES)}")
    # null initial points: one per member, finetune.members for stage 2, each imported run's checkpoints.
    if fusion["initial_points"] is not None:
        initial = [(fusion["initial_points"], "")]
    else:
        initial = [(config["finetune"]["members"], " (null: one per finetune.members)")] if config["tasks"] else []
        initial += [(len(find_checkpoints(entry["members"])), f" (null: one per checkpoint of imported_runs.{name})")
                    for name, entry in config["imported_runs"].items()]
    problems += [f"fusion.initial_points: {count}{implied} exceeds fusion.evaluations ({fusion['evaluations']}), "
                 f"which counts the initial points; lower it or raise fusion.evaluations"
                 for count, implied in initial if count > fusion["evaluations"]]
    return problems


def check_figures(config: dict) -> list[str]:
    landscape = config["figures"]["landscape"]
    if not landscape["enabled"]:
        return []  # imported runs' member counts: check_imported_runs
    problems = []
    if landscape["low"] >= landscape["high"]:
        problems.append(f"figures.landscape: low ({landscape['low']}) must be below high ({landscape['high']})")
    if config["tasks"] and config["finetune"]["members"] < 3:
        problems.append(f"figures.landscape: the plane needs three members, finetune.members is "
                        f"{config['finetune']['members']}; raise it or set figures.landscape.enabled: false")
    return problems


def check_method_seeds(config: dict) -> list[str]:
    methods = [*config["fusion"]["methods"], *config["baselines"]["methods"]]
    seeds = {*config["seeds"], *(entry["seed"] for entry in config["imported_runs"].values())}
    problems = []
    for method, only in config["method_seeds"].items():
        if method not in methods:
            problems.append(f"method_seeds.{method}: not among fusion.methods or baselines.methods; "
                            f"list it there or drop it here")
        elif not set(only) & seeds:
            problems.append(f"method_seeds.{method}: none of {only} is among the runs' seeds {sorted(seeds)}, "
                            f"so {method} would run nowhere; name one of them or drop {method} from its methods")
    return problems


def check_selection_study(config: dict) -> list[str]:
    """The study compares the rules on BOMF's search: it needs BOMF, on a seed a run has."""
    only = config["tables"]["selection_study"]
    if not only:
        return []
    if "bomf" not in config["fusion"]["methods"]:
        return ["tables.selection_study: the study reads BOMF's search; add bomf to fusion.methods or set []"]
    runs = {int(run["seed"]) for run in config_runs(config) if "bomf" in run_methods(config, run)}
    missing = sorted(set(only) - runs)
    return [f"tables.selection_study: no run with BOMF has seed {', '.join(map(str, missing))} "
            f"(BOMF runs on seeds {sorted(runs)})"] if missing else []


def job_settings(config: dict, wildcards: dict, keys: tuple[str, ...]) -> dict:
    """The part of the config one job reads, handed to it through ``params:``: Snakemake reruns a job whose
    params changed, so editing a value reruns exactly the jobs that read it.

    ``keys`` are sections (``"finetune"``) or single values (``"optim.eval_batch_size"``). A job with a task
    wildcard also gets the task's custom_tasks entry (if it is one) and its kind's section (qa, generation);
    one with a model wildcard gets the model's catalog entry (an imported run's: its base's, and its
    imported_runs entry) and output_dir (a GGUF model's converted copy lies there)."""
    from .tasks.kinds import kind_of

    settings: dict = {}
    for key in keys:
        section, _, name = key.partition(".")
        if name:
            settings.setdefault(section, {})[name] = config[section][name]
        else:
            settings[section] = config[section]
    task = wildcards.get("task")
    if task is not None:
        custom = config["custom_tasks"]
        settings["custom_tasks"] = {task: custom[task]} if task in custom else {}
        kind_section = kind_of(get_task(task, custom)).settings_section
        if kind_section:
            settings[kind_section] = config[kind_section]
    model = wildcards.get("model")
    if model is not None:
        name = catalog_name(config, model)
        settings["model_catalog"] = {name: config["model_catalog"][name]}
        if model in config["imported_runs"]:
            settings["imported_runs"] = {model: config["imported_runs"][model]}
        settings["output_dir"] = config["output_dir"]
    for section, name in RUN_ONLY:
        if name in settings.get(section, {}):
            settings[section] = {key: value for key, value in settings[section].items() if key != name}
    return canonical(settings)
