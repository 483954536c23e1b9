from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.hpo_suggest(snakemake.params.settings, w.task, int(w.seed), int(w.round), list(snakemake.input), snakemake.output[0])
