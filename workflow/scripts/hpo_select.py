from bomf import pipeline
from bomf.runtime import job

with job(snakemake):
    pipeline.hpo_select(list(snakemake.input), snakemake.output.trials, snakemake.output.best)
