from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.plot_landscape(config=snakemake.params.settings, task=w.task, model=w.model, seed=int(w.seed),
                            landscape_dir=Path(snakemake.input[0]).parent,
                            out_prefix=Path(snakemake.output.png).with_suffix(""))
