"""`snakemake --profile slurm` against a live single-node SLURM (tests/slurm/start.sh), no mocks.

The tiny config runs once through the cluster profile while the finetune job is killed with scancel
mid-training (after its first member and resume state are written), and once locally; the cluster run must
submit every job through sbatch, run a round's trials side by side, hand GPU rules a GPU, retry the cancelled
job, which resumes from the saved state, and produce the same results as the local run.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from bomf.train.members import STATE_FILE
from conftest import REPO, write_tiny_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CLUSTER_UP = shutil.which("sinfo") is not None and subprocess.run(
    ["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0
if not CLUSTER_UP:
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI must run the SLURM test: start the cluster with tests/slurm/start.sh")
    pytest.skip("no live SLURM cluster (start one with: sudo bash tests/slurm/start.sh)", allow_module_level=True)

SNAKEMAKE = [sys.executable, "-m", "snakemake", "all", "--snakefile", str(REPO / "Snakefile")]
GPU_RULES = {"hpo_trial", "finetune", "fuse", "evaluate_test"}
CLUSTER_RULES = GPU_RULES | {"prepare_data", "hpo_suggest", "hpo_select", "summarise_run", "paper_tables",
                             "plot_pareto", "export_model"}
# The cluster test is about scheduling: the tiny config with four fusion methods, without the extra baselines
# and the landscape, and a stage 2 long enough (a few seconds) that a cancel lands between its first member
# and its last.
METHODS = ["bomf", "swa", "greedy_soup", "best_member"]
CLUSTER_CONFIG = {"tasks": ["rte"], "baselines": {"methods": []}, "figures": {"landscape": {"enabled": False}},
                  "finetune": {"epochs": 30}, "fusion": {"methods": METHODS}, "export": {"methods": ["bomf"]}}
RUN = Path("results/rte/tiny/seed0")
RESUME_STATE = RUN / "members.resume" / STATE_FILE


def _env() -> dict:
    # Jobs rerun Snakemake on the node through `python -m snakemake`: the venv's bin must come first.
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def _running_job(rule: str, deadline: float) -> str:
    """The id of the job of ``rule`` as soon as SLURM shows it running."""
    while time.time() < deadline:
        jobs = subprocess.run(["squeue", "-h", "-o", "%i %T %k"], capture_output=True, text=True).stdout
        for line in jobs.splitlines():
            job_id, state, comment = line.split(maxsplit=2)
            if state == "RUNNING" and comment.startswith(f"rule_{rule}"):
                return job_id
        time.sleep(1)
    raise AssertionError(f"no running {rule} job appeared")


def _cancel_finetune_mid_training(workdir: Path, deadline: float) -> str:
    """scancel the finetune job once it has written a resume state (a member is saved, more are to come)."""
    job_id = _running_job("finetune", deadline)
    while not (workdir / RESUME_STATE).is_file():
        assert time.time() < deadline, "the finetune job wrote no resume state"
        time.sleep(0.05)
    subprocess.run(["scancel", job_id], check=True)
    return job_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    cluster, local = tmp_path_factory.mktemp("cluster"), tmp_path_factory.mktemp("local")
    for workdir in (cluster, local):
        write_tiny_config(workdir / "config.yaml", tiny_model_dir, **CLUSTER_CONFIG)
    profiles = ["--profile", "slurm", "--profile", "tests/slurm/profile", "--slurm-keep-successful-logs",
                "--verbose"]
    log = cluster / "snakemake.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            ["timeout", "1500", *SNAKEMAKE, "--directory", str(cluster), "--configfile",
             str(cluster / "config.yaml"), *profiles],
            cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=_env())
        try:
            cancelled = _cancel_finetune_mid_training(cluster, time.time() + 1200)
        finally:
            process.wait()
    local_run = subprocess.run(
        ["timeout", "900", *SNAKEMAKE, "--directory", str(local), "--configfile", str(local / "config.yaml"),
         "--cores", "2"], cwd=REPO, capture_output=True, text=True, env=_env())
    return {"cluster": cluster, "local": local, "log": log.read_text(), "returncode": process.returncode,
            "cancelled": cancelled, "local_run": local_run}


SUBMISSION = re.compile(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/(?:(\w+)/)?")


def _submissions(log: str) -> list[tuple[str, str, str]]:
    """(rule, SLURM job id, wildcards folder) of every submission, in order."""
    return [(rule, job, wildcards) for job, rule, wildcards in SUBMISSION.findall(log)]


def test_cluster_run_completes_despite_scancel(runs):
    assert runs["returncode"] == 0, runs["log"][-5000:]
    finetune_jobs = [job for rule, job, _ in _submissions(runs["log"]) if rule == "finetune"]
    assert runs["cancelled"] in finetune_jobs and len(finetune_jobs) == 2, finetune_jobs  # retried once
    assert (runs["cluster"] / "results/tables/table1_main.md").is_file()


def test_cancelled_finetune_resumed_from_its_saved_state(runs):
    """The retry continued from the members the cancelled job had saved instead of training from scratch."""
    retry_log = (runs["cluster"] / "logs/rte/tiny/seed0/finetune.log").read_text()
    resumed = re.search(r"resumed from step (\d+) \((\d+) of 3 members done\)", retry_log)
    assert resumed and int(resumed.group(2)) in (1, 2), retry_log[-3000:]
    assert not (runs["cluster"] / RESUME_STATE).parent.exists()  # removed once the members were moved


def test_every_rule_job_went_through_sbatch(runs):
    submitted = {rule for rule, _, _ in _submissions(runs["log"])}
    assert submitted == CLUSTER_RULES
    assert "sbatch call:" in runs["log"]
    for rule in GPU_RULES:  # the cluster profile's GPU partition and the rule's own gpu=1, renamed rules too
        assert re.search(rf"sbatch call: .*rule_{rule}[/_' ].* -p gpu .*--gpus=1", runs["log"]), rule


def test_trials_of_a_round_were_submitted_together(runs):
    """Both trials of a round were submitted before either finished (only earlier rounds had finished)."""
    log = runs["log"]
    finished = [m.start() for m in re.finditer(r"Finished jobid: \d+ \(Rule: hpo_trial\)", log)]
    for round_index in range(2):
        trials = [job for rule, job, wildcards in _submissions(log)
                  if rule == "hpo_trial" and wildcards.startswith(f"rte_tiny_0_hpo_{round_index}_")]
        assert len(trials) == 2, trials
        last_submission = max(log.index(f"submitted with SLURM jobid {job} ") for job in trials)
        assert sum(pos < last_submission for pos in finished) == 2 * round_index


def test_gpu_rules_received_a_gpu(runs):
    """Each GPU job got a (stand-in) GPU from SLURM, and computed where the config says: the tiny config's
    ``device: cpu``, since the stand-ins are not devices (under ``auto`` each job would stop: test_device)."""
    logs = runs["cluster"] / "logs"
    gpu_logs = [*logs.glob("rte/tiny/seed0/hpo/round*/trial*.log"), logs / "rte/tiny/seed0/finetune.log",
                *logs.glob("rte/tiny/seed0/fusion/*.log"), *logs.glob("rte/tiny/seed0/test/*.log")]
    assert len(gpu_logs) == 4 + 1 + 2 * len(METHODS)
    for path in gpu_logs:
        text = path.read_text()
        assert re.match(r"CUDA_VISIBLE_DEVICES=\d", text), path
        assert "compute: {'device': 'cpu', 'device_name': 'cpu'" in text, path
    assert (logs / "data/rte.log").read_text().splitlines()[0] == "CUDA_VISIBLE_DEVICES="


def test_cluster_outputs_equal_local_outputs(runs):
    assert runs["local_run"].returncode == 0, runs["local_run"].stderr[-5000:]
    cluster, local = runs["cluster"] / RUN, runs["local"] / RUN
    for method in METHODS:
        a, b = (json.loads((root / f"test/{method}.json").read_text()) for root in (cluster, local))
        assert a["test"] == b["test"] and a["predictions"] == b["predictions"], method
        wa, wb = (json.loads((root / f"fusion/{method}/weights.json").read_text())["weights"] for root in (cluster, local))
        assert wa == wb, method
    drop = ["seconds"]
    pd.testing.assert_frame_equal(pd.read_csv(cluster / "hpo/trials.csv").drop(columns=drop),
                                  pd.read_csv(local / "hpo/trials.csv").drop(columns=drop))
    main = "results/tables/table1_main.md"
    assert (runs["cluster"] / main).read_text() == (runs["local"] / main).read_text()
