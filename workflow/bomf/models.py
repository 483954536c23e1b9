"""Where models come from, which head a task kind gets, and what the stage-1 proxy changes.

Encoders (classification, regression, extractive QA) are fine-tuned in full; their proxy freezes the lowest
layers. Causal LMs (generation) are fine-tuned with LoRA; their proxy is a smaller LoRA rank. A member is
what fine-tuning changes: the full state of an encoder, the adapter weights of a LoRA model.
"""

import sys
from pathlib import Path

import torch
from torch import nn

from .sources import resolve_model_source
from .tasks import TaskSpec


def convert_gguf(source: str, out_dir: str | Path) -> None:
    """Dequantise a GGUF model into an ordinary fp32 transformers checkpoint (model + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(resolve_model_source(source))
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are dequantised: save them as plain tensors
    del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_source(source))


def load_model(model_spec: dict, task: TaskSpec, proxy: bool = False) -> nn.Module:
    """The model a task kind fine-tunes, from a catalog entry; ``proxy``: the stage-1 proxy (lowest
    ``proxy_frozen_layers`` frozen, or LoRA rank ``lora.proxy_rank``). Heads and LoRA matrices draw from
    torch's global RNG: seed it before calling."""
    source = model_spec["source"]
    if task.kind == "generation":
        lora = model_spec["lora"]
        return load_causal_lm(source, lora, lora["proxy_rank"] if proxy else lora["rank"])
    if task.kind == "extractive_qa":
        from transformers import AutoModelForQuestionAnswering

        model = AutoModelForQuestionAnswering.from_pretrained(resolve_model_source(source))
    else:
        model = load_classifier(source, task)
    if proxy:
        freeze_lower_layers(model, model_spec["proxy_frozen_layers"])
    return model


def load_causal_lm(source: str, lora: dict, rank: int) -> nn.Module:
    """A causal LM with fresh LoRA adapters of ``rank`` on ``lora.target_modules``; only they train."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(resolve_model_source(source), dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM")
    return get_peft_model(base, config)


def is_lora(model: nn.Module) -> bool:
    # Without peft imported no model can be a PeftModel: encoder jobs never pay for importing it.
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def member_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What fine-tuning changed, as CPU tensors: the adapter weights of a LoRA model, else the full state."""
    state = model.state_dict()
    if is_lora(model):
        state = {name: tensor for name, tensor in state.items() if "lora_" in name}
    return {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in state.items()}


def load_member_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a ``member_state``: every tensor of the model for an encoder, every adapter tensor for LoRA."""
    if not is_lora(model):
        model.load_state_dict(state, strict=True)
        return
    result = model.load_state_dict(state, strict=False)
    missing = [name for name in result.missing_keys if "lora_" in name]
    if result.unexpected_keys or missing:
        raise ValueError(f"adapter state does not fit the model: unexpected {result.unexpected_keys[:3]}, "
                         f"missing {missing[:3]}")


def save_model(model: nn.Module, tokenizer, out_dir: str | Path) -> None:
    """A regular transformers checkpoint in ``out_dir``/model; a LoRA model also keeps its adapter in
    ``out_dir``/adapter and is merged into its base for the checkpoint (the model is consumed)."""
    out_dir = Path(out_dir)
    if is_lora(model):
        model.save_pretrained(out_dir / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")


def load_saved(model_dir: str | Path, task: TaskSpec) -> nn.Module:
    """A checkpoint written by ``save_model``, with the head of the task's kind."""
    from transformers import AutoModelForCausalLM, AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    auto = {"generation": AutoModelForCausalLM, "extractive_qa": AutoModelForQuestionAnswering}.get(
        task.kind, AutoModelForSequenceClassification)
    return auto.from_pretrained(model_dir)


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
