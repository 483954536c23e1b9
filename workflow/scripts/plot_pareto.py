from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.plot_pareto(snakemake.params.settings, w.task, w.model, int(w.seed), snakemake.input[0],
                         Path(snakemake.output.png).with_suffix(""))
