from bomf import pipeline
from bomf.runtime import job

with job(snakemake):
    pipeline.summarise_run(list(snakemake.input), snakemake.output.summary, snakemake.output.provenance)
