# Test evaluation (the only rule that reads the test split) and the result tables.


rule evaluate:
    input:
        data="results/data/{task}/test.jsonl",
        fusion=f"{RUN}/fusion/{{method}}",
    output:
        f"{RUN}/test/{{method}}.json",
    log:
        f"{LOG}/test/{{method}}.log",
    benchmark:
        f"{BENCH}/test/{{method}}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/bomf.yaml"
    script:
        "../scripts/evaluate.py"


# One (task, model, seed) run end to end: `snakemake results/rte/minilm/seed0/summary.csv`.
rule summarise_run:
    input:
        expand(f"{RUN}/test/{{method}}.json", method=config["fusion"]["methods"], allow_missing=True),
    output:
        f"{RUN}/summary.csv",
    log:
        f"{LOG}/summary.log",
    conda:
        "../../envs/bomf.yaml"
    script:
        "../scripts/summarise_run.py"


rule table:
    input:
        expand(
            expand(f"{RUN}/test/{{method}}.json", zip, **RUN_WILDCARDS, allow_missing=True),
            method=config["fusion"]["methods"],
        ),
    output:
        csv="results/tables/glue.csv",
        md="results/tables/glue.md",
    log:
        "logs/tables/glue.log",
    conda:
        "../../envs/bomf.yaml"
    script:
        "../scripts/table.py"
