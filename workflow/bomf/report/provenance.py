"""What made a set of results: the command, the code commit, the configuration, library versions and the
machine, written beside the results so committed numbers can be traced and rerun. No torch import: the
versions come from package metadata, the machine from the OS."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import subprocess
import time
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "botorch", "gpytorch", "snakemake", "numpy", "scipy", "scikit-learn",
            "pandas", "safetensors", "tokenizers")


# The checkout this code runs from: its commit is the code's, whatever directory the jobs run in.
CODE_DIR = Path(__file__).resolve().parent


# Tracked files that a run writes (the committed records under results/cpu/) are not code: they leave the
# commit clean.
PIPELINE_OUTPUTS = "results"


def git_commit() -> str | None:
    """The code's commit, with ``-dirty`` when tracked files outside the pipeline's outputs differ from it;
    None outside git."""
    git = ["git", "-C", str(CODE_DIR)]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                f":(top,exclude){PIPELINE_OUTPUTS}"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    memory = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(), "memory_gib": memory,
            "python": platform.python_version()}


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def provenance(config: dict | None = None, computed_on: list[dict] | None = None) -> dict:
    """What made a set of results; ``computed_on``: the devices and precisions its jobs computed with (the
    machine is the one writing the record, not necessarily the one that trained)."""
    record = {"written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": git_commit(),
              "packages": versions(), "machine": machine(), "computed_on": computed_on or []}
    return record if config is None else {**record, "config": config}


def log_command(path: str | Path, argv: list[str]) -> None:
    """Append the Snakemake command that started a run (UTC time, commit, arguments) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\t{git_commit() or 'unknown'}\t" \
           f"{shlex.join(['snakemake', *argv[1:]])}\n"
    with path.open("a") as log:
        log.write(line)
