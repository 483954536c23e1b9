"""The Snakemake DAG: every stage is planned, and a real run of the tiny config produces the table."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, write_tiny_config

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
METHODS = ["bomf", "swa", "greedy_soup", "learned_soup", "bo_metric", "bo_loss", "best_member", "last_member"]
RULES = {"prepare_data", "hpo_suggest", "hpo_trial", "hpo_select", "finetune", "fuse", "evaluate",
         "summarise_run", "table", "all"}


def snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    command = [*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(config), "--cores", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=1200)


def test_dry_run_plans_every_stage(tmp_path, tiny_model_dir):
    config = write_tiny_config(tmp_path / "config.yaml", tiny_model_dir)
    result = snakemake(tmp_path, config, "-n", "--quiet", "rules", "all")
    assert result.returncode == 0, result.stderr
    planned = {line.split()[0] for line in result.stdout.splitlines() if line and line.split()[0] in RULES}
    assert planned == RULES, result.stdout


def test_default_config_dry_run():
    """The repository's own config.yaml plans the whole default pipeline, with the workflow profile
    (cores: all) picked up as `make demo` relies on."""
    result = subprocess.run([*SNAKEMAKE, "-n", "--quiet", "rules", "all"], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "finetune" in result.stdout and "fuse" in result.stdout
    assert "workflow specific profile profiles/default" in result.stdout + result.stderr


@pytest.mark.slow
def test_end_to_end_tiny_run(tmp_path, tiny_model_dir):
    config = write_tiny_config(tmp_path / "config.yaml", tiny_model_dir)
    result = snakemake(tmp_path, config, "all")
    assert result.returncode == 0, result.stderr[-5000:]

    table = (tmp_path / "results/tables/glue.md").read_text()
    for method in METHODS:
        assert f"| {method} |" in table
    long = pd.read_csv(tmp_path / "results/tables/glue.csv")
    assert set(long["task"]) == {"rte", "stsb"} and long["mean"].notna().all()

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
        # The fused model is a regular transformers checkpoint.
        assert (run / "fusion/bomf/model/config.json").is_file()
        test = json.loads((run / "test/bomf.json").read_text())
        assert test["test_size"] == 48 and len(test["predictions"]) == 48
        assert list(pd.read_csv(run / "summary.csv")["method"]) == METHODS
        assert "CUDA_VISIBLE_DEVICES=" in (tmp_path / "logs" / task / "tiny/seed0/finetune.log").read_text()
