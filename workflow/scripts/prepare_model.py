from bomf import pipeline
from bomf.runtime import job

with job(snakemake):
    pipeline.prepare_model(config=snakemake.params.settings, model=snakemake.wildcards.model,
                           out_dir=snakemake.output[0])
