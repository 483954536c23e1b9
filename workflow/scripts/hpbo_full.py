from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.hpbo_full(config=snakemake.params.settings, task=w.task, model=w.model, seed=int(w.seed),
                       data_dir=Path(snakemake.input.data[0]).parent, best_file=snakemake.input.best,
                       out_dir=snakemake.output[0], staging_dir=snakemake.params.staging,
                       checkpoint_seconds=snakemake.resources.checkpoint_seconds)
