from bomf import pipeline
from bomf.runtime import job

with job(snakemake):
    pipeline.prepare_model(snakemake.params.settings, snakemake.wildcards.model, snakemake.output[0].rsplit("/", 1)[0])
