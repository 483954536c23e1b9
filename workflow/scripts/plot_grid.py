from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.plot_grid(config=snakemake.params.settings, task=w.task, model=w.model, seed=int(w.seed),
                       grid_csv=snakemake.input[0], alignment_prefix=Path(snakemake.output.alignment).with_suffix(""),
                       correlation_prefix=Path(snakemake.output.correlation).with_suffix(""))
