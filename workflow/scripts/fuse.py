from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.fuse(snakemake.params.settings, w.task, w.model, int(w.seed), Path(snakemake.input.data).parent,
                  Path(snakemake.input.manifest).parent, w.method, snakemake.output[0],
                  snakemake.params.journal)
