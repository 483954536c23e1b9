from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.import_members(config=snakemake.params.settings, task=w.task, model=w.model, seed=int(w.seed),
                            data_dir=Path(snakemake.input.data).parent, out_dir=Path(snakemake.output.manifest).parent)
