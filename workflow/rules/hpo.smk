# Stage 1: R rounds x q trials of hyperparameter BO on the frozen-layer proxy ({search} = hpo; the HPBO-full
# baseline runs the same chain on the full model, {search} = hpo_full). The round chain is fixed by
# the config, so the DAG is static; the q trials of a round are independent jobs that a cluster runs together.


rule hpo_suggest:
    input:
        earlier_trials,
    output:
        f"{RUN}/{{search}}/{SUGGESTION_FILE}",
    log:
        f"{LOG}/{{search}}/round{{round}}/suggest.log",
    benchmark:
        f"{BENCH}/{{search}}/round{{round}}/suggest.tsv"
    priority: 2
    conda:
        "../../envs/bomf.yaml"
    resources:
        mem_mb=2000,
    params:
        settings=settings("hpo"),
    script:
        "../scripts/hpo_suggest.py"


rule hpo_trial:
    input:
        model=prepared_model,
        data=multiext(f"{OUT}/data/{{task}}/", "train.jsonl", "val.jsonl"),
        suggest=f"{RUN}/{{search}}/{SUGGESTION_FILE}",
    output:
        f"{RUN}/{{search}}/{HPO_TRIAL_FILE}",
    log:
        f"{LOG}/{{search}}/round{{round}}/trial{{trial}}.log",
    benchmark:
        f"{BENCH}/{{search}}/round{{round}}/trial{{trial}}.tsv"
    priority: 2
    conda:
        "../../envs/bomf.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=memory_mb("hpo_trial"),
        gpu_memory_mb=memory_mb("hpo_trial", on_gpu=True),
        runtime=120,
        checkpoint_seconds=CHECKPOINT_SECONDS,
    params:
        settings=model_settings("optim", "hpo.epochs", "hpo.max_train", "data.split_seed"),
        staging=resume_dir,
    script:
        "../scripts/hpo_trial.py"


rule hpo_select:
    input:
        trial_files(RUN, range(HPO_ROUNDS)),
    output:
        trials=f"{RUN}/{{search}}/trials.csv",
        best=f"{RUN}/{{search}}/{HPO_CHOICE_FILE}",
    log:
        f"{LOG}/{{search}}/select.log",
    priority: 2
    conda:
        "../../envs/bomf.yaml"
    script:
        "../scripts/hpo_select.py"
