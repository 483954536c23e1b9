from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.fuse(config=snakemake.params.settings, task=w.task, model=w.model, seed=int(w.seed),
                  data_dir=Path(snakemake.input.data).parent, members_dir=Path(snakemake.input.manifest).parent,
                  method=w.method, out_dir=snakemake.output[0], journal=snakemake.params.journal)
