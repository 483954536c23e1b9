from snakemake.utils import min_version

import sys

from bomf.config import validate_config
from bomf.provenance import log_command
from bomf.settings import run_methods
from bomf.sources import is_gguf

min_version("9.0")


# Schema defaults are filled in and every field checked before any job is scheduled; --config values
# (strings, as Snakemake passes them) are read with the types the schema gives them.
validate_config(config, command_line=workflow.config_settings.config)

# Compute rules declare `threads: 1` (torch is sized to it, bomf.runtime.job): on a CPU machine the
# independent jobs (a round's trials, grid points, fusion methods, tasks, seeds) then run side by side, which
# uses the cores better than two threads per job (measured in benchmarks/README.md). A cluster profile can
# give GPU jobs more CPUs with set-threads. `gpu=1` only matters where a --resources limit or a cluster
# executor reads it: local runs are not serialised by it.
# Every output lies under output_dir (default results/), so protocols can sit side by side in one checkout.
OUT = config["output_dir"]
RUN = f"{OUT}/{{task}}/{{model}}/seed{{seed}}"
LOG = "logs/{task}/{model}/seed{seed}"
BENCH = f"{OUT}/benchmarks/{{task}}/{{model}}/seed{{seed}}"
# Every (task, model, seed) combination, as the wildcards of one run.
RUNS = [{"task": t, "model": m, "seed": s} for t in config["tasks"] for m in config["models"] for s in config["seeds"]]
HPO_ROUNDS = config["hpo"]["rounds"]
HPO_TRIALS = config["hpo"]["trials_per_round"]
MEMBERS = config["finetune"]["members"]


def method_files(pattern):
    """``pattern`` (with {method} and the run wildcards) for every method of every run."""
    return [pattern.format(**run, method=m) for run in RUNS for m in run_methods(config, run["seed"])]


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
    return [f"{run}/{search}/round{r}/trial{j}.json" for r in rounds for j in range(HPO_TRIALS)]


def earlier_trials(wildcards):
    return expand(trial_files(RUN, range(int(wildcards.round))), **wildcards)


def prepared_model(wildcards):
    """A GGUF model's converted checkpoint (rule prepare_model), read by every job that loads the model."""
    source = config["model_catalog"][wildcards.model]["source"]
    return [f"{OUT}/models/{wildcards.model}/config.json"] if is_gguf(source) else []
