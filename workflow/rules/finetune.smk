# Stage 2: one full fine-tune with the chosen hyperparameters; N members from the second half of training.


rule finetune:
    input:
        model=prepared_model,
        data=multiext(f"{OUT}/data/{{task}}/", "train.jsonl", "val.jsonl"),
        best=f"{RUN}/hpo/{HPO_CHOICE_FILE}",
    output:
        members=[f"{RUN}/members/{MEMBER_FILE.format(index=k)}" for k in range(MEMBERS)],
        trajectory=f"{RUN}/members/trajectory.csv",
        manifest=MANIFEST,
    log:
        f"{LOG}/finetune.log",
    benchmark:
        f"{BENCH}/finetune.tsv"
    # The catalog's models only: an imported run's members come from its import rule below.
    wildcard_constraints:
        model="|".join(re.escape(name) for name in config["model_catalog"]),
    priority: 2
    conda:
        "../../envs/bomf.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=memory_mb("finetune"),
        gpu_memory_mb=memory_mb("finetune", on_gpu=True),
        runtime=240,
        checkpoint_seconds=CHECKPOINT_SECONDS,
    params:
        settings=model_settings("optim", "finetune"),
        # Members and resumable training states while training runs; kept when the job fails (outputs are
        # not), so a rerun continues from the last member. Removed on success.
        staging=f"{RUN}/members.resume",
    script:
        "../scripts/finetune.py"


# Stage 2 of an imported run (config imported_runs): the user's checkpoints, checked against the base model
# and the task and scored on validation, written as the run's members. One rule per imported run, since its
# member count is its own; stages 1 and 2 do not run for it.
for name, entry in config["imported_runs"].items():

    rule:
        name:
            import_rule_name(name)
        input:
            model=prepared_model,
            data=f"{OUT}/data/{{task}}/val.jsonl",
            checkpoints=[str(path) for path in IMPORTED[name]],
        output:
            members=[f"{RUN}/members/{MEMBER_FILE.format(index=k)}" for k in range(len(IMPORTED[name]))],
            base=f"{RUN}/members/base.safetensors",
            trajectory=f"{RUN}/members/trajectory.csv",
            manifest=MANIFEST,
        log:
            f"{LOG}/import_members.log",
        benchmark:
            f"{BENCH}/import.tsv"
        wildcard_constraints:
            task=re.escape(entry["task"]),
            model=re.escape(name),
            seed=str(entry["seed"]),
        priority: 2
        conda:
            "../../envs/bomf.yaml"
        threads: 1
        resources:
            gpu=1,
            mem_mb=16000,
            runtime=60,
        params:
            settings=model_settings("optim.eval_batch_size"),
        script:
            "../scripts/import_members.py"
