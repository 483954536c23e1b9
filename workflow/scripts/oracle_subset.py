from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.oracle_subset(config=snakemake.params.settings, task=w.task, model=w.model, seed=int(w.seed),
                           data_dir=Path(snakemake.input.data[0]).parent,
                           members_dir=Path(snakemake.input.manifest).parent, out_dir=snakemake.output[0],
                           journal=snakemake.params.journal)
