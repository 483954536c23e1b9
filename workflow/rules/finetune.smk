# Stage 2: one full fine-tune with the chosen hyperparameters; N members from the second half of training.


rule finetune:
    input:
        model=prepared_model,
        data=multiext(f"{OUT}/data/{{task}}/", "train.jsonl", "val.jsonl"),
        best=f"{RUN}/hpo/best.json",
    output:
        members=[f"{RUN}/members/{MEMBER_FILE.format(index=k)}" for k in range(MEMBERS)],
        trajectory=f"{RUN}/members/trajectory.csv",
        manifest=f"{RUN}/members/members.json",
    log:
        f"{LOG}/finetune.log",
    benchmark:
        f"{BENCH}/finetune.tsv"
    priority: 2
    conda:
        "../../envs/bomf.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        settings=settings("optim", "finetune"),
        # Members and resumable training states while training runs; kept when the job fails (outputs are
        # not), so a rerun continues from the last member. Removed on success.
        staging=f"{RUN}/members.resume",
    script:
        "../scripts/finetune.py"
