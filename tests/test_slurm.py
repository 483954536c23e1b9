"""`snakemake --profile slurm` against a live single-node SLURM (tests/slurm/start.sh), no mocks.

The tiny config runs once through the cluster profile while the finetune job is first requeued by SLURM
(`scontrol requeue`, as a pre-emption does: SIGTERM, then the same job runs again) and then killed with scancel,
each mid-training, and once locally; the cluster run must submit every job through sbatch, run a round's trials
side by side, hand GPU rules a GPU and the profile's CPUs, resume the requeued job and the retry of the cancelled
one from their saved states, and produce the same results as the local run.
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
import yaml
from bomf.memory import job_memory_mb, model_parameters
from bomf.train.resume import STATE_FILE
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
# and the landscape, and a stage 2 long enough (several seconds, a resume state every 0.6 s of training) that a
# requeue and then a cancel both land mid-training.
METHODS = ["bomf", "swa", "greedy_soup", "best_member"]
CLUSTER_CONFIG = {"tasks": ["rte"], "baselines": {"methods": []}, "figures": {"landscape": {"enabled": False}},
                  "finetune": {"epochs": 60, "checkpoint_minutes": 0.01}, "fusion": {"methods": METHODS},
                  "export": {"methods": ["bomf"]}}
RUN = Path("results/rte/tiny/seed0")
RESUME_STATE = RUN / "members.resume" / STATE_FILE
FINETUNE_LOG = Path("logs/rte/tiny/seed0/finetune.log")
RESUMED = re.compile(r"resumed from step (\d+) \((\d+) of 3 members done\)")


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


def _state_after(workdir: Path, step: int, deadline: float) -> int:
    """The step of the first resume state written after ``step``."""
    while True:
        try:
            written = json.loads((workdir / RESUME_STATE).read_text())["step"]
        except (OSError, ValueError):  # not written yet, or being replaced
            written = -1
        if written > step:
            return written
        assert time.time() < deadline, f"the finetune job wrote no resume state after step {step}"
        time.sleep(0.05)


def _requeue_finetune_mid_training(workdir: Path, deadline: float) -> tuple[str, int]:
    """scontrol requeue the finetune job once it has written a resume state, as a pre-emption would; returns its
    id and the step its second run resumed from (read from that run's log)."""
    job_id = _running_job("finetune", deadline)
    _state_after(workdir, -1, deadline)
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    # SLURM holds a requeued job back for a minute (its begin time); the test does not wait for that.
    left_running = False
    while True:
        state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True,
                               text=True).stdout.strip()
        if state != "RUNNING None":
            left_running = True
        elif left_running:
            break
        if state.endswith("BeginTime"):
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
        assert time.time() < deadline, f"the requeued finetune job did not run again ({state})"
        time.sleep(0.2)
    log = workdir / FINETUNE_LOG  # rewritten by the job's second run
    while not (resumed := RESUMED.search(log.read_text() if log.is_file() else "")):
        assert time.time() < deadline, "the requeued finetune job did not resume"
        time.sleep(0.2)
    return job_id, int(resumed.group(1))


def _cancel_finetune_mid_training(workdir: Path, after_step: int, deadline: float) -> str:
    """scancel the finetune job once it has written a resume state after ``after_step`` (more are to come)."""
    job_id = _running_job("finetune", deadline)
    _state_after(workdir, after_step, deadline)
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
            deadline = time.time() + 1200
            requeued, requeue_resumed = _requeue_finetune_mid_training(cluster, deadline)
            cancelled = _cancel_finetune_mid_training(cluster, requeue_resumed, deadline)
        finally:
            process.wait()
    # The local run gives every job the threads it had on the cluster: a float32 sum over 2 threads is not the
    # sum over 1, and the comparison below is bit for bit.
    threads = yaml.safe_load((REPO / "tests/slurm/profile/config.yaml").read_text())["set-threads"]
    local_run = subprocess.run(
        ["timeout", "900", *SNAKEMAKE, "--directory", str(local), "--configfile", str(local / "config.yaml"),
         "--cores", "2", "--set-threads", *(f"{rule}={count}" for rule, count in threads.items())],
        cwd=REPO, capture_output=True, text=True, env=_env())
    return {"cluster": cluster, "local": local, "log": log.read_text(), "returncode": process.returncode,
            "requeued": requeued, "requeue_resumed": requeue_resumed, "cancelled": cancelled, "local_run": local_run,
            "model": tiny_model_dir}


SUBMISSION = re.compile(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/(?:(\w+)/)?")


def _submissions(log: str) -> list[tuple[str, str, str]]:
    """(rule, SLURM job id, wildcards folder) of every submission, in order."""
    return [(rule, job, wildcards) for job, rule, wildcards in SUBMISSION.findall(log)]


def test_cluster_run_completes_despite_scancel(runs):
    assert runs["returncode"] == 0, runs["log"][-5000:]
    finetune_jobs = [job for rule, job, _ in _submissions(runs["log"]) if rule == "finetune"]
    assert runs["cancelled"] in finetune_jobs and len(finetune_jobs) == 2, finetune_jobs  # retried once
    assert (runs["cluster"] / "results/tables/table1_main.md").is_file()


def test_requeued_finetune_resumed_in_the_same_job(runs):
    """SLURM requeued the job (same id, run again: the plugin waited for it) and its second run continued from
    the state the first wrote when SIGTERM came; the later cancel hit that same job."""
    assert runs["requeue_resumed"] > 0
    assert runs["cancelled"] == runs["requeued"]


def test_cancelled_finetune_resumed_from_its_saved_state(runs):
    """The retry continued from the state the cancelled job had saved (after the requeued run's resume point)
    instead of training from scratch."""
    retry_log = (runs["cluster"] / FINETUNE_LOG).read_text()
    resumed = RESUMED.search(retry_log)
    assert resumed and int(resumed.group(1)) > runs["requeue_resumed"], retry_log[-3000:]
    assert not (runs["cluster"] / RESUME_STATE).parent.exists()  # removed once the members were moved


def test_every_rule_job_went_through_sbatch(runs):
    submitted = {rule for rule, _, _ in _submissions(runs["log"])}
    assert submitted == CLUSTER_RULES
    assert "sbatch call:" in runs["log"]
    for rule in GPU_RULES:  # the cluster profile's GPU partition, its CPUs per GPU job, the rule's own gpu=1
        assert re.search(rf"sbatch call: .*rule_{rule}[/_' ].* -p gpu .*--cpus-per-task=2 .*--gpus=1",
                         runs["log"]), rule
    # The finetune job's memory, computed from the model's files (bomf.memory), and twice that for its retry.
    needed = job_memory_mb("finetune", model_parameters(str(runs["model"])), 3, "cpu")  # the tiny config: device cpu
    assert re.findall(r"sbatch call: .*rule_finetune/.* --mem (\d+) ", runs["log"]) == [str(needed), str(2 * needed)]


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
        assert re.match(r"CUDA_VISIBLE_DEVICES=\d\nthreads: 2\n", text), path
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
