"""The fused-kernel build lock a killed process leaves behind must not hang every later BO job."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from bomf.fuse.warmup import KERNEL, STALE_LOCK_SECONDS, release_stale_lock

# A lock test that goes wrong waits forever: each has a limit of its own, far above the seconds it takes.
LOCK_TIMEOUT = 10


@pytest.mark.timeout(LOCK_TIMEOUT)
def test_a_stale_lock_is_removed(tmp_path, capfd):
    lock = tmp_path / "lock"
    lock.touch()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    assert release_stale_lock(tmp_path, max_age=600, poll=0.01) is True
    assert not lock.exists()
    assert "removed a stale build lock" in capfd.readouterr().err


@pytest.mark.timeout(LOCK_TIMEOUT)
def test_a_live_lock_is_waited_for_and_left_to_its_owner(tmp_path):
    lock = tmp_path / "lock"
    lock.touch()
    owner = threading.Timer(0.3, lock.unlink)  # a build that finishes after 0.3 s
    owner.start()
    started = time.perf_counter()
    assert release_stale_lock(tmp_path, max_age=600, poll=0.01) is False
    assert time.perf_counter() - started >= 0.25
    owner.join()


@pytest.mark.timeout(LOCK_TIMEOUT)
def test_no_lock_returns_at_once(tmp_path):
    assert release_stale_lock(tmp_path, poll=10) is False


PROPOSAL = """
import torch
from bomf.fuse.mobo import propose
X = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.double)
Y = torch.tensor([[0.1, 0.5], [0.4, 0.2], [0.3, 0.3], [0.5, 0.6]], dtype=torch.double)
config = {"acquisition": "qLogNEHVI", "mc_samples": 8, "restarts": 1, "raw_samples": 8}
print(propose(X, Y, torch.zeros(2, dtype=torch.double), config, seed=0).tolist())
"""


@pytest.mark.timeout(120)
def test_a_bo_proposal_removes_a_stale_lock_before_it_loads_the_kernel(tmp_path):
    """The path a BO job takes, in a fresh process: a qLogNEHVI proposal with a killed build's lock in the
    kernel's build folder proposes instead of waiting for the lock forever. A compiler that fails at once
    (CXX=false) keeps the test to the lock: BoTorch then falls back to its Python path."""
    extensions = tmp_path / "extensions"
    lock = extensions / KERNEL / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    old = time.time() - 2 * STALE_LOCK_SECONDS
    os.utime(lock, (old, old))
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions), "CXX": "false",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    try:  # run in tmp_path: a build folder in the working directory would import as the kernel's module
        result = subprocess.run([sys.executable, "-c", PROPOSAL], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the proposal waited for the stale lock {lock} (is release_stale_lock still called?)")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not lock.exists() and "removed a stale build lock" in result.stderr
    weights = json.loads(result.stdout.splitlines()[-1])
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0)


def test_each_python_environment_builds_the_kernel_in_a_folder_of_its_own(tmp_path):
    """Two virtual environments sharing torch's one build folder rebuild the kernel whenever the other has
    loaded it (the build command names the environment's paths)."""
    import subprocess
    import sys

    script = ("import os; from bomf.fuse.warmup import prepare_fused_kernel; prepare_fused_kernel(); "
              "print(os.environ['TORCH_EXTENSIONS_DIR'])")
    other = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(other)], check=True)
    env = {key: value for key, value in os.environ.items() if key != "TORCH_EXTENSIONS_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    folders = [subprocess.run([python, "-c", script], capture_output=True, text=True, check=True,
                              env=env).stdout.strip() for python in (sys.executable, other / "bin" / "python")]
    assert folders[0] != folders[1] and all("torch_extensions" in folder for folder in folders)
    chosen = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env={**env, "TORCH_EXTENSIONS_DIR": str(tmp_path)}).stdout.strip()
    assert chosen == str(tmp_path)  # a folder the user set is kept


CPU_A = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu sse avx512f amx_bf16\n\n" \
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu sse avx512f amx_bf16\n"
CPU_B = "processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\nflags\t\t: fpu sse avx2\n"


def test_each_cpu_type_builds_the_kernel_in_a_folder_of_its_own():
    """-march=native compiles for the CPU it runs on: a login node's build must not be loaded on a compute
    node of another CPU type that shares the home directory; nodes of one type share one build."""
    from bomf.fuse.warmup import build_folder, cpu_signature

    assert "avx512f" in cpu_signature(CPU_A) and "Platinum 8480+" in cpu_signature(CPU_A)
    assert cpu_signature(CPU_A) == cpu_signature(CPU_A.replace("fpu sse avx512f", "avx512f fpu sse"))
    assert build_folder("/venv", cpu_signature(CPU_A)) != build_folder("/venv", cpu_signature(CPU_B))
    assert build_folder("/venv", cpu_signature(CPU_A)) == build_folder("/venv", cpu_signature(CPU_A))
    assert build_folder("/venv", cpu_signature(CPU_A)) != build_folder("/other", cpu_signature(CPU_A))
    assert cpu_signature() == cpu_signature()  # this machine's, read from /proc/cpuinfo
