from snakemake.utils import min_version

import functools
import re
import sys
from pathlib import Path

from bomf.config import ConfigError, job_settings, validate_config
from bomf.device import COMPUTE_SETTINGS, local_problem
from bomf.fuse.methods import TRAINING_SPLIT_METHODS, setting_keys
from bomf.layout import BENCHMARK_DIR, EXPORT_DIRECTORY, MEMBER_FILE, RUN_DIR, SELECTION_STUDY_FILE, prepared_model_dir
from bomf.memory import STACK_JOBS, job_device_memory_mb, job_memory_mb, model_parameters
from bomf.records import (
    EVALUATION_FILE,
    GRID_POINT_FILE,
    HPO_CHOICE_FILE,
    HPO_TRIAL_FILE,
    MEMBER_MANIFEST_FILE,
    SUGGESTION_FILE,
)
from bomf.report.provenance import log_command
from bomf.settings import canonical, catalog_name, config_runs, has_selection_study, run_methods
from bomf.sources import is_prepared
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
# How often every training job writes its resume state (bomf.train.resume) changes nothing it trains: a
# resource of those rules, not a param (an edit reruns nothing).
CHECKPOINT_SECONDS = round(60 * config["finetune"]["checkpoint_minutes"])


def import_rule_name(name):
    """The import rule of an imported run (a rule name is an identifier)."""
    identifier = re.sub(r"\W", "_", name)
    return f"import_members_{identifier}"


def resume_dir(wildcards, output):
    """A training job's resume directory (bomf.train.resume) beside its first output: not an output itself, so
    it survives the job's failure for the rerun to resume from; the job removes it on success."""
    return str(Path(output[0]).with_suffix(".resume"))


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
    """A fusion job reads the settings its method declares (bomf.fuse.methods.SETTINGS: fusion.* ones, and
    e.g. learned_soup's optim.max_device_batch) and no others."""
    keys = (*COMPUTE_SETTINGS, "optim.eval_batch_size", "fusion.device_memory", *setting_keys(wildcards.method))
    return job_settings(config, dict(wildcards.items()), keys)


def fusion_training_split(wildcards):
    """A fuse job's train.jsonl where its method fits on the training split (bomf.fuse.methods.
    TRAINING_SPLIT_METHODS: TWA); the other methods read the validation split only."""
    return [f"{OUT}/data/{wildcards.task}/train.jsonl"] if wildcards.method in TRAINING_SPLIT_METHODS else []


# A model whose size cannot be read yet (a hub id before prepare_model fetched it): the memory every job asks for.
UNSIZED_MODEL_MEM_MB = 16000
# What the memory formula assumes: GPU jobs compute on the GPU unless the config says cpu.
MEMORY_DEVICE = "cpu" if config["device"] == "cpu" else "cuda"


@functools.cache
def model_parameters_of(model):
    """A run model's parameter count, from its files' headers (bomf.memory; read once per Snakemake process)."""
    name = catalog_name(config, model)
    return model_parameters(config["model_catalog"][name]["source"], prepared_model_dir(OUT, name))


def memory_mb(job, on_gpu=False):
    """``mem_mb`` of a job that trains or stacks a model: bomf.memory's formula for the run's model (parameters
    counted from its files) and member count, times the attempt, so a job killed for memory gets more when it is
    retried. ``on_gpu``: the job's GPU memory instead (``gpu_memory_mb``, a note in the job's resources of the
    GPU it needs: no scheduler reads it)."""

    def mem_mb(wildcards, attempt):
        parameters = model_parameters_of(wildcards.model)
        if parameters is None:
            return UNSIZED_MODEL_MEM_MB * attempt
        members = len(member_files(wildcards)) if job in STACK_JOBS else MEMBERS
        budget = config["fusion"]["device_memory"]
        budget = None if budget is None else budget * 1024
        if on_gpu:
            return job_device_memory_mb(job, parameters, members, device_budget_mb=budget)
        return attempt * job_memory_mb(job, parameters, members, MEMORY_DEVICE, device_budget_mb=budget)

    return mem_mb


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


def prepared_models(models):
    """The checkpoint directories rule prepare_model makes of ``models`` (names of runs' models) whose source is a
    hub id (downloaded) or a GGUF file (converted); a local source has none."""
    names = {catalog_name(config, model) for model in models}
    return sorted(
        str(prepared_model_dir(OUT, name)) for name in names if is_prepared(config["model_catalog"][name]["source"])
    )


def prepared_model(wildcards):
    """The run's model as rule prepare_model made it, read by every job that loads the model."""
    return prepared_models([wildcards.model])


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
