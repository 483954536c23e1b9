from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

with job(snakemake):
    pipeline.paper_tables(snakemake.params.settings, list(snakemake.input.tests), list(snakemake.input.fusion),
                          snakemake.params.benchmarks, Path(snakemake.output[0]).parent,
                          snakemake.output.provenance)
