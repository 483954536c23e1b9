# Test evaluation (with the opt-in selection-rule study, the only rules that read the test split) and the
# result tables.


rule evaluate_test:
    input:
        model=prepared_model,
        data=f"{OUT}/data/{{task}}/test.jsonl",
        # A method's model is rebuilt from the members and its record (no fused model is stored).
        members=member_files,
        manifest=MANIFEST,
        fusion=f"{RUN}/fusion/{{method}}",
    output:
        f"{RUN}/{EVALUATION_FILE}",
    log:
        f"{LOG}/test/{{method}}.log",
    benchmark:
        f"{BENCH}/test/{{method}}.tsv"
    conda:
        "../../envs/bomf.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=memory_mb("evaluate_test"),
        gpu_memory_mb=memory_mb("evaluate_test", on_gpu=True),
        runtime=60,
    params:
        settings=model_settings("optim.eval_batch_size", "fusion.device_memory"),
    script:
        "../scripts/evaluate_test.py"


# The selection-rule study (tables.selection_study: its seeds): every Pareto-point rule on the same BOMF search,
# each rule's pick rebuilt from the members and scored on test as evaluate_test scores it.
rule selection_study:
    input:
        model=prepared_model,
        data=f"{OUT}/data/{{task}}/test.jsonl",
        val=f"{OUT}/data/{{task}}/val.jsonl",
        members=member_files,
        manifest=MANIFEST,
        fusion=f"{RUN}/fusion/bomf",
    output:
        f"{RUN}/{SELECTION_STUDY_FILE}",
    log:
        f"{LOG}/selection_study.log",
    benchmark:
        f"{BENCH}/selection_study.tsv"
    conda:
        "../../envs/bomf.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=memory_mb("selection_study"),
        gpu_memory_mb=memory_mb("selection_study", on_gpu=True),
        runtime=60,
    params:
        settings=model_settings("optim.eval_batch_size", "fusion.device_memory", "fusion.selection"),
    script:
        "../scripts/selection_study.py"


# The models users take away (export.methods): a self-contained Hugging Face directory each, with its model card.
rule export_model:
    input:
        model=prepared_model,
        members=member_files,
        manifest=MANIFEST,
        fusion=f"{RUN}/fusion/{{method}}",
        test=rules.evaluate_test.output,
    output:
        directory(f"{EXPORT}/{{method}}"),
    log:
        f"{LOG}/export/{{method}}.log",
    conda:
        "../../envs/bomf.yaml"
    threads: 1
    resources:
        mem_mb=memory_mb("export_model"),
        runtime=60,
    params:
        settings=model_settings("fusion.selection", "fusion.device_memory"),
        # The card names the command that made the model: the newest line of the log when the job runs.
        commands=f"{OUT}/commands.log",
    script:
        "../scripts/export_model.py"


# One (task, model, seed) run end to end: `snakemake results/rte/minilm/seed0/summary.csv`.
rule summarise_run:
    input:
        tests=lambda w: expand(f"{RUN}/{EVALUATION_FILE}", method=run_methods(config, dict(w.items())), **w),
        # In the order of tests: each method's weights and its search's scores of the members.
        fusion=lambda w: expand(f"{RUN}/fusion/{{method}}", method=run_methods(config, dict(w.items())), **w),
        split=f"{OUT}/data/{{task}}/split.json",
    output:
        summary=f"{RUN}/summary.csv",
        provenance=f"{RUN}/provenance.json",
    log:
        f"{LOG}/summary.log",
    conda:
        "../../envs/bomf.yaml"
    script:
        "../scripts/summarise_run.py"


from bomf.report.tables import TABLES

TABLE_FILE = f"{OUT}/tables/{{name}}.{{ext}}"


rule paper_tables:
    input:
        tests=method_files(f"{RUN}/{EVALUATION_FILE}"),
        fusion=method_files(f"{RUN}/fusion/{{method}}"),
        # Stage 1's trials (the correlation table's HPBO points), of every run that had a stage 1.
        trials=[f"{RUN}/hpo/trials.csv".format(**run) for run in RUNS if run["model"] not in IMPORTED],
        # Each task's split summary: its validation size and its trivial answer.
        splits=sorted({f"{OUT}/data/{run['task']}/split.json" for run in RUNS}),
        # Jobs whose benchmark files the cost table reads, beyond those the test results need.
        costs=[path.format(**run) for run in RUNS for path in cost_only_outputs(run)],
        # The selection-rule study of the runs that have it (tables.selection_study).
        studies=[f"{RUN}/{SELECTION_STUDY_FILE}".format(**run) for run in RUNS if has_selection_study(config, run)],
    output:
        [
            report(TABLE_FILE.format(name=name, ext="csv"), caption=f"../report/{name}.rst", category="Tables")
            for name in TABLES
        ],
        expand(TABLE_FILE, name=list(TABLES), ext=["md", "tex"]),
        provenance=f"{OUT}/tables/provenance.json",
    log:
        "logs/tables/paper_tables.log",
    conda:
        "../../envs/bomf.yaml"
    params:
        # The tables record the whole config they were built with (provenance.json): any edit rebuilds them.
        settings=canonical(config),
        benchmarks=f"{OUT}/{BENCHMARK_DIR}",
    script:
        "../scripts/paper_tables.py"
