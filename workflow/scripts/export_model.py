from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.export_model(snakemake.params.settings, w.task, w.model, int(w.seed), w.method,
                          Path(snakemake.input.manifest).parent, snakemake.input.fusion, snakemake.input.test[0],
                          snakemake.params.commands, snakemake.output[0])
