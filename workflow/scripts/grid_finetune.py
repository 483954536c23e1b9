from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.grid_finetune(snakemake.params.settings, w.task, w.model, int(w.seed), list(snakemake.input.trials),
                           list(snakemake.input.checkpoints), snakemake.output[0])
