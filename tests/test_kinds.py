"""The task-kind registry and the package's import structure."""

import ast
import inspect
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from bomf.kinds import KINDS, kind_of
from bomf.splits import SplitData
from bomf.tasks import BUILTIN_TASKS

PACKAGE = REPO / "workflow" / "bomf"


def _imports(path: Path) -> set[str]:
    """The bomf modules a module imports anywhere in it (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from .x import y
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x, y
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.split(".")[0] == "bomf" and "." in node.module:
                found.add(node.module.split(".")[1])
    return found


def test_the_package_has_no_import_cycle():
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}
    assert all(target in graph for targets in graph.values() for target in targets)
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = trail[trail.index(target):] + [target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_leaf_modules_import_nothing_of_bomf():
    assert _imports(PACKAGE / "tasks.py") == set()
    assert _imports(PACKAGE / "readers.py") == {"tasks"}


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_every_builtin_task_has_a_kind_that_reports_its_metrics(name):
    task = BUILTIN_TASKS[name]
    assert set(task.metrics) <= set(kind_of(task).metrics)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_module_implements_the_kind_protocol(name):
    kind = KINDS[name]
    module = kind.implementation
    expected = {"encode": ["task", "examples", "tokenizer", "max_length", "settings", "split"],
                "load_model": ["model_spec", "task", "proxy"], "load_saved": ["model_dir", "task"]}
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
