"""Names of files the rules and the package share, in one place, importable without any heavy library (the
Snakefile reads it when the workflow is parsed)."""

from pathlib import Path

# One (task, model, seed) run's directory under output_dir, as a Snakemake wildcard pattern; its jobs'
# benchmark files lie under the same pattern below BENCHMARK_DIR (with data/<task>.tsv and models/<model>.tsv).
RUN_DIR = "{task}/{model}/seed{seed}"
BENCHMARK_DIR = "benchmarks"
# Exported models (Hugging Face directories with model cards) under output_dir, one per run and method below it.
EXPORT_DIRECTORY = "export"

# The selection-rule study of a run's BOMF search (tables.selection_study), in its run directory: not in
# fusion/bomf/, which is the fuse job's own output directory.
SELECTION_STUDY_FILE = "selection_rules.csv"

# A stage-2 member's weights, in members/ of its run (index from 0).
MEMBER_FILE = "member{index:02d}.safetensors"


def prepared_model_dir(output_dir: str, model: str) -> Path:
    """Where the prepare_model rule writes a GGUF model converted to an ordinary checkpoint."""
    return Path(output_dir) / "models" / model



def run_of(run_dir) -> tuple[str, str, int]:
    """(task, model, seed) of a run's directory (``RUN_DIR`` under output_dir)."""
    task, model, seed = Path(run_dir).parts[-3:]
    return task, model, int(seed.removeprefix("seed"))
