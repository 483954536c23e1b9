"""What a Snakemake job shows on the terminal: warnings and a one-line error; everything else, tracebacks
included, goes to the rule's log."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import REPO


def job_script(log: Path, body: str, gpu: int = 0) -> str:
    """A job script as Snakemake runs one: its body inside ``runtime.job`` (``gpu``: the rule's gpu resource)."""
    return textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / 'workflow')!r})
        from types import SimpleNamespace
        from bomf.runtime import job, tell_user
        from bomf.tasks.registry import DataError
        with job(SimpleNamespace(log=[{str(log)!r}], threads=1, resources=SimpleNamespace(gpu={gpu}))):
    """) + textwrap.indent(textwrap.dedent(body), "    ")


def run_job(tmp_path, body: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", job_script(tmp_path / "job.log", body)], capture_output=True,
                          text=True, timeout=60)


def test_a_warning_reaches_the_terminal_while_the_output_goes_to_the_log(tmp_path):
    """Inside a Snakemake job everything printed goes to the rule's log; a warning is shown on the terminal too."""
    result = run_job(tmp_path, """
        print("ordinary output")
        tell_user("the proxy learned nothing")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "bomf warning: the proxy learned nothing\n" and result.stdout == ""
    log = (tmp_path / "job.log").read_text()
    assert "ordinary output" in log and "bomf warning: the proxy learned nothing" in log


def test_a_failing_job_shows_one_line_and_logs_the_traceback(tmp_path):
    result = run_job(tmp_path, """
        print("reading")
        raise DataError("data/train.csv:7: column 'label' is empty")
    """)
    log = str(tmp_path / "job.log")
    assert result.returncode == 1
    assert result.stderr == f"bomf error: data/train.csv:7: column 'label' is empty (traceback: {log})\n"
    text = (tmp_path / "job.log").read_text()
    assert "reading" in text and "Traceback (most recent call last)" in text and "DataError" in text


def test_an_unexpected_error_is_named_by_its_type(tmp_path):
    result = run_job(tmp_path, "{}['missing']\n")
    assert result.returncode == 1
    assert result.stderr.startswith("bomf error: KeyError: 'missing' (traceback: ")


def test_a_job_given_a_gpu_it_cannot_use_stops_before_any_work_with_one_line(tmp_path):
    """A SLURM GPU job under device: auto whose torch has no CUDA (this machine's): the run's first step stops
    it, with the reason and what to set, before it reads a file."""
    script = """
        import os
        os.environ["SLURM_JOB_GPUS"] = "0"
        from bomf.pipeline import Run
        Run({"device": "auto", "precision": {"training": "auto", "tf32": False}}, "rte", "tiny", 0)
        print("worked")
    """
    result = run_job(tmp_path, script)
    assert result.returncode == 1
    assert result.stderr.startswith("bomf error: this job was given a GPU (SLURM_JOB_GPUS=0) but cannot use it: torch ")
    assert "build without CUDA" in result.stderr and result.stderr.count("\n") == 1
    assert "worked" not in (tmp_path / "job.log").read_text()


def test_local_gpu_jobs_each_take_a_gpu_of_their_own(tmp_path):
    """A workstation with two GPUs (a stand-in device list): two GPU jobs at once get one each; a third waits
    until one of them ends and takes its GPU; a CPU job is not bound. Every job logs its peak memory."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "3,5", "TMPDIR": str(tmp_path)}  # TMPDIR: this test's locks
    env.pop("SLURM_JOB_ID", None)
    body = """
        import os, time
        print("bound", os.environ["CUDA_VISIBLE_DEVICES"], time.time(), flush=True)
        time.sleep(3)
    """
    jobs = []
    for name, gpu in (("a", 1), ("b", 1), ("c", 1), ("cpu", 0)):
        log = tmp_path / f"{name}.log"
        jobs.append((log, subprocess.Popen([sys.executable, "-c", job_script(log, body, gpu)], env=env)))
        time.sleep(0.5)
    assert all(process.wait(timeout=60) == 0 for _, process in jobs)
    bound = {log.stem: log.read_text().split("bound ")[1].split() for log, _ in jobs}
    assert {bound["a"][0], bound["b"][0]} == {"3", "5"} and bound["c"][0] in {"3", "5"}
    first_end = min(float(bound["a"][1]), float(bound["b"][1])) + 3
    assert float(bound["c"][1]) >= first_end - 0.2  # it waited for a GPU to be free
    assert bound["cpu"][0] == "3,5"  # a CPU job sees the list as it was given
    assert all("peak host memory" in log.read_text() for log, _ in jobs)
