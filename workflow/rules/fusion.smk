# Stage 3 and the baselines: every method in config fusion.methods chooses weights for the same members on
# the same validation split (twa trains on the training split). BO methods also write history.csv and
# pareto.csv into their directory.


rule fuse:
    input:
        model=prepared_model,
        data=f"{OUT}/data/{{task}}/val.jsonl",
        train=fusion_training_split,  # the same directory as data, which the job reads it from
        members=member_files,
        manifest=MANIFEST,
    output:
        directory(f"{RUN}/fusion/{{method}}"),
    log:
        f"{LOG}/fusion/{{method}}.log",
    benchmark:
        f"{BENCH}/fusion/{{method}}.tsv"
    priority: 1
    conda:
        "../../envs/bomf.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=memory_mb("fuse"),
        gpu_memory_mb=memory_mb("fuse", on_gpu=True),
        runtime=240,
    params:
        settings=fusion_settings,
        # Every objective evaluation, replayed by a rerun; beside the output, which a failed job loses.
        journal=f"{RUN}/fusion/{{method}}.journal.jsonl",
    script:
        "../scripts/fuse.py"
