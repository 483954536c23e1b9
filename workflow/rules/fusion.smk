# Stage 3 and the baselines: every method in config fusion.methods chooses weights for the same members on
# the same validation split. BO methods also write history.csv and pareto.csv into their directory.


rule fuse:
    input:
        model=prepared_model,
        data=f"{OUT}/data/{{task}}/val.jsonl",
        members=rules.finetune.output.members,
        manifest=rules.finetune.output.manifest,
    output:
        directory(f"{RUN}/fusion/{{method}}"),
    params:
        # Every objective evaluation, replayed by a rerun; beside the output, which a failed job loses.
        journal=f"{RUN}/fusion/{{method}}.journal.jsonl",
    log:
        f"{LOG}/fusion/{{method}}.log",
    benchmark:
        f"{BENCH}/fusion/{{method}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    conda:
        "../../envs/bomf.yaml"
    script:
        "../scripts/fuse.py"
