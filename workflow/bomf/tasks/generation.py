"""Text generation tasks (SAMSum dialogue summarisation, E2E NLG) for a decoder-only language model,
fine-tuned with LoRA; the stage-1 proxy is a smaller LoRA rank.

An example is ``{"id": str, "source": str, "references": [str, ...], "group": str}``; ``group`` is what must
not be split across train and validation (the dialogue id for SAMSum, the meaning representation for E2E).
``GenerationData`` tokenises a split once into loss sequences (prompt + reference + eos) for training and
prompts for greedy generation, and is scored by loss and by text metrics (ROUGE, BLEU: ``text_metrics``) of
its generations.
"""

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..metrics import METRICS
from ..sources import resolve_model_source
from .models import is_lora
from .registry import TaskSpec
from .splits import SplitData, pad_rows

IGNORE = -100  # label of tokens the loss skips (prompt and padding), as transformers expects
# Logits (positions × vocabulary) the scoring loss holds at once: 64 MiB in float32, whatever the batch.
LOSS_CHUNK_LOGITS = 2 ** 24
# Config fields of architectures that transform the LM head's logits (Gemma 2's soft-capping, Cohere's
# scale): the chunked scoring loss applies the head alone, so such a model is refused when it is loaded.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale")


class GenerationData(SplitData):
    """A split tokenised once for a decoder-only LM.

    A loss sequence is prompt + " " + reference + eos, with labels only on the reference and eos. With
    ``expand_references`` (training) every reference is its own sequence; otherwise only the first one is.

    Truncation: the prompt's source is cut at its end (its beginning introduces the dialogue or meaning
    representation), by as much as the sequence needs to fit ``max_length``; the template's fixed text
    is never cut. Only if the target does not fit beside the source-less prompt is the target cut at its
    end (then without eos, since it does not really end there). Generation prompts cut the source so that
    prompt + ``max_new_tokens`` fits ``max_length``.
    """

    def __init__(self, examples: list[dict], tokenizer, prompt: str, max_length: int, max_new_tokens: int,
                 expand_references: bool):
        if prompt.count("{source}") != 1:
            raise ValueError(f"prompt must contain exactly one {{source}} field: {prompt!r}")
        self.examples = examples
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.eos_id = tokenizer.eos_token_id
        # An explicit pad id instead of setting tokenizer.pad_token, which may be shared.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if self.eos_id is None:
            raise ValueError("the tokenizer has no eos token, which generation needs to stop")
        before, after = prompt.split("{source}")
        # The tokenizer's own leading special tokens (e.g. Llama's BOS) come with the template's first part.
        prefix = tokenizer(before, add_special_tokens=True)["input_ids"]
        suffix = tokenizer(after, add_special_tokens=False)["input_ids"]
        fixed = len(prefix) + len(suffix)
        if fixed + max(max_new_tokens, 1) > max_length:
            raise ValueError(f"max_length {max_length} leaves no room after the prompt template's {fixed} "
                             f"tokens for {max_new_tokens} new tokens")
        self.prompts: list[list[int]] = []
        self.sequences: list[tuple[list[int], list[int]]] = []  # (input_ids, labels)
        for example in examples:
            source = tokenizer(example["source"], add_special_tokens=False)["input_ids"]
            self.prompts.append(prefix + source[:max_length - max_new_tokens - fixed] + suffix)
            references = example["references"] if expand_references else example["references"][:1]
            for reference in references:
                target = tokenizer(" " + reference, add_special_tokens=False)["input_ids"] + [self.eos_id]
                target = target[:max_length - fixed]
                prompt_ids = prefix + source[:max_length - fixed - len(target)] + suffix
                self.sequences.append((prompt_ids + target, [IGNORE] * len(prompt_ids) + target))

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def references(self) -> list[list[str]]:
        return [example["references"] for example in self.examples]

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids, _ in self.sequences]

    def collate(self, indices) -> dict[str, torch.Tensor]:
        """Right-padded loss sequences; ``model(**batch).loss`` is their token-weighted mean loss."""
        rows = [self.sequences[i] for i in indices]
        return {"input_ids": pad_rows([ids for ids, _ in rows], self.pad_id),
                "attention_mask": pad_rows([[1] * len(ids) for ids, _ in rows], 0),
                "labels": pad_rows([labels for _, labels in rows], IGNORE)}

    def fingerprint(self) -> str:
        """sha256 of every loss sequence's token ids and labels (lengths included, so no two splits of the
        same tokens collide)."""
        digest = hashlib.sha256()
        for ids, labels in self.sequences:
            digest.update(np.array([len(ids)], dtype=np.int64).tobytes())
            digest.update(np.array(ids, dtype=np.int64).tobytes())
            digest.update(np.array(labels, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def generate_token_ids(self, model: nn.Module, batch_size: int, device: torch.device) -> list[list[int]]:
        """Greedy new tokens per example, up to (not including) the first eos."""
        generated = []
        for start in range(0, len(self.prompts), batch_size):
            prompts = self.prompts[start:start + batch_size]
            width = max(len(p) for p in prompts)
            # Left padding, so every prompt ends where generation starts.
            input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=device)
            attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                                          device=device)
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                    max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
                                    eos_token_id=self.eos_id, pad_token_id=self.pad_id)
            for row in output[:, width:].tolist():
                generated.append(row[:row.index(self.eos_id)] if self.eos_id in row else row)
        return generated

    def generate(self, model: nn.Module, batch_size: int, device: torch.device) -> list[str]:
        """Greedy generation per example: the new text, stripped and cut at its first line break (the
        prompts ask for one line; a model that keeps going is starting something else)."""
        texts = self.tokenizer.batch_decode(self.generate_token_ids(model, batch_size, device),
                                            skip_special_tokens=True)
        return [_first_line(text) for text in texts]

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        """The mean over the batch's sequences of each sequence's mean token loss, so every example weighs the
        same whatever its length (as the per-example mean of classification).

        The final hidden states are computed once; the LM head and the float32 cross-entropy then run over
        chunks of the labelled positions (``LOSS_CHUNK_LOGITS`` logits at a time), so the batch's logits
        (B·L·V of them, gigabytes for a large vocabulary) are never materialised."""
        lm = model.get_base_model() if is_lora(model) else model  # a LoRA model's adapters are in its layers
        hidden = lm.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  use_cache=False).last_hidden_state
        # Token t predicts token t + 1.
        labels = batch["labels"][:, 1:]
        rows, positions = (labels != IGNORE).nonzero(as_tuple=True)
        targets = labels[rows, positions]
        head = lm.get_output_embeddings()
        step = max(1, LOSS_CHUNK_LOGITS // head.out_features)
        token_losses = torch.cat([
            F.cross_entropy(head(hidden[rows[start:start + step], positions[start:start + step]]).float(),
                            targets[start:start + step], reduction="none")
            for start in range(0, len(targets), step)])
        sums = torch.zeros(len(labels), dtype=torch.float32, device=labels.device).index_add_(0, rows, token_losses)
        counts = torch.bincount(rows, minlength=len(labels))
        return (sums / counts).mean(), None

    def decode(self, outputs: list, order: list[int], model: nn.Module, batch_size: int,
               device: torch.device) -> list[str]:
        return self.generate(model, batch_size, device)

    def score(self, metrics: list[str], predictions: list[str]) -> dict[str, float]:
        return {name: METRICS[name](predictions, self.references) for name in metrics}


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def encode(task: TaskSpec, examples: list[dict], tokenizer, max_length: int, settings: dict,
           split: str) -> GenerationData:
    """``settings``: the config's generation section. Training learns every reference of an example;
    validation and test score against all of them."""
    return GenerationData(examples, tokenizer, task.prompt, max_length, settings["max_new_tokens"],
                          expand_references=split == "train")


def load_model(model_spec: dict, task: TaskSpec, proxy: bool, base_dtype: torch.dtype) -> nn.Module:
    lora = model_spec["lora"]
    return load_causal_lm(model_spec["source"], lora, lora["proxy_rank"] if proxy else lora["rank"], base_dtype)


def load_causal_lm(source: str, lora: dict, rank: int, base_dtype: torch.dtype) -> nn.Module:
    """A causal LM with fresh LoRA adapters of ``rank`` on ``lora.target_modules``; only they train. The frozen
    base is loaded in ``base_dtype`` (``bomf.device.frozen_dtype``), the adapters are float32 whatever it is
    (peft's ``autocast_adapter_dtype``): they are what members hold, what fusion mixes and what fp16's loss
    scaler unscales. (A half-precision base rounds the adapters' random initialisation to its precision.)"""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = plain_head(AutoModelForCausalLM.from_pretrained(resolve_model_source(source), dtype=base_dtype))
    config = LoraConfig(r=rank, lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM")
    return get_peft_model(base, config, autocast_adapter_dtype=True)


def load_saved(model_dir: str | Path, task: TaskSpec) -> nn.Module:
    """The merged checkpoint ``models.save_model`` wrote (adapters folded into the base): an exported model."""
    from transformers import AutoModelForCausalLM

    return plain_head(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))


def plain_head(model: nn.Module) -> nn.Module:
    """``model``, whose logits are its LM head's output (what ``GenerationData.forward`` computes)."""
    for field in LOGIT_TRANSFORMS:
        if getattr(model.config, field, None) is not None:
            raise ValueError(f"{model.config.name_or_path}: its config sets {field}, a transform of the logits after "
                             f"the LM head, which the generation loss does not apply; use a model without one")
    return model
