from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.hpo_suggest(config=snakemake.params.settings, task=w.task, seed=int(w.seed), round_index=int(w.round),
                         trial_files=list(snakemake.input), out=snakemake.output[0])
