from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.plot_grid(snakemake.params.settings, w.task, w.model, int(w.seed), snakemake.input[0],
                       Path(snakemake.output.alignment).with_suffix(""),
                       Path(snakemake.output.correlation).with_suffix(""))
