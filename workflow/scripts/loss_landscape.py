from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.loss_landscape(config=snakemake.params.settings, task=w.task, model=w.model, seed=int(w.seed),
                            data_dir=Path(snakemake.input.data).parent,
                            members_dir=Path(snakemake.input.manifest).parent,
                            fusion_dirs=dict(zip(snakemake.params.methods, snakemake.input.fusion)),
                            out_dir=Path(snakemake.output[0]).parent, journal=snakemake.params.journal)
