from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

w = snakemake.wildcards
with job(snakemake):
    pipeline.export_model(config=snakemake.params.settings, task=w.task, model=w.model, seed=int(w.seed),
                          method=w.method, members_dir=Path(snakemake.input.manifest).parent,
                          fusion_dir=snakemake.input.fusion, test_file=snakemake.input.test[0],
                          commands_log=snakemake.params.commands, out_dir=snakemake.output[0])
