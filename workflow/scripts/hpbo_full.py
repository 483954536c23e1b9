from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.hpbo_full_finetune(snakemake.params.settings, w.task, w.model, int(w.seed), Path(snakemake.input.data[0]).parent,
                                snakemake.input.best, snakemake.output[0])
