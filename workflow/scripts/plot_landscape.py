from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.plot_landscape(snakemake.params.settings, w.task, w.model, int(w.seed), Path(snakemake.input[0]).parent,
                            Path(snakemake.output.png).with_suffix(""))
