from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.selection_study(config=snakemake.params.settings, task=w.task, model=w.model, seed=int(w.seed),
                             data_dir=Path(snakemake.input.data).parent,
                             members_dir=Path(snakemake.input.manifest).parent, fusion_dir=snakemake.input.fusion,
                             out=snakemake.output[0])
