from bomf import pipeline
from bomf.runtime import job

with job(snakemake):
    pipeline.hpo_select(trial_files=list(snakemake.input), out_csv=snakemake.output.trials,
                        out_best=snakemake.output.best)
