from snakemake.utils import min_version

import re
import sys

from bomf.config import ConfigError, job_settings, validate_config
from bomf.device import COMPUTE_SETTINGS, local_problem
from bomf.fuse.fusion import PARAMETERS
from bomf.layout import BENCHMARK_DIR, EXPORT_DIRECTORY, MEMBER_FILE, RUN_DIR, prepared_model_dir
from bomf.records import (
    EVALUATION_FILE,
    GRID_POINT_FILE,
    HPO_CHOICE_FILE,
    HPO_TRIAL_FILE,
    MEMBER_MANIFEST_FILE,
    SUGGESTION_FILE,
)
from bomf.report.provenance import log_command
from bomf.settings import canonical, catalog_name, config_runs, run_methods
from bomf.sources import is_gguf
from bomf.train.checkpoints import find_checkpoints

min_version("9.0")


# Schema defaults are filled in and every field checked before any job is scheduled; --config values
# (strings, as Snakemake passes them) are read with the types the schema gives them. Every problem is one
# line on the terminal, without Python frames.
try:
    validate_config(config, command_line=workflow.config_settings.config, config_files=workflow.configfiles)
except ConfigError as error:
    sys.exit(f"bomf: {error}")

# Compute rules declare `threads: 1` (torch is sized to it, bomf.runtime.job): on a CPU machine the
# independent jobs (a round's trials, grid points, fusion methods, tasks, seeds) then run side by side, which
# uses the cores better than two threads per job (measured in benchmarks/README.md). A cluster profile can
# give GPU jobs more CPUs with set-threads. `gpu=1` only matters where a --resources limit or a cluster
# executor reads it: local runs are not serialised by it.
# Stage 1, stage 2 and the fusion methods carry a priority: the chain every result waits on runs first and
# the baselines (grid fine-tunes, HPBO-full, the landscape) fill the cores it leaves idle.
# Every output lies under output_dir (default results/), so protocols can sit side by side in one checkout.
OUT = config["output_dir"]
RUN = f"{OUT}/{RUN_DIR}"
LOG = f"logs/{RUN_DIR}"
BENCH = f"{OUT}/{BENCHMARK_DIR}/{RUN_DIR}"
EXPORT = f"{OUT}/{EXPORT_DIRECTORY}/{RUN_DIR}"
# Every run as its wildcards: each (task, model, seed) combination, then each imported run (a user's own
# checkpoints as members, under its name in the place of the model).
RUNS = config_runs(config)
HPO_ROUNDS = config["hpo"]["rounds"]
HPO_TRIALS = config["hpo"]["trials_per_round"]
MEMBERS = config["finetune"]["members"]
# Each imported run's checkpoint directories, in training-step order (found when the workflow is parsed).
IMPORTED = {name: find_checkpoints(entry["members"]) for name, entry in config["imported_runs"].items()}
MANIFEST = f"{RUN}/members/{MEMBER_MANIFEST_FILE}"


def import_rule_name(name):
    """The import rule of an imported run (a rule name is an identifier)."""
    identifier = re.sub(r"\W", "_", name)
    return f"import_members_{identifier}"


def member_files(wildcards):
    """A run's member files: finetune.members from stage 2, or one per checkpoint of an imported run."""
    count = len(IMPORTED[wildcards.model]) if wildcards.model in IMPORTED else MEMBERS
    return [f"{RUN}/members/{MEMBER_FILE.format(index=k)}".format(**dict(wildcards.items())) for k in range(count)]


def settings(*keys):
    """A job's ``params.settings``: the config it reads (bomf.config.job_settings), so that an edit reruns
    exactly the jobs that read the edited value. Scripts read this, never snakemake.config."""
    return lambda wildcards: job_settings(config, dict(wildcards.items()), keys)


def model_settings(*keys):
    """``settings`` of a job that trains or scores a model: it also reads the device and precision policy
    (bomf.device), so results computed on another device or in another precision are recomputed, not mixed."""
    return settings(*COMPUTE_SETTINGS, *keys)


def fusion_settings(wildcards):
    """A fusion job reads the fusion.* settings its method declares (bomf.fuse.fusion.PARAMETERS) and no others."""
    declared = PARAMETERS.get(wildcards.method, ())
    keys = (*COMPUTE_SETTINGS, "optim.eval_batch_size", *(f"fusion.{p}" for p in declared))
    return job_settings(config, dict(wildcards.items()), keys)


def method_files(pattern):
    """``pattern`` (with {method} and the run wildcards) for every method of every run."""
    return [pattern.format(**run, method=m) for run in RUNS for m in run_methods(config, run)]


wildcard_constraints:
    seed=r"\d+",
    round=r"\d+",
    trial=r"\d+",
    method=r"[a-z0-9_]+",
    search=r"hpo|hpo_full",
    frozen=r"\d+",
    point=r"\d+",
    model=r"[A-Za-z0-9_.\-]+",
    task=r"[A-Za-z0-9_\-]+",


def trial_files(run, rounds, search="{search}"):
    """The stage-1 trial records of the given rounds of one run and search (hpo: the proxy; hpo_full: the
    full model, for the HPBO-full baseline)."""
    return [f"{run}/{search}/{HPO_TRIAL_FILE.format(round=r, trial=j)}" for r in rounds for j in range(HPO_TRIALS)]


def earlier_trials(wildcards):
    return expand(trial_files(RUN, range(int(wildcards.round))), **wildcards)


def prepared_model(wildcards):
    """A GGUF model's converted checkpoint (rule prepare_model), read by every job that loads the model."""
    name = catalog_name(config, wildcards.model)
    source = config["model_catalog"][name]["source"]
    return [str(prepared_model_dir(OUT, name) / "config.json")] if is_gguf(source) else []


# ---- baselines (baselines.smk)
GRID = config["baselines"]["grid"]
GRID_POINTS = len(GRID["learning_rates"]) * len(GRID["batch_sizes"])
GRID_FROZEN = sorted({0, *GRID["frozen_layers"]})


# The full-model grid points (grid_trial_full), which also keep their best checkpoint.
FULL_MODEL_GRID_POINT = GRID_POINT_FILE.format(frozen=0, point="{point}")


def grid_trials(frozen_counts):
    return [f"{RUN}/{GRID_POINT_FILE.format(frozen=k, point=p)}" for k in frozen_counts for p in range(GRID_POINTS)]


# ---- figures (figures.smk) and the cost table (evaluate.smk)
FIG = f"{OUT}/figures/{RUN_DIR}"
LANDSCAPE = config["figures"]["landscape"]
# The fused models marked on the landscape, as in the paper.
LANDSCAPE_METHODS = [m for m in ("swa", "bomf") if m in config["fusion"]["methods"]]


def run_figures(run):
    """The figure files of one run (its wildcards) that this config asks for (format placeholders: task, model,
    seed)."""
    names = []
    if LANDSCAPE["enabled"]:
        names.append("landscape")
    if "bomf" in config["fusion"]["methods"]:
        names.append("pareto")
    if "grid_finetune" in run_methods(config, run):
        names += ["alignment", "correlation"]
    return [f"{FIG}/{name}.{ext}" for name in names for ext in ("png", "pdf")]


def cost_only_outputs(run):
    """Outputs of one run (its wildcards) that no table reads but whose benchmark files the cost table reports."""
    return [
        *([f"{RUN}/landscape/grid.csv"] if LANDSCAPE["enabled"] else []),
        *([f"{RUN}/grid/grid.csv"] if "grid_finetune" in run_methods(config, run) else []),
    ]
