"""The task-kind registry and the package's import structure."""

import ast
import inspect
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from bomf.tasks.kinds import KINDS, kind_of
from bomf.tasks.registry import BUILTIN_TASKS
from bomf.tasks.splits import SplitData

PACKAGE = REPO / "workflow" / "bomf"


# The method's order: a sub-package imports only itself, those before it, and the top-level leaves.
LAYERS = ("tasks", "train", "fuse", "report")
# The top-level modules that drive the sub-packages (the jobs, the config check and its command): nothing of bomf
# imports them.
ROOTS = {"pipeline", "config", "check"}


def _module(path: Path) -> str:
    """A module's dotted name below bomf (a package's __init__: the package)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(path): path for path in PACKAGE.rglob("*.py")}
PACKAGES = {_module(path) for path in PACKAGE.rglob("__init__.py")} - {""}


def _imports(path: Path) -> set[str]:
    """The bomf modules a module imports anywhere in it (function-level imports included)."""
    package = _module(path).split(".")[:-1] if path.name != "__init__.py" else _module(path).split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:  # from .x import y, from ..x import y, from . import x
            base = package[:len(package) - (node.level - 1)]
            target = ".".join([*base, *node.module.split(".")]) if node.module else ".".join(base)
        elif node.module and node.module.split(".")[0] == "bomf" and "." in node.module:
            target = node.module.partition(".")[2]
        else:
            continue
        if target in PACKAGES or not target:  # from .fuse import baselines: the module baselines
            found.update(f"{target}.{alias.name}".lstrip(".") for alias in node.names)
        else:
            found.add(target)
    return found


GRAPH = {module: _imports(path) for module, path in MODULES.items()}


def test_the_package_has_no_import_cycle():
    assert all(target in GRAPH for targets in GRAPH.values() for target in targets)
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                cycle = trail[trail.index(target):] + [target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def _layer(module: str) -> int | None:
    """The module's place in LAYERS (None: a top-level module)."""
    package = module.split(".")[0]
    return LAYERS.index(package) if "." in module or package in LAYERS else None


def test_the_sub_packages_import_only_downwards():
    assert set(LAYERS) == PACKAGES
    wrong = []
    for module, targets in GRAPH.items():
        for target in targets:
            if target in ROOTS and module not in ROOTS:
                wrong.append(f"{module} imports {target}, which drives the package")
            elif _layer(module) is None and module not in ROOTS and _layer(target) is not None:
                wrong.append(f"the top-level leaf {module} imports {target}")
            elif _layer(module) is not None and _layer(target) is not None and _layer(target) > _layer(module):
                wrong.append(f"{module} imports {target}, a later stage")
    assert not wrong, wrong


def test_leaf_modules_import_nothing_of_bomf():
    assert GRAPH["tasks.registry"] == set()
    assert GRAPH["tasks.readers"] == {"tasks.registry"}


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_every_builtin_task_has_a_kind_that_reports_its_metrics(name):
    task = BUILTIN_TASKS[name]
    assert set(task.metrics) <= set(kind_of(task).metrics)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_module_implements_the_kind_protocol(name):
    kind = KINDS[name]
    module = kind.implementation
    # A LoRA kind also takes the dtype of its frozen base (bomf.device.frozen_dtype).
    base = ["base_dtype"] if kind.model_family == "causal_lm" else []
    expected = {"encode": ["task", "examples", "tokenizer", "max_length", "settings", "split"],
                "load_model": ["model_spec", "task", "proxy", *base], "load_saved": ["model_dir", "task"]}
    for function, parameters in expected.items():
        assert list(inspect.signature(getattr(module, function)).parameters) == parameters, (name, function)
    data_classes = [value for value in vars(module).values()
                    if inspect.isclass(value) and issubclass(value, SplitData) and value is not SplitData]
    assert len(data_classes) == 1 and not inspect.isabstract(data_classes[0]), name
    assert inspect.signature(module.encode).return_annotation in (data_classes[0], data_classes[0].__name__)


def test_custom_task_kinds_in_the_schema_are_registered():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    kinds = schema["$defs"]["custom_task"]["properties"]["kind"]["enum"]
    assert set(kinds) <= set(KINDS)
    assert all(KINDS[kind].model_family == "encoder" for kind in kinds)


def test_kind_sections_are_config_sections():
    properties = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())["properties"]
    assert {kind.settings_section for kind in KINDS.values() if kind.settings_section} <= set(properties)
