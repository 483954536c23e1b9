from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.oracle(snakemake.params.settings, w.task, w.model, int(w.seed), Path(snakemake.input.data[0]).parent,
                    Path(snakemake.input.manifest).parent, snakemake.output[0])
