# The paper's figures, per (task, model, seed) under results/figures/: the loss and metric landscape on the
# plane through three members (SWA and BOMF projected onto it), the Pareto front and hypervolume of the
# fusion search, and, from the baseline grid, hyperparameter alignment across frozen layers and best member
# vs trajectory average. Computation (GPU jobs) and plotting (cheap, restyle freely) are separate rules.


rule loss_landscape:
    input:
        model=prepared_model,
        data=f"{OUT}/data/{{task}}/val.jsonl",
        members=member_files,
        manifest=MANIFEST,
        fusion=expand(f"{RUN}/fusion/{{method}}", method=LANDSCAPE_METHODS, allow_missing=True),
    output:
        multiext(f"{RUN}/landscape/", "grid.csv", "points.csv", "plane.json"),
    log:
        f"{LOG}/landscape.log",
    benchmark:
        f"{BENCH}/landscape.tsv"
    conda:
        "../../envs/bomf.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=memory_mb("loss_landscape"),
        gpu_memory_mb=memory_mb("loss_landscape", on_gpu=True),
        runtime=240,
    params:
        settings=model_settings("optim.eval_batch_size", "figures.landscape", "fusion.device_memory"),
        methods=LANDSCAPE_METHODS,
        # Every grid evaluation, replayed by a rerun; beside the outputs, which a failed job loses.
        journal=f"{RUN}/landscape.journal.jsonl",
    script:
        "../scripts/loss_landscape.py"


rule plot_landscape:
    input:
        rules.loss_landscape.output,
    output:
        png=report(
            f"{FIG}/landscape.png",
            caption="../report/landscape.rst",
            category="Landscapes",
            subcategory="{task}",
            labels={"task": "{task}", "model": "{model}", "seed": "{seed}"},
        ),
        pdf=f"{FIG}/landscape.pdf",
    log:
        f"{LOG}/figures/landscape.log",
    conda:
        "../../envs/bomf.yaml"
    params:
        settings=settings(),
    script:
        "../scripts/plot_landscape.py"


rule plot_pareto:
    input:
        f"{RUN}/fusion/bomf",
    output:
        png=report(
            f"{FIG}/pareto.png",
            caption="../report/pareto.rst",
            category="Fusion search",
            subcategory="{task}",
            labels={"task": "{task}", "model": "{model}", "seed": "{seed}"},
        ),
        pdf=f"{FIG}/pareto.pdf",
    log:
        f"{LOG}/figures/pareto.log",
    conda:
        "../../envs/bomf.yaml"
    params:
        settings=settings(),
    script:
        "../scripts/plot_pareto.py"


rule plot_grid:
    input:
        f"{RUN}/grid/grid.csv",
    output:
        alignment=report(
            f"{FIG}/alignment.png",
            caption="../report/alignment.rst",
            category="Hyperparameter alignment",
            subcategory="{task}",
            labels={"task": "{task}", "model": "{model}", "seed": "{seed}"},
        ),
        alignment_pdf=f"{FIG}/alignment.pdf",
        correlation=report(
            f"{FIG}/correlation.png",
            caption="../report/correlation.rst",
            category="Best member vs average",
            subcategory="{task}",
            labels={"task": "{task}", "model": "{model}", "seed": "{seed}"},
        ),
        correlation_pdf=f"{FIG}/correlation.pdf",
    log:
        f"{LOG}/figures/grid.log",
    conda:
        "../../envs/bomf.yaml"
    params:
        settings=settings(),
    script:
        "../scripts/plot_grid.py"


rule paper_figures:
    input:
        [path.format(**run) for run in RUNS for path in run_figures(run)],
