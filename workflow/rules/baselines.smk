# Baselines that are not a fusion of the stage-2 members (config baselines.methods): the grid fine-tune, the
# HPBO-full fine-tune and the oracle best subset. Each writes fusion/{method}/ like a fusion method, so the
# evaluate_test rule and the tables treat every method alike. The grid is also run with lower layers frozen
# (baselines.grid.frozen_layers) for the hyperparameter-alignment figure.


rule grid_trial:
    input:
        model=prepared_model,
        data=multiext(f"{OUT}/data/{{task}}/", "train.jsonl", "val.jsonl"),
    output:
        f"{RUN}/{GRID_POINT_FILE}",
    log:
        f"{LOG}/grid/frozen{{frozen}}/point{{point}}.log",
    benchmark:
        f"{BENCH}/grid/frozen{{frozen}}/point{{point}}.tsv"
    conda:
        "../../envs/bomf.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=memory_mb("grid_trial"),
        gpu_memory_mb=memory_mb("grid_trial", on_gpu=True),
        runtime=240,
        checkpoint_seconds=CHECKPOINT_SECONDS,
    params:
        settings=model_settings("optim", "finetune", "baselines.grid"),
        staging=resume_dir,
    script:
        "../scripts/grid_trial.py"


# The full-model grid runs keep their best checkpoint until the grid fine-tune baseline has picked one.
use rule grid_trial as grid_trial_full with:
    output:
        record=f"{RUN}/{FULL_MODEL_GRID_POINT}",
        checkpoint=temp(f"{RUN}/grid/frozen0/point{{point}}.safetensors"),
    log:
        f"{LOG}/grid/frozen0/point{{point}}.log",
    benchmark:
        f"{BENCH}/grid/frozen0/point{{point}}.tsv"


ruleorder: grid_trial_full > grid_trial
ruleorder: grid_finetune > hpbo_full > oracle_subset > fuse


rule grid_collect:
    input:
        grid_trials(GRID_FROZEN),
    output:
        f"{RUN}/grid/grid.csv",
    log:
        f"{LOG}/grid/collect.log",
    conda:
        "../../envs/bomf.yaml"
    script:
        "../scripts/grid_collect.py"


rule grid_finetune:
    input:
        model=prepared_model,
        trials=grid_trials([0]),
        checkpoints=[f"{RUN}/grid/frozen0/point{p}.safetensors" for p in range(GRID_POINTS)],
    output:
        directory(f"{RUN}/fusion/grid_finetune"),
    log:
        f"{LOG}/fusion/grid_finetune.log",
    benchmark:
        f"{BENCH}/fusion/grid_finetune.tsv"
    conda:
        "../../envs/bomf.yaml"
    resources:
        mem_mb=8000,
    params:
        settings=settings(),
    script:
        "../scripts/grid_finetune.py"


rule hpbo_full:
    input:
        model=prepared_model,
        data=multiext(f"{OUT}/data/{{task}}/", "train.jsonl", "val.jsonl"),
        best=f"{RUN}/hpo_full/{HPO_CHOICE_FILE}",
    output:
        directory(f"{RUN}/fusion/hpbo_full"),
    log:
        f"{LOG}/fusion/hpbo_full.log",
    benchmark:
        f"{BENCH}/fusion/hpbo_full.tsv"
    conda:
        "../../envs/bomf.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=memory_mb("hpbo_full"),
        gpu_memory_mb=memory_mb("hpbo_full", on_gpu=True),
        runtime=240,
        checkpoint_seconds=CHECKPOINT_SECONDS,
    params:
        settings=model_settings("optim", "finetune"),
        staging=resume_dir,
    script:
        "../scripts/hpbo_full.py"


# Reads the TEST split to choose: an oracle upper reference, labelled as such in every table.
rule oracle_subset:
    input:
        model=prepared_model,
        data=multiext(f"{OUT}/data/{{task}}/", "val.jsonl", "test.jsonl"),
        members=member_files,
        manifest=MANIFEST,
    output:
        directory(f"{RUN}/fusion/oracle_subset"),
    log:
        f"{LOG}/fusion/oracle_subset.log",
    benchmark:
        f"{BENCH}/fusion/oracle_subset.tsv"
    conda:
        "../../envs/bomf.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=memory_mb("oracle_subset"),
        gpu_memory_mb=memory_mb("oracle_subset", on_gpu=True),
        runtime=240,
    params:
        settings=model_settings("optim.eval_batch_size", "baselines.oracle_max_subsets", "fusion.device_memory"),
        # Every test evaluation, replayed by a rerun; beside the output, which a failed job loses.
        journal=f"{RUN}/fusion/oracle_subset.journal.jsonl",
    script:
        "../scripts/oracle_subset.py"
