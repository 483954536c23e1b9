"""How the tables show results: the labels of methods, tasks and stages (a metric's is its ``metrics.METRICS``
entry's), the order they are listed in, and the Markdown and LaTeX renderings every table shares.

A ``Table`` holds a long-form frame (the CSV) and its Markdown and LaTeX renderings; ``Table.write(prefix)``
writes prefix.csv, prefix.md and prefix.tex. The LaTeX is a ``table`` float of booktabs tabulars, one per
``Section``. A ``Number`` is shown as mean ± sample std (no ± where the std is NaN), bold or underlined by its mark.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import write_csv, write_text

METHOD_LABELS = {
    "best_member": "Fine-tune (best member)",
    "last_member": "Fine-tune (last member)",
    "grid_finetune": "Fine-tune, grid hyperparameters (no BO)",
    "hpbo_full": "Fine-tune, stage-1 BO on the full model",
    "swa": "SWA",
    "otfusion": "OTFusion",
    "greedy_soup": "Greedy soup",
    "learned_soup": "Learned soup",
    "twa": "TWA",
    "bo_metric": "BO, metric only",
    "bo_loss": "BO, loss only",
    "ema": "EMA",
    "task_arithmetic": "Task arithmetic",
    "ties": "TIES-merging",
    "dare": "DARE",
    "bomf": "BOMF",
    "oracle_subset": "Best subset (oracle, test-selected)",
    "trivial": "Trivial answer (majority class, mean or no answer)",
}
# The paper's task order; other tasks follow alphabetically under their own names.
TASK_LABELS = {"rte": "RTE", "mrpc": "MRPC", "cola": "CoLA", "stsb": "STS-B", "sst2": "SST-2",
               "squad_v2": "SQuAD 2.0", "samsum": "SAMSum", "e2e": "E2E"}
# Benchmark stages in pipeline order; unknown stages follow alphabetically under their own names.
STAGE_LABELS = {
    "data": "Data preparation",
    "model": "Model preparation (hub download or GGUF conversion)",
    "hpo": "Stage 1: BO on the proxy",
    "hpo_full": "Stage 1: BO on the full model",
    "grid": "Grid fine-tunes",
    "finetune": "Stage 2: fine-tune",
    "import": "Stage 2: imported checkpoints (checked, scored)",
    "fusion": "Stage 3: fusion, all methods",
    "test": "Test evaluation",
    "landscape": "Loss/metric landscape",
}


@dataclass(frozen=True, eq=False)
class Table:
    frame: pd.DataFrame  # long form, one row per shown number
    markdown: str
    latex: str

    def write(self, prefix) -> tuple[Path, Path, Path]:
        """Write prefix.csv, prefix.md and prefix.tex, each atomically."""
        paths = tuple(Path(f"{prefix}{suffix}") for suffix in (".csv", ".md", ".tex"))
        write_csv(paths[0], self.frame)
        write_text(paths[1], self.markdown)
        write_text(paths[2], self.latex)
        return paths


# ----------------------------------------------------------------------------------------------- rendering

@dataclass(frozen=True)
class Number:
    mean: float
    std: float = float("nan")  # NaN: shown without ±
    decimals: int = 2
    mark: str = ""  # "best" | "second" | ""


Cell = str | Number | None  # None: missing


@dataclass(frozen=True)
class Section:
    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    text_columns: int = 1  # leading left-aligned columns
    ruled_rows: frozenset[int] = field(default_factory=frozenset)  # rows set apart by a rule above


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "×": r"$\times$", "−": "$-$", "Δ": r"$\Delta$", "–": "--", "—": "---"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def _number_text(number: Number, latex: bool) -> str:
    text = f"{number.mean:.{number.decimals}f}"
    if np.isfinite(number.std):
        text += (r" $\pm$ " if latex else " ± ") + f"{number.std:.{number.decimals}f}"
    if number.mark == "best":
        return rf"\textbf{{{text}}}" if latex else f"**{text}**"
    if number.mark == "second":
        return rf"\underline{{{text}}}" if latex else f"<u>{text}</u>"
    return text


def _cell_text(cell: Cell, latex: bool) -> str:
    if cell is None:
        return "--" if latex else "–"
    if isinstance(cell, Number):
        return _number_text(cell, latex)
    return latex_escape(cell) if latex else cell.replace("|", r"\|")


def _render_markdown(sections: Sequence[Section], caption: str) -> str:
    parts = []
    for section in sections:
        align = [":---"] * section.text_columns + ["---:"] * (len(section.header) - section.text_columns)
        lines = [f"### {section.title}", "", "| " + " | ".join(section.header) + " |",
                 "|" + "|".join(align) + "|"]
        lines += ["| " + " | ".join(_cell_text(c, latex=False) for c in row) + " |" for row in section.rows]
        parts.append("\n".join(lines))
    parts.append(caption if sections else f"No results to show.\n\n{caption}")
    return "\n\n".join(parts) + "\n"


def _render_latex(sections: Sequence[Section], caption: str, label: str) -> str:
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}", rf"\label{{{label}}}"]
    for number, section in enumerate(sections):
        if number:
            lines.append(r"\medskip")
        width = len(section.header)
        lines += [rf"\begin{{tabular}}{{{'l' * section.text_columns}{'r' * (width - section.text_columns)}}}",
                  r"\toprule", rf"\multicolumn{{{width}}}{{l}}{{\textit{{{latex_escape(section.title)}}}}} \\",
                  r"\midrule", " & ".join(latex_escape(h) for h in section.header) + r" \\", r"\midrule"]
        for index, row in enumerate(section.rows):
            if index in section.ruled_rows:
                lines.append(r"\midrule")
            lines.append(" & ".join(_cell_text(c, latex=True) for c in row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
    if not sections:
        lines.append("No results to show.")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def render(frame: pd.DataFrame, sections: Sequence[Section], caption: str, label: str) -> Table:
    """A table: ``frame`` as its CSV, ``sections`` rendered in Markdown and LaTeX (``label``: the LaTeX label)."""
    return Table(frame.reset_index(drop=True), _render_markdown(sections, caption),
                 _render_latex(sections, caption, label))


def ordered(names: Iterable[str], known: Sequence[str]) -> list[str]:
    """The distinct ``names`` in the order of ``known``; others alphabetically after."""
    return sorted(set(names), key=lambda name: (known.index(name) if name in known else len(known), name))


def sort_key(column: pd.Series) -> pd.Series:
    """Order tasks, stages and methods as the paper and pipeline do; other values alphabetically after."""
    known = {"task": list(TASK_LABELS), "stage": list(STAGE_LABELS), "method": list(METHOD_LABELS)}.get(column.name)
    if known is None:
        return column
    rank = {name: i for i, name in enumerate(ordered(column.dropna(), known))}
    return column.map(rank)
