"""What a Snakemake job shows on the terminal: warnings and a one-line error; everything else, tracebacks
included, goes to the rule's log."""

import subprocess
import sys
import textwrap

from conftest import REPO


def run_job(tmp_path, body: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / 'workflow')!r})
        from types import SimpleNamespace
        from bomf.runtime import job, tell_user
        from bomf.tasks.registry import DataError
        with job(SimpleNamespace(log=[{str(tmp_path / 'job.log')!r}], threads=1)):
    """) + textwrap.indent(textwrap.dedent(body), "    ")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


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
