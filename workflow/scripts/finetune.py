from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.finetune(snakemake.params.settings, w.task, w.model, int(w.seed), Path(snakemake.input.data[0]).parent,
                      snakemake.input.best, Path(snakemake.output.manifest).parent, snakemake.params.staging)
