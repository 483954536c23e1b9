"""The task kinds, registered by name: how a task of each kind is tokenised, which model it fine-tunes and
how a saved one is loaded, which metrics it may report, and the config section it reads.

A kind's declaration here is cheap to import (the config check and the Snakefile's job settings read it when
the workflow is parsed); its implementation is a module of its own, imported on first use, that defines

    encode(task, examples, tokenizer, max_length, settings, split) -> splits.SplitData
    load_model(model_spec, task, proxy[, base_dtype]) -> nn.Module   # heads and adapters fresh; proxy: stage 1's
    load_saved(model_dir, task) -> nn.Module           # what models.save_model wrote (an export)

both in float32 whatever the checkpoint was saved in (``torch_dtype`` in its config.json): transformers would
otherwise load a bf16 or fp16 checkpoint as it is, and train and fuse it in half precision. A LoRA kind's
(``model_family`` "causal_lm") ``load_model`` takes a fourth argument, ``base_dtype``, the dtype of its frozen
base (``bomf.device.frozen_dtype``): float32 but where the run trains in bf16 or fp16 on CUDA.

(``settings``: the kind's config section, or None). A new kind is that module, one entry in ``KINDS`` and
its schema section.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from ..device import frozen_dtype
from ..metrics import metrics_of
from .registry import TaskSpec


@dataclass(frozen=True)
class TrivialAnswer:
    """A kind's trivial answer: one prediction for every example, from the training split alone. A model that
    learned nothing scores about what it scores: the tables show it beside the oracle, and the warnings name it."""

    name: str  # what the tables and warnings call it
    of: Callable[[list[dict]], object]  # the training examples -> the prediction, as the test records hold them


def _majority_class(examples: list[dict]):
    labels = [e["label"] for e in examples]
    return max(sorted(set(labels)), key=labels.count)  # a tie: the lowest class id


def _mean(examples: list[dict]) -> float:
    return sum(e["label"] for e in examples) / len(examples)


def _no_answer(examples: list[dict]) -> str:
    return ""  # what tasks.qa predicts for "no answer"


@dataclass(frozen=True)
class TaskKind:
    name: str
    module: str  # the implementing module, bomf.<module>
    model_family: str  # "encoder" (fine-tuned in full, its proxy freezes lower layers) | "causal_lm" (LoRA)
    metrics: tuple[str, ...]  # the metrics a task of this kind may report (those metrics.METRICS gives it)
    settings_section: str | None = None  # the config section its data and evaluation read
    text_scored: bool = False  # scored on text (tasks.text_metrics), not on class ids or scores
    trivial: TrivialAnswer | None = None  # None: the kind has none

    @property
    def implementation(self) -> ModuleType:
        return importlib.import_module(f"{__package__}.{self.module}")

    def encode(self, task: TaskSpec, examples: list[dict], tokenizer, max_length: int, config: dict, split: str):
        """One split tokenised for this kind (``config``: the whole config, or at least the kind's section)."""
        settings = config[self.settings_section] if self.settings_section else None
        return self.implementation.encode(task, examples, tokenizer, max_length, settings, split)

    def load_model(self, model_spec: dict, task: TaskSpec, device, proxy: bool = False, precision: str = "fp32"):
        """The model this kind fine-tunes, from a catalog entry, on ``device``: the one place a job's model is
        put on its device (its batches: ``SplitData.batch``). ``precision``: the run's training precision
        (``bomf.device.Compute.training``), given by every job of the run, training or scoring, so all of them
        hold a LoRA model's frozen base alike. Heads and LoRA matrices draw from torch's global RNG: seed it
        before calling."""
        if self.model_family == "causal_lm":  # LoRA: a frozen base beside the adapters that train
            model = self.implementation.load_model(model_spec, task, proxy, frozen_dtype(device, precision))
        else:  # fine-tuned in full: nothing is frozen for good
            model = self.implementation.load_model(model_spec, task, proxy)
        return model.to(device)

    def load_saved(self, model_dir, task: TaskSpec):
        return self.implementation.load_saved(model_dir, task)


KINDS: dict[str, TaskKind] = {kind.name: kind for kind in (
    TaskKind("classification", "sequence", "encoder", metrics_of("classification"),
             trivial=TrivialAnswer("the training majority class", _majority_class)),
    TaskKind("regression", "sequence", "encoder", metrics_of("regression"),
             trivial=TrivialAnswer("the training mean", _mean)),
    TaskKind("extractive_qa", "qa", "encoder", metrics_of("extractive_qa"), "qa", text_scored=True,
             trivial=TrivialAnswer("no answer", _no_answer)),
    # No trivial answer: any one text for every input (the most frequent training reference, say) is an
    # arbitrary pick, not what a generator that learned nothing produces; constant predictions still warn.
    TaskKind("generation", "generation", "causal_lm", metrics_of("generation"), "generation", text_scored=True),
)}


def kind_of(task: TaskSpec) -> TaskKind:
    return KINDS[task.kind]
