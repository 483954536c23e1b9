"""The Snakemake DAG: every stage is planned, and a real run of the tiny config produces the table."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, TINY_GENERATION_CONFIG, TINY_QA_CONFIG, write_tiny_config

from bomf.fuse.mobo import weight_columns
from bomf.report.diagnostics import TRIVIAL
from bomf.report.publish import REBUILD_RULES, publish
from bomf.report.tables import TABLES
from bomf.tasks.kinds import kind_of
from bomf.tasks.registry import get_task

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
FUSION_METHODS = ["bomf", "swa", "greedy_soup", "learned_soup", "bo_metric", "bo_loss", "best_member",
                  "last_member", "ema", "task_arithmetic", "ties", "dare", "otfusion", "twa"]
METHODS = [*FUSION_METHODS, "grid_finetune", "hpbo_full", "oracle_subset"]
RULES = {"prepare_data", "hpo_suggest", "hpo_trial", "hpo_select", "finetune", "fuse", "evaluate_test",
         "summarise_run", "grid_trial", "grid_trial_full", "grid_collect", "grid_finetune", "hpbo_full",
         "oracle_subset", "loss_landscape", "plot_landscape", "plot_pareto", "plot_grid", "paper_tables",
         "export_model", "all"}
FIGURES = ["landscape", "pareto", "alignment", "correlation"]


def snakemake(workdir: Path, config: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(config), "--cores", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=2400,
                          env=None if env is None else {**os.environ, **env})


def audit_environment(tmp_path: Path) -> dict:
    """Environment for a run in which only test evaluation and the oracle may open a test split
    (tests/audit/sitecustomize.py); attempts are logged in the returned log file."""
    path = os.pathsep.join(filter(None, [str(REPO / "tests" / "audit"), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "BOMF_AUDIT_LOG": str(tmp_path / "test-split-audit.log")}


def test_the_split_audit_fails_a_job_that_opens_the_test_split(tmp_path):
    """The hook the end-to-end run is audited with: a fusion job reading test.jsonl fails, an evaluation may."""
    split = tmp_path / "results/data/rte/test.jsonl"
    split.parent.mkdir(parents=True)
    split.write_text("{}\n")
    env = {**os.environ, **audit_environment(tmp_path)}
    scripts = tmp_path / ".snakemake" / "scripts"  # where Snakemake puts a job's script
    scripts.mkdir(parents=True)
    for script, expected in (("fuse.py", 1), ("evaluate_test.py", 0)):
        (scripts / f"tmpabc.{script}").write_text(f"open({str(split)!r}).read()\n")
        result = subprocess.run([sys.executable, str(scripts / f"tmpabc.{script}")], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == expected, result.stderr
        assert ("PermissionError: audit: fuse.py may not open the test split" in result.stderr) == bool(expected)
    log = Path(env["BOMF_AUDIT_LOG"]).read_text().splitlines()
    assert [line.split("\t")[:2] for line in log] == [["DENIED", "fuse.py"], ["allowed", "evaluate_test.py"]]


def test_dry_run_plans_every_stage(tmp_path, tiny_model_dir):
    config = write_tiny_config(tmp_path / "config.yaml", tiny_model_dir)
    result = snakemake(tmp_path, config, "-n", "--quiet", "rules", "all")
    assert result.returncode == 0, result.stderr
    planned = {line.split()[0] for line in result.stdout.splitlines() if line and line.split()[0] in RULES}
    assert planned == RULES, result.stdout


def test_the_snakefile_and_the_config_check_import_neither_torch_nor_botorch(tmp_path, tiny_model_dir):
    """Every cluster job parses the Snakefile again: parsing it (the config check, job settings, memory from the
    model's files) must not pay torch's import."""
    config = write_tiny_config(tmp_path / "config.yaml", tiny_model_dir)
    command = [sys.executable, "-X", "importtime", *SNAKEMAKE[1:], "--directory", str(tmp_path), "--configfile",
               str(config), "--cores", "1", "-n", "--quiet", "rules", "all"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "bomf.config" in imported and "bomf.memory" in imported
    assert not imported & {"torch", "botorch", "transformers"}


def test_the_cluster_profile_names_only_rules_of_the_workflow():
    """A rule renamed without its set-resources entry would silently lose its GPU partition on a cluster."""
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    rules = "\n".join(path.read_text() for path in (REPO / "workflow" / "rules").glob("*.smk"))
    defined = set(re.findall(r"^rule (\w+):", rules, flags=re.MULTILINE))
    defined |= set(re.findall(r"^use rule \w+ as (\w+)", rules, flags=re.MULTILINE))
    assert set(profile["set-resources"]) <= defined, set(profile["set-resources"]) - defined


def test_gpu_jobs_get_the_profiles_cpus_and_memory_computed_from_the_model(tmp_path, tiny_model_dir):
    """The cluster profile gives every GPU rule its CPUs (one anchor), and each job that trains or stacks the model
    asks for the host memory bomf.memory computes from the model's files and the member count."""
    from bomf.memory import job_device_memory_mb, job_memory_mb, model_parameters

    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert set(profile["set-threads"]) == set(profile["set-resources"]) and set(profile["set-threads"].values()) == {4}
    config = write_tiny_config(tmp_path / "config.yaml", tiny_model_dir)
    result = snakemake(tmp_path, config, "-n", "--forceall")
    assert result.returncode == 0, result.stderr
    asked = dict(re.findall(r"rule (\w+):\n(?:    .*\n)*?    resources: .*?mem_mb=(\d+)", result.stdout))
    parameters = model_parameters(str(tiny_model_dir))
    members = yaml.safe_load(config.read_text())["finetune"]["members"]
    for job in ("hpo_trial", "finetune", "fuse", "evaluate_test", "loss_landscape"):
        assert int(asked[job]) == job_memory_mb(job, parameters, members, "cpu"), job  # the tiny config: device cpu
    gpu = re.search(r"rule finetune:\n(?:    .*\n)*?    resources: .*?gpu_memory_mb=(\d+)", result.stdout)
    assert int(gpu.group(1)) == job_device_memory_mb("finetune", parameters, members)


def test_the_local_gpu_profile_limits_gpu_jobs_to_the_gpus():
    """profiles/gpus caps the jobs that ask for a GPU (gpu=1: the rules the cluster profile sends to its GPU
    partition) at its count, so Snakemake starts no more GPU jobs than there are GPUs to bind them to."""
    profile = yaml.safe_load((REPO / "profiles" / "gpus" / "config.yaml").read_text())
    assert profile["resources"] == {"gpu": 2}
    result = subprocess.run([*SNAKEMAKE, "-n", "--quiet", "rules", "all", "--profile", "profiles/gpus"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    cluster = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())["set-resources"]
    rules = "\n".join(path.read_text() for path in (REPO / "workflow" / "rules").glob("*.smk"))
    blocks = re.split(r"^(?=\S)", rules, flags=re.MULTILINE)  # a rule's block ends where the next statement starts
    gpu = {block[len("rule "):].split(":")[0] for block in blocks if block.startswith("rule ") and "gpu=1" in block}
    gpu |= {derived for base, derived in re.findall(r"^use rule (\w+) as (\w+)", rules, flags=re.MULTILINE)
            if base in gpu}
    assert gpu == set(cluster)


def test_default_config_dry_run():
    """The repository's own config.yaml plans the whole default pipeline, with the workflow profile
    (cores: all) picked up as `make demo` relies on."""
    result = subprocess.run([*SNAKEMAKE, "-n", "--quiet", "rules", "all"], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "finetune" in result.stdout and "fuse" in result.stdout
    assert "workflow specific profile profiles/default" in result.stdout + result.stderr


def readme_config_commands() -> list[list[str]]:
    """Every `snakemake ... --config ...` command the README shows, as arguments after `snakemake`."""
    import re
    import shlex

    commands = re.findall(r"^snakemake ([^#`\n]*--config [^#`\n]*)|`snakemake ([^`]*--config [^`]*)`",
                          (REPO / "README.md").read_text(), flags=re.MULTILINE)
    return [shlex.split(block or inline) for block, inline in commands]


@pytest.mark.parametrize("arguments", readme_config_commands(), ids=" ".join)
def test_readme_config_commands_work(arguments):
    """The README's --config examples plan the pipeline as written: Snakemake passes their values as strings,
    and the config check reads them with the schema's types."""
    result = subprocess.run([*SNAKEMAKE, "-n", "--quiet", "rules", *arguments], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "finetune" in result.stdout


def test_readme_shows_config_examples():
    assert len(readme_config_commands()) >= 2


@pytest.mark.slow
def test_end_to_end_tiny_run(tmp_path, tiny_model_dir):
    config = write_tiny_config(tmp_path / "config.yaml", tiny_model_dir)
    audit = audit_environment(tmp_path)
    result = snakemake(tmp_path, config, "all", env=audit)
    assert result.returncode == 0, result.stderr[-5000:]
    # No selection step read the test split: only the test evaluations and the oracle opened it.
    opened = [line.split("\t") for line in Path(audit["BOMF_AUDIT_LOG"]).read_text().splitlines()]
    assert {(verdict, script) for verdict, script, _, _ in opened} == {
        ("allowed", "evaluate_test.py"), ("allowed", "oracle_subset.py")}, opened  # the data job writes via a rename

    tables = tmp_path / "results/tables"
    for name in TABLES:
        assert all((tables / f"{name}.{ext}").stat().st_size > 0 for ext in ("csv", "md", "tex")), name
    main = (tables / "table1_main.md").read_text()
    for label in ("BOMF", "SWA", "Greedy soup", "Learned soup", "Best subset (oracle, test-selected)"):
        assert f"| {label} |" in main, label
    results = pd.read_csv(tables / "table1_main.csv")
    # Beside the methods, the kinds' trivial answer (majority class, mean): a reference row, never marked.
    assert {"rte", "stsb"} <= set(results["task"]) and {*METHODS, TRIVIAL} == set(results["method"])
    assert results.loc[results["method"] == "oracle_subset", "oracle"].all()
    assert results.loc[results["method"] == TRIVIAL, "mark"].isna().all()
    significance = pd.read_csv(tables / "table1_significance.csv")
    assert set(significance["comparison"]) == {"swa", "best baseline", "sign test"}
    assert pd.concat([significance["p_value"], significance["run_p_value"]]).dropna().between(0, 1).all()
    cost = pd.read_csv(tables / "table5_cost.csv")
    assert {"hpo", "finetune", "fusion", "test", "grid"} <= set(cost["stage"])
    assert "\\begin{tabular}" in (tables / "table3_ablation.tex").read_text()
    assert json.loads((tables / "provenance.json").read_text())["config"]["tasks"] == ["rte", "stsb"]
    command = (tmp_path / "results/commands.log").read_text().splitlines()[0].split("\t")[2]
    assert command.startswith("snakemake ") and command.endswith(" all")

    report = snakemake(tmp_path, config, "all", "--report", "results/report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "results/report.html").stat().st_size > 100_000

    # The config is each job's input: an edit reruns exactly the jobs that read the edited value.
    every_rule = RULES - {"all"}
    # 3 BO methods x 2 tasks, and what reads them
    bo_outputs = {"fuse": 6, "evaluate_test": 6, "loss_landscape": 2, "plot_landscape": 2, "plot_pareto": 2,
                  "export_model": 2, "summarise_run": 2, "paper_tables": 1, "all": 1}
    edits = {"fusion.evaluations": (("fusion", "evaluations"), 5, bo_outputs),
             "figures.landscape.size": (("figures", "landscape", "size"), 3,
                                        {"loss_landscape": 2, "plot_landscape": 2, "paper_tables": 1, "all": 1}),
             "fusion.learned_soup_lr": (("fusion", "learned_soup_lr"), 0.1,
                                        {"fuse": 2, "evaluate_test": 2, "summarise_run": 2, "paper_tables": 1,
                                         "all": 1}),
             "tables.bootstrap_resamples": (("tables", "bootstrap_resamples"), 300, {"paper_tables": 1, "all": 1}),
             # How often stage 2 writes a resume state is not what it computes (a resource): no job that trains
             # or scores reruns, only the tables, whose provenance records the whole config.
             "finetune.checkpoint_minutes": (("finetune", "checkpoint_minutes"), 5, {"paper_tables": 1, "all": 1})}
    for name, (path, value, expected) in edits.items():
        assert scheduled_jobs(tmp_path, edited_config(config, tmp_path / f"{name}.yaml", path, value)) == expected, name
    members = scheduled_jobs(tmp_path, edited_config(config, tmp_path / "members.yaml", ("finetune", "members"), 4))
    assert set(members) == every_rule - {"prepare_data", "hpo_suggest", "hpo_trial", "hpo_select"} | {"all"}
    assert set(scheduled_jobs(tmp_path, edited_config(config, tmp_path / "test.yaml", ("data", "max_test"), 40))) \
        == every_rule | {"all"}
    assert scheduled_jobs(tmp_path, config) == {}

    # The small records alone (what results/cpu commits) rebuild every table and figure, running nothing else.
    published = tmp_path / "published"
    publish(tmp_path / "results", published / "results")
    assert not list(published.rglob("*.safetensors")) and not list(published.rglob("*.jsonl"))
    # Of an exported model only its card is kept.
    assert {p.name for p in (published / "results/export/rte/tiny/seed0/bomf").iterdir()} == {"README.md"}
    run_provenance = published / "results/rte/tiny/seed0/provenance.json"
    made_by_the_run = run_provenance.read_text()
    rules = list(REBUILD_RULES)
    rebuilt = snakemake(published, config, "all", "--allowed-rules", *rules, "--forcerun", *rules)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    ran = {line.split()[-1].rstrip(":") for line in rebuilt.stderr.splitlines()
           if line.startswith(("rule ", "localrule "))}
    assert ran == {"paper_tables", "plot_landscape", "plot_pareto", "plot_grid", "paper_figures", "all"}, ran
    assert run_provenance.read_text() == made_by_the_run  # the rebuild's commit is in the tables' own record
    for name in TABLES:
        assert (published / f"results/tables/{name}.md").read_text() == (tables / f"{name}.md").read_text(), name

    for task in ("rte", "stsb"):
        run = tmp_path / "results" / task / "tiny" / "seed0"
        split = json.loads((tmp_path / "results/data" / task / "split.json").read_text())
        assert split["sizes"] == {"train": 64, "val": 32, "test": 48}
        trials = pd.read_csv(run / "hpo/trials.csv")
        assert len(trials) == 4 and {"learning_rate", "batch_size", "score", "seconds"} <= set(trials.columns)
        assert len(pd.read_csv(run / "members/trajectory.csv")) == 3
        history = pd.read_csv(run / "fusion/bomf/history.csv")
        assert list(history["source"]).count("bo") == 2 and history["chosen"].sum() == 1
        weights = json.loads((run / "fusion/bomf/weights.json").read_text())["weights"]
        assert abs(sum(weights) - 1) < 1e-6 and min(weights) >= 0
        # Only the outer-loop baselines store weights; every other method is rebuilt from the members.
        assert {path.parent.name for path in (run / "fusion").rglob("*.safetensors")} == {"grid_finetune", "hpbo_full"}
        for method in ("bomf", "ties"):
            check_export(tmp_path, task, method)
        test = json.loads((run / "test/bomf.json").read_text())
        assert test["test_size"] == 48 and len(test["predictions"]) == 48
        assert list(pd.read_csv(run / "summary.csv")["method"]) == METHODS
        assert json.loads((run / "provenance.json").read_text())["packages"]["torch"]
        oracle = json.loads((run / "fusion/oracle_subset/weights.json").read_text())
        # 6 consecutive-member subsets of 3 members, 3 of them fused (the single members are not).
        assert oracle["oracle"] is True and oracle["selected_on"] == "test" and oracle["evaluations"] == 3
        check_saved_fusions(run)
        grid = pd.read_csv(run / "grid/grid.csv")
        assert sorted(grid["frozen_layers"]) == [0, 0, 1, 1] and grid["best_val_metric"].notna().all()
        assert not list((run / "grid/frozen0").glob("*.safetensors"))  # temp checkpoints removed
        grid_choice = json.loads((run / "fusion/grid_finetune/weights.json").read_text())
        assert grid_choice["validation"][split_metric(task)] == grid["best_val_metric"][grid["frozen_layers"] == 0].max()
        assert len(pd.read_csv(run / "hpo_full/trials.csv")) == 4
        landscape = pd.read_csv(run / "landscape/grid.csv")
        assert len(landscape) == 25 and landscape["loss"].notna().all()
        points = pd.read_csv(run / "landscape/points.csv")
        assert list(points["name"]) == ["member 0", "member 1", "member 2", "swa", "bomf"]
        figures = tmp_path / "results/figures" / task / "tiny/seed0"
        for name in FIGURES:
            assert (figures / f"{name}.png").stat().st_size > 10_000 and (figures / f"{name}.pdf").is_file()
        assert "CUDA_VISIBLE_DEVICES=" in (tmp_path / "logs" / task / "tiny/seed0/finetune.log").read_text()


def check_export(workdir: Path, task: str, method: str) -> None:
    """An exported model loads with transformers alone and scores its recorded test metrics; its card says
    where it came from; BOMF's export is Σ wᵢθᵢ of the members with its recorded weights."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bomf.io import read_jsonl
    from bomf.tasks.registry import GLUE_TASKS
    from bomf.tasks.sequence import SequenceData

    run, export = workdir / "results" / task / "tiny/seed0", workdir / "results/export" / task / "tiny/seed0" / method
    test = json.loads((run / "test" / f"{method}.json").read_text())
    spec = GLUE_TASKS[task]
    model = AutoModelForSequenceClassification.from_pretrained(export)
    data = SequenceData(read_jsonl(workdir / "results/data" / task / "test.jsonl"),
                        AutoTokenizer.from_pretrained(export), 64, spec)
    scores, predictions = data.evaluate(model, list(spec.metrics), 32, torch.device("cpu"))
    assert scores == pytest.approx(test["test"], abs=1e-6) and list(predictions) == pytest.approx(test["predictions"])
    card = (export / "README.md").read_text()
    primary = spec.primary_metric
    assert f"{primary} {test['test'][primary]:.4f}" in card and "snakemake " in card and "member00.safetensors" in card
    record = json.loads((run / "fusion" / method / "weights.json").read_text())
    if method == "bomf":
        assert "Pareto-optimal points" in card and "`best_metric`" in card
        members = [load_file(str(p)) for p in sorted((run / "members").glob("member*.safetensors"))]
        saved = load_file(str(export / "model.safetensors"))
        for name, tensor in saved.items():
            expected = sum(w * m[name].double() for w, m in zip(record["weights"], members))
            torch.testing.assert_close(tensor.double(), expected, rtol=1e-5, atol=1e-6, msg=name)
    else:
        assert f"`{record['merge']['method']}`" in card and "density = " in card


def check_saved_fusions(run: Path) -> None:
    """Each method's weights.json is its chosen point (simplex weights, or a merge and its hyperparameters)
    and ``evaluations`` counts the fused models its search evaluated (members and the final score of the
    chosen point left out)."""
    members = len(list((run / "members").glob("member*.safetensors")))
    # fusion.evaluations = 4 for each BO search; greedy soup tries each member after the best; the merges
    # score their grid (2 scales x 1 density or drop rate); the rest search nothing (learned soup's gradient
    # passes are not evaluations).
    searched = {"bomf": 4, "bo_metric": 4, "bo_loss": 4, "greedy_soup": members - 1, "swa": 0,
                "learned_soup": 0, "best_member": 0, "last_member": 0, "ema": 0, "task_arithmetic": 2, "ties": 2,
                "dare": 2, "otfusion": 0, "twa": 0}
    for method in FUSION_METHODS:
        record = json.loads((run / "fusion" / method / "weights.json").read_text())
        assert record["evaluations"] == searched[method], method
        if method in ("task_arithmetic", "ties", "dare"):
            history = pd.read_csv(run / "fusion" / method / "history.csv")
            chosen = history[history["chosen"]].iloc[0]
            assert record["merge"]["method"] == method and record["merge"]["scale"] == chosen["scale"]
            assert record["validation"] == pytest.approx({k: chosen[k] for k in record["validation"]}, abs=1e-9)
            continue
        if method == "ema":
            assert record["stored"] == "ema" and "ema" in json.loads((run / "members/members.json").read_text())["stored"]
            continue
        if method == "otfusion":  # aligned to the best validation member (fusion.otfusion_reference: best)
            best = json.loads((run / "fusion" / "best_member" / "weights.json").read_text())["weights"]
            assert record["aligned"]["reference"] == best.index(1.0)
            continue
        if method == "twa":
            assert len(record["span"]) == members
            continue
        weights = record["weights"]
        assert len(weights) == members and abs(sum(weights) - 1) < 1e-6, method
        if method in ("bomf", "bo_metric", "bo_loss"):
            history = pd.read_csv(run / "fusion" / method / "history.csv")
            chosen = history[history["chosen"]].iloc[0]
            assert [chosen[c] for c in weight_columns(members)] == pytest.approx(weights, abs=1e-12)
            assert record["validation"] == pytest.approx({k: chosen[k] for k in record["validation"]}, abs=1e-9)


def edited_config(config: Path, out: Path, path: tuple[str, ...], value) -> Path:
    settings = yaml.safe_load(config.read_text())
    section = settings
    for key in path[:-1]:
        section = section.setdefault(key, {})
    section[path[-1]] = value
    out.write_text(yaml.safe_dump(settings))
    return out


def scheduled_jobs(workdir: Path, config: Path) -> dict[str, int]:
    """What a dry run of ``all`` would run: rule -> job count (Snakemake's job stats)."""
    result = snakemake(workdir, config, "-n", "all")
    assert result.returncode == 0, result.stderr[-3000:]
    if "Nothing to be done" in result.stdout + result.stderr:
        return {}
    table = result.stdout.split("Job stats:")[1].splitlines()[3:]  # after the header and its rule
    rows = [line.split() for line in table[:next(i for i, line in enumerate(table) if not line.strip())]]
    return {rule: int(count) for rule, count in rows if rule != "total"}


def split_metric(task: str) -> str:
    return {"rte": "accuracy", "stsb": "pearson"}[task]


def configured_methods(config: Path) -> list[str]:
    settings = yaml.safe_load(config.read_text())
    return [*settings["fusion"]["methods"], *settings["baselines"]["methods"]]


def check_text_run(workdir: Path, task: str, metrics: list[str], methods: list[str]) -> dict:
    """What every text-task run must have produced; returns the BOMF test record."""
    tables = workdir / "results/tables"
    for name in TABLES:
        assert all((tables / f"{name}.{ext}").stat().st_size > 0 for ext in ("csv", "md", "tex")), name
    every_metric = pd.read_csv(tables / "table6_all_metrics.csv")
    ours = every_metric[every_metric["task"] == task]
    trivial = {TRIVIAL} if kind_of(get_task(task, {})).trivial is not None else set()  # generation has none
    assert set(ours["method"]) == {*methods, *trivial} and set(ours["metric"]) == {*metrics, "loss"}
    significance = pd.read_csv(tables / "table1_significance.csv")
    assert set(significance.loc[significance["task"] == task, "metric"]) == {metrics[0]}
    run = workdir / "results" / task / "tiny" / "seed0"
    history = pd.read_csv(run / "fusion/bomf/history.csv")
    assert {"loss", *metrics} <= set(history.columns), history.columns
    test = json.loads((run / "test/bomf.json").read_text())
    assert set(test["test"]) == {"loss", *metrics} and set(test["example_statistics"]) == set(metrics)
    assert len(test["predictions"]) == len(test["labels"]) == test["test_size"]
    assert all(isinstance(p, str) for p in test["predictions"])
    for name in FIGURES:
        assert (workdir / "results/figures" / task / "tiny/seed0" / f"{name}.png").stat().st_size > 10_000
    return test


@pytest.mark.slow
def test_end_to_end_extractive_qa(tmp_path, tiny_model_dir):
    """SQuAD 2.0 from stage 1 to the tables: split by article, three objectives (loss, F1, EM)."""
    config = write_tiny_config(tmp_path / "config.yaml", tiny_model_dir, TINY_QA_CONFIG)
    result = snakemake(tmp_path, config, "all")
    assert result.returncode == 0, result.stderr[-5000:]
    check_text_run(tmp_path, "squad_v2", ["token_f1", "exact_match"], configured_methods(config))
    split = json.loads((tmp_path / "results/data/squad_v2/split.json").read_text())
    assert split["sizes"] == {"train": 48, "val": 24, "test": 40} and "by article" in split["protocol"]
    # The tiny random model answers nothing: the run says so on the terminal, in summary.csv and in Table 1.
    assert "bomf warning: squad_v2/tiny/seed0 learned nothing (" in result.stderr
    summary = pd.read_csv(tmp_path / "results/squad_v2/tiny/seed0/summary.csv")
    assert summary["warning"].str.contains("every method scores the same|constant predictions").all()
    assert "WARNING: squad_v2/tiny/seed0 learned nothing" in (tmp_path / "results/tables/table1_main.md").read_text()


def check_lora_export(workdir: Path, task: str, base_dir: Path, test: dict) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bomf.io import read_jsonl

    export = workdir / "results/export" / task / "tiny/seed0/bomf"
    settings = yaml.safe_load((workdir / "config.yaml").read_text())
    spec = get_task(task, {})
    data = kind_of(spec).encode(spec, read_jsonl(workdir / "results/data" / task / "test.jsonl"),
                                AutoTokenizer.from_pretrained(export), settings["model_catalog"]["tiny"]["max_length"],
                                settings, "test")
    merged = AutoModelForCausalLM.from_pretrained(export)
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), export / "adapter")
    for model in (merged, adapter):
        scores, predictions = data.evaluate(model, list(spec.metrics), 32, torch.device("cpu"))
        assert scores == pytest.approx(test["test"], abs=1e-5) and list(predictions) == test["predictions"]
    assert "PeftModel.from_pretrained" in (export / "README.md").read_text()


@pytest.mark.slow
def test_end_to_end_lora_generation(tmp_path, tiny_llama_dir):
    """SAMSum (four objectives) and E2E (three) from stage 1 to the tables, LoRA members on a causal LM."""
    config = write_tiny_config(tmp_path / "config.yaml", tiny_llama_dir, TINY_GENERATION_CONFIG)
    result = snakemake(tmp_path, config, "all")
    assert result.returncode == 0, result.stderr[-5000:]
    for task, metrics in (("samsum", ["rouge1", "rouge2", "rougeL"]), ("e2e", ["bleu", "rougeL"])):
        test = check_text_run(tmp_path, task, metrics, configured_methods(config))
        assert all(isinstance(refs, list) for refs in test["labels"])
        run = tmp_path / "results" / task / "tiny" / "seed0"
        # Members are adapters only; the export is the fused adapter and the base with it merged in, each
        # scoring the recorded test metrics.
        member = run / "members/member00.safetensors"
        assert member.stat().st_size < 0.2 * (tiny_llama_dir / "model.safetensors").stat().st_size
        check_lora_export(tmp_path, task, tiny_llama_dir, test)
        trial = json.loads((run / "hpo/round0/trial0.json").read_text())
        assert trial["proxy"] is True and trial["trainable_fraction"] < 0.2
