"""Metrics of text, for the task kinds scored on text (extractive QA answers, generated text): declared in
``metrics.METRICS`` (name, label, direction) and implemented here under the same names, each an
``ExampleMetric``, per-example statistics aggregated into the score, so a bootstrap resamples rows of
statistics instead of recomputing the metric from text. Exact match and token F1 follow the official SQuAD 2.0
evaluation script; ROUGE is rouge_score's, BLEU sacrebleu's.
"""

import collections
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from rouge_score import rouge_scorer
from sacrebleu.metrics.bleu import BLEU

PUNCTUATION = frozenset(string.punctuation)


def mean_of_first_column(statistics: np.ndarray) -> float:
    return float(np.mean(statistics[:, 0]))


@dataclass(frozen=True)
class ExampleMetric:
    """A text metric as per-example statistics (predictions and reference lists -> an (n, k) array) and the
    aggregate of any subset of their rows (default: the mean of the single column, as for ROUGE or EM)."""

    statistics: Callable[[Sequence[str], Sequence[Sequence[str]]], np.ndarray]
    aggregate: Callable[[np.ndarray], float] = mean_of_first_column

    def __call__(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        return self.aggregate(self.statistics(predictions, references))


# ---------------------------------------------------------------------------------------- SQuAD 2.0


def normalize_answer(text: str) -> str:
    """The official script's normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _gold_answers(references: Sequence[str]) -> list[str]:
    # As the official script: answers that normalise to nothing are dropped; no answer means "" is gold.
    return [answer for answer in references if normalize_answer(answer)] or [""]


def _exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    same = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def _best_over_gold(score):
    def statistics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        rows = [max(score(p, gold) for gold in _gold_answers(refs)) for p, refs in zip(predictions, references)]
        return np.array(rows, dtype=float).reshape(-1, 1)

    return statistics


# ----------------------------------------------------------------------------------- ROUGE and BLEU


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


# The implementations ``metrics.METRICS`` declares, by its names.
exact_match = ExampleMetric(_best_over_gold(_exact))
token_f1 = ExampleMetric(_best_over_gold(_token_f1))
rouge1, rouge2, rougeL = (_rouge(name) for name in ("rouge1", "rouge2", "rougeL"))
bleu = ExampleMetric(bleu_statistics, bleu_from_statistics)
