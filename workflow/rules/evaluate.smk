# Test evaluation (the only rule that reads the test split) and the result tables.


rule evaluate:
    input:
        model=prepared_model,
        data="results/data/{task}/test.jsonl",
        fusion=f"{RUN}/fusion/{{method}}",
    output:
        f"{RUN}/test/{{method}}.json",
    log:
        f"{LOG}/test/{{method}}.log",
    benchmark:
        f"{BENCH}/test/{{method}}.tsv"
    threads: 1
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
        expand(f"{RUN}/test/{{method}}.json", method=EVALUATED_METHODS, allow_missing=True),
    output:
        f"{RUN}/summary.csv",
    log:
        f"{LOG}/summary.log",
    conda:
        "../../envs/bomf.yaml"
    script:
        "../scripts/summarise_run.py"


from bomf.layout import TABLE_NAMES

TABLES = "results/tables/{name}.{ext}"


rule paper_tables:
    input:
        tests=expand(
            expand(f"{RUN}/test/{{method}}.json", zip, **RUN_WILDCARDS, allow_missing=True),
            method=EVALUATED_METHODS,
        ),
        fusion=expand(
            expand(f"{RUN}/fusion/{{method}}", zip, **RUN_WILDCARDS, allow_missing=True),
            method=EVALUATED_METHODS,
        ),
        # Jobs whose benchmark files the cost table reads, beyond those the test results need.
        costs=expand(COST_ONLY_OUTPUTS, zip, **RUN_WILDCARDS),
    output:
        [
            report(TABLES.format(name=name, ext="csv"), caption=f"../report/{name}.rst", category="Tables")
            for name in TABLE_NAMES
        ],
        expand(TABLES, name=TABLE_NAMES, ext=["md", "tex"]),
    params:
        benchmarks="results/benchmarks",
    log:
        "logs/tables/paper_tables.log",
    conda:
        "../../envs/bomf.yaml"
    script:
        "../scripts/paper_tables.py"
