from bomf import pipeline
from bomf.runtime import job

with job(snakemake):
    pipeline.prepare_data(config=snakemake.params.settings, task=snakemake.wildcards.task,
                          out_dir=snakemake.output[0].rsplit("/", 1)[0])
