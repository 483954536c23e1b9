from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.grid_finetune(config=snakemake.params.settings, task=w.task, model=w.model, seed=int(w.seed),
                           trial_files=list(snakemake.input.trials), checkpoints=list(snakemake.input.checkpoints),
                           out_dir=snakemake.output[0])
