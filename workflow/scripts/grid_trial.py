from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
checkpoint = snakemake.output.get("checkpoint")  # only the full-model runs keep one
with job(snakemake):
    pipeline.grid_trial(config=snakemake.params.settings, task=w.task, model=w.model, seed=int(w.seed),
                        data_dir=Path(snakemake.input.data[0]).parent, point_index=int(w.point),
                        frozen_layers=int(w.get("frozen", 0)), out=snakemake.output[0],
                        staging_dir=snakemake.params.staging, checkpoint_seconds=snakemake.resources.checkpoint_seconds,
                        out_checkpoint=checkpoint)
