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

from ..sources import resolve_model_source
from .registry import TaskSpec
from .splits import SplitData
from .text_metrics import EXAMPLE_METRICS

IGNORE = -100  # label of tokens the loss skips (prompt and padding), as transformers expects


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

    def batch(self, indices, device: torch.device) -> dict[str, torch.Tensor]:
        """Right-padded loss sequences; ``model(**batch).loss`` is their token-weighted mean loss."""
        rows = [self.sequences[i] for i in indices]
        width = max(len(ids) for ids, _ in rows)
        input_ids = [ids + [self.pad_id] * (width - len(ids)) for ids, _ in rows]
        labels = [labels + [IGNORE] * (width - len(labels)) for _, labels in rows]
        attention_mask = [[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]
        return {"input_ids": torch.tensor(input_ids, device=device),
                "attention_mask": torch.tensor(attention_mask, device=device),
                "labels": torch.tensor(labels, device=device)}

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

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, None]:
        """The mean over the batch's sequences of each sequence's mean token loss, so every example weighs the
        same whatever its length (as the per-example mean of classification)."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # Token t predicts token t + 1.
        labels = batch["labels"][:, 1:]
        token_losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE,
                                       reduction="none")
        counts = (labels != IGNORE).sum(dim=1)
        return (token_losses.sum(dim=1) / counts).mean().item(), None

    def decode(self, outputs: list, model: nn.Module, batch_size: int, device: torch.device) -> list[str]:
        return self.generate(model, batch_size, device)

    def score(self, metrics: list[str], predictions: list[str]) -> dict[str, float]:
        return {name: EXAMPLE_METRICS[name](predictions, self.references) for name in metrics}


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def encode(task: TaskSpec, examples: list[dict], tokenizer, max_length: int, settings: dict,
           split: str) -> GenerationData:
    """``settings``: the config's generation section. Training learns every reference of an example;
    validation and test score against all of them."""
    return GenerationData(examples, tokenizer, task.prompt, max_length, settings["max_new_tokens"],
                          expand_references=split == "train")


def load_model(model_spec: dict, task: TaskSpec, proxy: bool) -> nn.Module:
    lora = model_spec["lora"]
    return load_causal_lm(model_spec["source"], lora, lora["proxy_rank"] if proxy else lora["rank"])


def load_causal_lm(source: str, lora: dict, rank: int) -> nn.Module:
    """A causal LM with fresh LoRA adapters of ``rank`` on ``lora.target_modules``; only they train."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(resolve_model_source(source), dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM")
    return get_peft_model(base, config)


def load_saved(model_dir: str | Path, task: TaskSpec) -> nn.Module:
    """The merged checkpoint ``models.save_model`` wrote (adapters folded into the base): an exported model."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
