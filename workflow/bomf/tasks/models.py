"""What every task kind does with a model: tokenizers, members (what fine-tuning changes: the full state of an
encoder, the adapter weights of a LoRA model), saving, the encoder proxy's frozen layers. Which
model a kind fine-tunes is the kind's (``kinds``).
"""

import sys
from pathlib import Path

import torch
from torch import nn

from ..sources import resolve_model_source


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


def is_lora(model: nn.Module) -> bool:
    # Without peft imported no model can be a PeftModel: encoder jobs never pay for importing it.
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def member_names(model: nn.Module) -> list[str]:
    """The state-dict names of what fine-tuning changes: a LoRA model's adapter tensors, else every tensor."""
    names = list(model.state_dict())
    return [name for name in names if "lora_" in name] if is_lora(model) else names


def member_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What fine-tuning changed, as CPU tensors: the adapter weights of a LoRA model, else the full state."""
    state = model.state_dict()
    return {name: state[name].detach().to("cpu", copy=True).contiguous() for name in member_names(model)}


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


def save_model(model: nn.Module, tokenizer, out_dir: str | Path) -> nn.Module:
    """A regular transformers checkpoint with its tokenizer in ``out_dir``; a LoRA model also keeps its adapter
    in ``out_dir``/adapter and is merged into its base for the checkpoint (the model is consumed), in float32:
    a base held in half precision (``bomf.device.frozen_dtype``) is widened, exactly, before the merge.
    Returns the model saved."""
    out_dir = Path(out_dir)
    if is_lora(model):
        model.save_pretrained(out_dir / "adapter")
        model = model.float().merge_and_unload()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: the ModuleList whose length is the config's layer count."""
    count = model.config.num_hidden_layers
    for module in model.base_model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"{type(model).__name__}: no list of {count} transformer layers found")


def freeze_lower_layers(model: nn.Module, count: int, *, embeddings: bool) -> None:
    """The stage-1 proxy: the lowest ``count`` transformer layers stop training; upper layers and the head
    still train. ``embeddings``: the embeddings below them stop too (where ``count`` > 0), so the backward
    pass stops at the lowest layer that trains; otherwise they train, as in the paper, and the backward pass
    runs through every layer to reach them."""
    layers = encoder_layers(model)
    if count > len(layers):
        raise ValueError(f"cannot freeze {count} layers: the model has {len(layers)}")
    for layer in list(layers)[:count]:
        layer.requires_grad_(False)
    if embeddings and count:
        getattr(model.base_model, "embeddings", model.get_input_embeddings()).requires_grad_(False)


def trainable_fraction(model: nn.Module) -> float:
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / total
