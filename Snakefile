# BOMF: model fusion through Bayesian optimisation (Jang et al., NeurIPS 2024) as a Snakemake pipeline.
# Stages: data -> stage 1 (proxy hyperparameter BO) -> stage 2 (fine-tune, members) -> stage 3 (fusion)
# -> test evaluation -> tables. The configuration is documented in workflow/schemas/config.schema.yaml.

import sys
from pathlib import Path

from bomf.config import config_file_problem, problem_list

# Snakemake names no line of a config file it cannot read: the working directory's config.yaml is checked here,
# before Snakemake reads it. Every --configfile is read before this code runs; `python -m bomf.check CONFIG`
# checks those (README, "When things go wrong").
if Path("config.yaml").exists() and (problem := config_file_problem("config.yaml")):
    sys.exit(f"bomf: {problem_list([problem])}")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/hpo.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/fusion.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/evaluate.smk"


report: "workflow/report/workflow.rst"


# A local run whose jobs could not compute as configured (device: cuda without a usable GPU, a GPU given but
# unusable) stops here, before any job; cluster jobs check their own node. Every command that starts jobs is
# appended to <output_dir>/commands.log with its time and commit.
onstart:
    if workflow.local_exec and (problem := local_problem(config)):
        sys.exit(f"bomf: {problem}")
    log_command(f"{OUT}/commands.log", sys.argv)


# Every table (results/tables/) and figure (results/figures/) of the paper for the configured runs, each
# run's summary.csv and its exported models (results/export/). Report: snakemake all --report results/report.html
rule all:
    input:
        rules.paper_tables.output,
        rules.paper_figures.input,
        [f"{RUN}/summary.csv".format(**run) for run in RUNS],
        [
            f"{EXPORT}/{method}".format(**run)
            for run in RUNS
            for method in config["export"]["methods"]
            if method in run_methods(config, run)
        ],
