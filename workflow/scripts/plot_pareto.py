from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.plot_pareto(config=snakemake.params.settings, task=w.task, model=w.model, seed=int(w.seed),
                         fusion_dir=snakemake.input[0], out_prefix=Path(snakemake.output.png).with_suffix(""))
