"""Table 5, the cost table: Snakemake's benchmark files read back by stage and method (the rendering is
``bomf.report.render``'s)."""

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..layout import RUN_DIR
from .render import METHOD_LABELS, STAGE_LABELS, TASK_LABELS, Number, Section, Table, render, sort_key

COST_CAPTION = (
    "Cost from Snakemake's benchmark files: wall and CPU seconds summed over a stage's jobs within one "
    "(task, model, seed) run, peak RSS the largest of those jobs, each then averaged over seeds. Fusion "
    "rows split stage 3 by method; evaluations: fused models scored on validation by the method's search "
    "(the members' own scores not counted). Data preparation is shared by every model and seed.")


BENCHMARK_COLUMNS = ["path", "task", "model", "seed", "stage", "method", "wall_s", "cpu_s", "max_rss_mb"]
# RUN_DIR with its wildcards as named groups: the run a benchmark file belongs to, then its job's path.
_RUN_FILE = re.compile(RUN_DIR.format(task=r"(?P<task>[^/]+)", model=r"(?P<model>[^/]+)", seed=r"(?P<seed>\d+)")
                       + r"/(?P<job>.+)\.tsv")


def _benchmark_key(relative: Path) -> dict | None:
    """Task, model, seed, stage and method named by a benchmark path, or None for a shape we do not know."""
    parts = relative.parts
    if len(parts) == 2 and parts[0] in ("data", "models"):  # shared by a task's or a model's runs
        name = relative.stem
        return {"task": name if parts[0] == "data" else None, "model": name if parts[0] == "models" else None,
                "seed": None, "stage": parts[0].removesuffix("s"), "method": None}
    match = _RUN_FILE.fullmatch(relative.as_posix())
    if match is None:
        return None
    job = match["job"].split("/")
    stage = job[0]  # seed0/finetune.tsv is the finetune stage itself
    method = job[1] if stage in ("fusion", "test") and len(job) == 2 else None
    return {"task": match["task"], "model": match["model"], "seed": int(match["seed"]), "stage": stage,
            "method": method}


def read_benchmarks(root) -> pd.DataFrame:
    """Every Snakemake benchmark TSV under ``root`` (results/benchmarks), one row per file.

    Seconds and max_rss (MB, as Snakemake writes it) are averaged over the file's rows (``repeat()``
    benchmarks the same job several times); 'NA' and '-' are missing values. Files whose path has no known
    shape, or that hold no row with an ``s`` column, are skipped with a warning.
    """
    root = Path(root)
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        relative = path.relative_to(root)
        key = _benchmark_key(relative)
        if key is None:
            warnings.warn(f"skipping benchmark file of unknown path shape: {path}", stacklevel=2)
            continue
        try:
            measured = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
        except pd.errors.EmptyDataError:
            measured = pd.DataFrame()
        if "s" not in measured.columns or measured.empty:
            warnings.warn(f"skipping benchmark file without measurements: {path}", stacklevel=2)
            continue
        number = {column: pd.to_numeric(measured[column], errors="coerce").mean()
                  if column in measured.columns else float("nan") for column in ("s", "cpu_time", "max_rss")}
        rows.append({"path": relative.as_posix(), **key, "wall_s": number["s"], "cpu_s": number["cpu_time"],
                     "max_rss_mb": number["max_rss"]})
    frame = pd.DataFrame(rows, columns=BENCHMARK_COLUMNS)
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def _evaluations_frame(evaluations) -> pd.DataFrame:
    """(task, model, seed, method, evaluations) rows from a frame with those columns or a mapping."""
    columns = ["task", "model", "seed", "method", "evaluations"]
    if isinstance(evaluations, pd.DataFrame):
        return evaluations[columns]
    return pd.DataFrame([(*key, count) for key, count in (evaluations or {}).items()], columns=columns)


def cost_table(benchmarks: pd.DataFrame, evaluations=None) -> Table:
    """Table 5: per (model, task), each stage's cost, and each fusion method's cost and evaluation count.

    ``benchmarks`` is ``read_benchmarks``' frame; ``evaluations`` maps (task, model, seed, method) to the
    number of fused models a method scored, or is a frame with those columns and ``evaluations``.
    """
    run = ["task", "model", "seed"]
    sums = {"wall_s": ("wall_s", lambda s: s.sum(min_count=1)), "cpu_s": ("cpu_s", lambda s: s.sum(min_count=1)),
            "max_rss_mb": ("max_rss_mb", "max")}
    # A stage's jobs add up within one run (data preparation: one run per task); runs are then averaged.
    per_stage = benchmarks.groupby([*run, "stage"], dropna=False).agg(**sums).reset_index()
    fusion = benchmarks[benchmarks["stage"] == "fusion"]
    per_method = (fusion.groupby([*run, "stage", "method"], dropna=False).agg(**sums).reset_index()
                  .merge(_evaluations_frame(evaluations).assign(stage="fusion"), on=[*run, "stage", "method"],
                         how="outer"))
    per_run = pd.concat([per_stage.assign(method=None, evaluations=np.nan), per_method], ignore_index=True)
    long = (per_run.groupby(["model", "task", "stage", "method"], dropna=False)
            .agg(wall_s=("wall_s", "mean"), cpu_s=("cpu_s", "mean"), max_rss_mb=("max_rss_mb", "mean"),
                 evaluations=("evaluations", "mean"), runs=("task", "size"))
            .reset_index()
            .sort_values(["model", "task", "stage", "method"], key=sort_key, na_position="first", kind="stable"))
    sections = []
    for model, group in long.groupby("model", dropna=False, sort=False):
        rows = []
        for r in group.itertuples(index=False):
            what = (STAGE_LABELS.get(r.stage, r.stage) if pd.isna(r.method)
                    else f"Fusion: {METHOD_LABELS.get(r.method, r.method)}")
            numbers = ((r.wall_s, 1), (r.cpu_s, 1), (r.max_rss_mb, 0), (r.evaluations, 0))
            task = "All tasks" if pd.isna(r.task) else TASK_LABELS.get(r.task, r.task)  # a model's conversion
            rows.append((task, what,
                         *(None if pd.isna(value) else Number(value, decimals=places) for value, places in numbers)))
        title = "Shared by every model and seed" if pd.isna(model) else model
        sections.append(Section(title, ("Task", "Stage", "Wall (s)", "CPU (s)", "Peak RSS (MB)", "Evaluations"),
                                 tuple(rows), text_columns=2))
    return render(long, sections, COST_CAPTION, "tab:bomf-cost")
