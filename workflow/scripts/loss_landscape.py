from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.loss_landscape(snakemake.params.settings, w.task, w.model, int(w.seed), Path(snakemake.input.data).parent,
                            Path(snakemake.input.manifest).parent,
                            dict(zip(snakemake.params.methods, snakemake.input.fusion)),
                            Path(snakemake.output[0]).parent)
