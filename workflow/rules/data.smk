rule prepare_data:
    output:
        multiext("results/data/{task}/", "train.jsonl", "val.jsonl", "test.jsonl", "split.json"),
    log:
        "logs/data/{task}.log",
    benchmark:
        "results/benchmarks/data/{task}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../../envs/bomf.yaml"
    script:
        "../scripts/prepare_data.py"
