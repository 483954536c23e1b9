from bomf import pipeline
from bomf.runtime import job

with job(snakemake):
    pipeline.grid_collect(list(snakemake.input), snakemake.output[0])
