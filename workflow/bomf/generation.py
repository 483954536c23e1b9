"""Text generation tasks (SAMSum dialogue summarisation, E2E NLG) for a decoder-only language model.

An example is ``{"id": str, "source": str, "references": [str, ...], "group": str}``; ``group`` is what must
not be split across train and validation (the dialogue id for SAMSum, the meaning representation for E2E).
``GenerationData`` plays the role of ``training.Encoded`` for these tasks: it tokenises a split once into
loss sequences (prompt + reference + eos) for training and prompts for greedy generation, and evaluates a
model by loss and by text metrics of its generations. The text metrics (ROUGE, BLEU) are registered in
``metrics.EXAMPLE_METRICS`` at import.
"""

import csv
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from rouge_score import rouge_scorer
from sacrebleu.metrics.bleu import BLEU
from torch import nn
from torch.nn import functional as F

from .metrics import EXAMPLE_METRICS, ExampleMetric
from .tasks import DataError
from .training import autocast

IGNORE = -100  # label of tokens the loss skips (prompt and padding), as transformers expects

SAMSUM_COLUMNS = ("id", "dialogue", "summary")
E2E_CSV_COLUMNS = ("mr", "ref")


# ---------------------------------------------------------------------------------------------- readers

def read_samsum(directory: Path, split: str) -> list[dict]:
    """A SAMSum split saved with ``datasets.save_to_disk`` under ``directory / split``."""
    import datasets

    path = Path(directory) / split
    if not path.is_dir():
        raise DataError(f"{path}: SAMSum split directory not found")
    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError as error:
        raise DataError(f"{path}: not a dataset saved with datasets.save_to_disk ({error})") from None
    return _samsum_examples(dataset, str(path))


def read_samsum_hub(split: str) -> list[dict]:
    """A SAMSum split from the Hugging Face hub (needs network access)."""
    import datasets

    dataset = datasets.load_dataset("knkarthick/samsum", split=split)
    return _samsum_examples(dataset, f"hub knkarthick/samsum[{split}]")


def read_e2e_csv(path: Path) -> list[dict]:
    """An E2E NLG CSV (``mr``, ``ref``; one row per reference): one example per distinct meaning
    representation, in order of first appearance, with all its references."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: E2E CSV file not found")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in E2E_CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
        pairs = [(row["mr"], row["ref"]) for row in reader]
    return _group_by_meaning(pairs, str(path))


def read_e2e_hub(split: str) -> list[dict]:
    """An E2E NLG split from the Hugging Face hub (needs network access), grouped as ``read_e2e_csv``."""
    import datasets

    dataset = datasets.load_dataset("tuetschek/e2e_nlg", split=split)
    pairs = zip(dataset["meaning_representation"], dataset["human_reference"])
    return _group_by_meaning(pairs, f"hub tuetschek/e2e_nlg[{split}]")


def _samsum_examples(dataset, where: str) -> list[dict]:
    missing = [c for c in SAMSUM_COLUMNS if c not in dataset.column_names]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)} (columns: {dataset.column_names})")
    examples = []
    for row_number, row in enumerate(dataset, start=1):
        location = f"{where} row {row_number}"
        examples.append({
            "id": str(row["id"]),
            "source": _non_empty(row["dialogue"], location, "dialogue"),
            "references": [_non_empty(row["summary"], location, "summary")],
            "group": str(row["id"]),
        })
    return examples


def _group_by_meaning(pairs: Iterable[tuple[str, str]], where: str) -> list[dict]:
    references: dict[str, list[str]] = {}  # dicts keep insertion order: first appearance of each MR
    for row_number, (mr, ref) in enumerate(pairs, start=1):
        location = f"{where} row {row_number}"
        mr = _non_empty(mr, location, "mr")
        references.setdefault(mr, []).append(_non_empty(ref, location, "ref"))
    return [{"id": str(index), "source": mr, "references": refs, "group": mr}
            for index, (mr, refs) in enumerate(references.items())]


def _non_empty(value, location: str, field: str) -> str:
    text = (value or "").strip()
    if not text:
        raise DataError(f"{location}: empty {field}")
    return text


# ---------------------------------------------------------------------------------------------- metrics

def _rouge(rouge_type: str) -> ExampleMetric:
    scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=True)

    def statistics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
        # score_multi keeps the reference with the highest F-measure.
        return np.array([[scorer.score_multi(list(refs), prediction)[rouge_type].fmeasure]
                         for prediction, refs in zip(predictions, references, strict=True)],
                        dtype=float).reshape(-1, 1)

    return ExampleMetric(statistics)


_BLEU = BLEU()  # sacrebleu's defaults, the same as sacrebleu.corpus_bleu


def bleu_statistics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    """Per example, sacrebleu's sufficient statistics: hypothesis length, closest reference length, then
    n-gram matches and totals for n = 1..4. Each example is its own one-segment corpus, so examples may
    have different numbers of references."""
    rows = [_BLEU._extract_corpus_statistics([prediction], [[ref] for ref in refs])[0]
            for prediction, refs in zip(predictions, references, strict=True)]
    return np.array(rows, dtype=np.int64).reshape(-1, 2 + 2 * _BLEU.max_ngram_order)


def bleu_from_statistics(statistics: np.ndarray) -> float:
    """Corpus BLEU in [0, 1] of any subset of ``bleu_statistics`` rows (summed, as sacrebleu does)."""
    totals = [int(value) for value in np.asarray(statistics, dtype=np.int64).sum(axis=0)]
    return _BLEU._compute_score_from_stats(totals).score / 100


EXAMPLE_METRICS.update({name: _rouge(name) for name in ("rouge1", "rouge2", "rougeL")})
EXAMPLE_METRICS["bleu"] = ExampleMetric(bleu_statistics, bleu_from_statistics)


# ------------------------------------------------------------------------------------- tokenised split

class GenerationData:
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

    def evaluate(self, model: nn.Module, metrics: list[str], batch_size: int,
                 device: torch.device) -> tuple[dict[str, float], list[str]]:
        """Loss and text metrics over the split, and the generated text per example.

        The loss is the mean over loss sequences of each sequence's mean token loss, so every example
        weighs the same whatever its length (as the per-example mean of classification)."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), autocast(device):
                loss = self._mean_sequence_loss(model, batch_size, device)
                predictions = self.generate(model, batch_size, device)
        finally:
            model.train(was_training)
        references = self.references
        scores = {"loss": loss}
        scores.update({name: EXAMPLE_METRICS[name](predictions, references) for name in metrics})
        return scores, predictions

    def _mean_sequence_loss(self, model: nn.Module, batch_size: int, device: torch.device) -> float:
        losses = []
        for start in range(0, len(self), batch_size):
            batch = self.batch(range(start, min(start + batch_size, len(self))), device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            # Token t predicts token t + 1.
            labels = batch["labels"][:, 1:]
            token_losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels,
                                           ignore_index=IGNORE, reduction="none")
            counts = (labels != IGNORE).sum(dim=1)
            losses.append(token_losses.sum(dim=1) / counts)
        return torch.cat(losses).mean().item()


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""
