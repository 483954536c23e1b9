from bomf import pipeline
from bomf.runtime import job

with job(snakemake):
    pipeline.prepare_data(snakemake.params.settings, snakemake.wildcards.task, snakemake.output[0].rsplit("/", 1)[0])
