from bomf import pipeline
from bomf.runtime import job

with job(snakemake):
    pipeline.grid_collect(trial_files=list(snakemake.input), out_csv=snakemake.output[0])
