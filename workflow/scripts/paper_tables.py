from pathlib import Path

from bomf import pipeline
from bomf.runtime import job

with job(snakemake):
    pipeline.paper_tables(config=snakemake.params.settings, test_files=list(snakemake.input.tests),
                          fusion_dirs=list(snakemake.input.fusion),
                          trial_files=list(snakemake.input.trials), split_files=list(snakemake.input.splits),
                          benchmark_root=snakemake.params.benchmarks, study_files=list(snakemake.input.studies),
                          out_dir=Path(snakemake.output[0]).parent, out_provenance=snakemake.output.provenance)
