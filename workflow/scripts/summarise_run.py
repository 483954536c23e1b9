from bomf import pipeline
from bomf.runtime import job

with job(snakemake):
    pipeline.summarise_run(test_files=list(snakemake.input.tests), fusion_dirs=list(snakemake.input.fusion),
                           split_file=snakemake.input.split, out_csv=snakemake.output.summary,
                           out_provenance=snakemake.output.provenance)
