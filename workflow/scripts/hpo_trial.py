from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.hpo_trial(config=snakemake.params.settings, task=w.task, model=w.model, seed=int(w.seed),
                       data_dir=Path(snakemake.input.data[0]).parent, suggest_file=snakemake.input.suggest,
                       trial_index=int(w.trial), out=snakemake.output[0], staging_dir=snakemake.params.staging,
                       checkpoint_seconds=snakemake.resources.checkpoint_seconds, search=w.search)
