"""Task registry: what each task is (its kind, labels and metrics), and the error bad data raises. A leaf:
it imports nothing of bomf, so every module may import it. How a kind trains and scores is in ``kinds``;
how raw data is read, in ``readers``.

Every reader of one task kind produces one example shape, so training, fusion and evaluation never look at
where a task came from:
- classification / regression: ``{"text": [one or two strings], "label": int | float}``;
- extractive_qa: ``{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}, "group"}``;
- generation: ``{"id", "source", "references": [...], "group"}``.
``group`` is what must not be split between train and validation (a SQuAD article, an E2E meaning
representation).
"""

from dataclasses import dataclass


class DataError(ValueError):
    """Bad input data; the message names the file and, where it applies, the line or column."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # a name in kinds.KINDS: "classification" | "regression" | "extractive_qa" | "generation"
    labels: tuple[str, ...]  # classification: raw label values in class-id order; otherwise ()
    metrics: tuple[str, ...]  # the first is the primary metric
    prompt: str = ""  # generation: the prompt template, with one {source} field

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == "regression" else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"


@dataclass(frozen=True)
class GlueFormat:
    """Where a GLUE task's fields sit in its official TSV files and in the hub's nyu-mll/glue."""

    directory: str
    hub_config: str
    has_header: bool
    text_columns: tuple[int, ...]
    label_column: int


GLUE_TASKS: dict[str, TaskSpec] = {
    "rte": TaskSpec("rte", "classification", ("entailment", "not_entailment"), ("accuracy",)),
    "mrpc": TaskSpec("mrpc", "classification", ("0", "1"), ("f1", "accuracy")),
    "cola": TaskSpec("cola", "classification", ("0", "1"), ("mcc",)),
    "sst2": TaskSpec("sst2", "classification", ("0", "1"), ("accuracy",)),
    "stsb": TaskSpec("stsb", "regression", (), ("pearson", "spearman")),
}

GLUE_FORMATS: dict[str, GlueFormat] = {
    "rte": GlueFormat("RTE", "rte", True, (1, 2), 3),
    "mrpc": GlueFormat("MRPC", "mrpc", True, (3, 4), 0),
    "cola": GlueFormat("CoLA", "cola", False, (3,), 1),
    "sst2": GlueFormat("SST-2", "sst2", True, (0,), 1),
    "stsb": GlueFormat("STS-B", "stsb", True, (7, 8), 9),
}


# Beyond GLUE: extractive QA with an encoder, generation with a causal LM (LoRA).
TEXT_TASKS: dict[str, TaskSpec] = {
    "squad_v2": TaskSpec("squad_v2", "extractive_qa", (), ("token_f1", "exact_match")),
    "samsum": TaskSpec("samsum", "generation", (), ("rouge1", "rouge2", "rougeL"),
                       prompt="Summarize the dialogue.\n{source}\nSummary:"),
    "e2e": TaskSpec("e2e", "generation", (), ("bleu", "rougeL"),
                    prompt="Describe the restaurant in one sentence.\n{source}\nDescription:"),
}
BUILTIN_TASKS: dict[str, TaskSpec] = {**GLUE_TASKS, **TEXT_TASKS}


def get_task(name: str, custom_tasks: dict | None = None) -> TaskSpec:
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    custom = (custom_tasks or {}).get(name)
    if custom is None:
        raise KeyError(f"unknown task {name!r}: not a built-in task ({', '.join(BUILTIN_TASKS)}) "
                       f"nor in custom_tasks")
    labels = tuple(str(v) for v in custom.get("labels", ())) if custom["kind"] == "classification" else ()
    return TaskSpec(name, custom["kind"], labels, tuple(custom["metrics"]))
