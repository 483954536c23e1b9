"""Result tables: methods x tasks, mean ± std of the test primary metric over seeds (x100)."""

import numpy as np
import pandas as pd


def run_summary(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        row = {"method": r["method"]}
        row.update({f"val_{k}": v for k, v in r["validation"].items()})
        row.update({f"test_{k}": v for k, v in r["test"].items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(values: np.ndarray) -> str:
    if len(values) == 0:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def results_table(records: list[dict], methods: list[str]) -> tuple[pd.DataFrame, str]:
    """Long CSV rows (model, method, task, metric, mean, std, seeds) and a Markdown table per model."""
    frame = pd.DataFrame([{"model": r["model"], "method": r["method"], "task": r["task"], "seed": r["seed"],
                           "metric": r["primary_metric"], "score": 100 * r["test"][r["primary_metric"]]}
                          for r in records])
    grouped = frame.groupby(["model", "method", "task", "metric"], sort=False)["score"]
    long = grouped.agg(mean="mean", std=lambda s: s.std(ddof=1) if len(s) > 1 else np.nan,
                       seeds="count").reset_index()
    tasks = list(dict.fromkeys(frame["task"]))
    metric_of = dict(zip(frame["task"], frame["metric"]))
    sections = []
    for model in dict.fromkeys(frame["model"]):
        header = ["method", *[f"{t} ({metric_of[t]})" for t in tasks], "avg"]
        lines = [f"### {model}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in methods:
            subset = frame[(frame["model"] == model) & (frame["method"] == method)]
            if subset.empty:
                continue
            cells = [_cell(subset[subset["task"] == t]["score"].to_numpy()) for t in tasks]
            # The average over tasks is taken per seed, then summarised across seeds.
            per_seed = subset.groupby("seed")["score"].mean().to_numpy() if subset["task"].nunique() == len(tasks) else np.array([])
            lines.append("| " + " | ".join([method, *cells, _cell(per_seed)]) + " |")
        sections.append("\n".join(lines))
    note = ("Test-split scores x100 (mean ± sample std over seeds). Selection used only the validation split "
            "carved out of train.")
    return long, "\n\n".join(sections) + "\n\n" + note + "\n"
