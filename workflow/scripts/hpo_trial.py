from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.hpo_trial(snakemake.params.settings, w.task, w.model, int(w.seed), Path(snakemake.input.data[0]).parent,
                       snakemake.input.suggest, int(w.trial), snakemake.output[0], w.search)
