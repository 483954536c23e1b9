from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.evaluate_test(snakemake.params.settings, w.task, w.model, int(w.seed), w.method,
                           Path(snakemake.input.data).parent, Path(snakemake.input.manifest).parent,
                           snakemake.input.fusion, snakemake.output[0])
