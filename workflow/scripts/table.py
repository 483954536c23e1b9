from bomf import pipeline
from bomf.runtime import job

with job(snakemake):
    pipeline.table(snakemake.config, list(snakemake.input), snakemake.output.csv, snakemake.output.md)
