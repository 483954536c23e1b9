from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
checkpoint = snakemake.output.get("checkpoint")  # only the full-model runs keep one
with job(snakemake):
    pipeline.grid_trial(snakemake.params.settings, w.task, w.model, int(w.seed), Path(snakemake.input.data[0]).parent,
                        int(w.point), int(w.get("frozen", 0)), snakemake.output[0], checkpoint)
