"""Process-wide settings every job makes the same way: seeds, determinism, thread counts.

numpy and torch are imported inside the functions that use them: ``job`` wraps every job, and the cheap ones
(tables, plots, stage-1 selection) never import torch.
"""

import os
import random
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from .device import set_cublas_workspace

# The environment variables that size the thread pools of torch, OpenMP and the BLAS libraries.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def seed_rngs(seed: int) -> None:
    """Python's, numpy's and torch's global random generators, from one seed."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_everything(seed: int) -> None:
    """Seeded generators and deterministic kernels: what every job that trains or scores a model sets."""
    import torch

    seed_rngs(seed)
    # CPU runs are bit-reproducible; on GPU this asks for deterministic kernels where torch has them, and
    # cuBLAS needs its fixed workspace for that (bomf.device sets it before the first CUDA call; this is for
    # callers that never resolved a device). It imports torch._inductor, ~2 s, which a model job has loaded
    # anyway: BO-only jobs use seed_rngs.
    set_cublas_workspace()
    torch.use_deterministic_algorithms(True, warn_only=True)


@contextmanager
def stop_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1)):
    """A block in which SIGTERM (what SLURM sends before killing a job at its time limit or pre-empting it) or
    SIGUSR1 (``sbatch --signal``) does not kill the process but is recorded: the block gets a function that says
    whether one came, so a training loop can save its state at its next step and stop."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may handle signals
        yield lambda: False
        return
    received: list[int] = []
    previous = {number: signal.signal(number, lambda number, frame: received.append(number)) for number in signals}
    try:
        yield lambda: bool(received)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def torch_threads(count: int):
    """Run a block with ``count`` intra-op threads (BoTorch's small GP fits are fastest on one)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def set_threads(count: int) -> None:
    """Size every thread pool of this process to ``count``: the variables for libraries not imported yet,
    torch directly when it is (a job script imports its modules before entering ``job``)."""
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)


# The terminal's stderr while a job's output goes to its log (see job), for what the user must read.
_terminal: int | None = None
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver sees


def local_gpus() -> list[str]:
    """The GPUs a local job may use: CUDA_VISIBLE_DEVICES's list where it is set, else every GPU the NVIDIA
    driver sees (by index), without importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [device.strip() for device in visible.split(",") if device.strip()]
    return [str(index) for index in range(len(list(NVIDIA_GPUS.glob("*"))))] if NVIDIA_GPUS.is_dir() else []


def claim_gpu(devices: list[str], wait: float = 1.0):
    """Bind this process to one of ``devices`` no other local job holds: an exclusive lock on the device's
    file (released by the kernel when the process ends, however it ends), waiting while all are taken. Sets
    CUDA_VISIBLE_DEVICES to it before anything initialises CUDA; returns the open lock file to keep."""
    import fcntl
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"bomf-gpus-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    while True:
        for device in devices:
            handle = open(folder / f"{device}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            os.environ["CUDA_VISIBLE_DEVICES"] = device
            return handle
        time.sleep(wait)


def tell_user(message: str) -> None:
    """A warning the user must see: in the job's log and, under Snakemake, on the terminal too."""
    line = f"bomf warning: {message}\n"
    print(line, end="", flush=True)
    if _terminal is not None:
        os.write(_terminal, line.encode())


def _print_peak_memory() -> None:
    """The job's peak host memory and, where it used CUDA, peak device memory: what sizes mem_mb and the GPU."""
    import resource

    line = f"peak host memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        line += f", peak device memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    print(line, flush=True)


@contextmanager
def job(snakemake):
    """Run a Snakemake script body with all its output in the rule's log and torch sized to the job's threads.

    Output is redirected at the file-descriptor level, so libraries that captured ``sys.stderr`` at import
    (transformers' logging, tqdm) and native code land in the log too. A failing job leaves its traceback in
    the log and one line on the terminal: the error's message (a data error names its file and line).
    """
    global _terminal
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    _terminal = saved[1]
    with open(snakemake.log[0], "w", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        slot = None
        try:
            set_threads(max(1, snakemake.threads))
            # SLURM binds a GPU job to its GPU; a local run with several GPUs binds each GPU job to a free one
            # (at most as many at once as --resources gpu=<count> lets Snakemake start: profiles/gpus).
            if getattr(snakemake.resources, "gpu", 0) and "SLURM_JOB_ID" not in os.environ:
                devices = local_gpus()
                slot = claim_gpu(devices) if len(devices) > 1 else None
            # A GPU job reads its model from the directory prepare_model made (pipeline.Run.model_spec): the
            # hub is offline, so a job on a node without network fails at once instead of waiting on timeouts
            # (read when huggingface_hub is imported, which no job has done before this).
            if getattr(snakemake.resources, "gpu", 0):
                os.environ["HF_HUB_OFFLINE"] = "1"
            # Recorded so a run shows which GPU (gres, or local slot) each job received.
            print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}", flush=True)
            print(f"threads: {max(1, snakemake.threads)}", flush=True)
            yield
        except Exception as error:
            traceback.print_exc()
            failure = error
        except BaseException:
            traceback.print_exc()
            raise
        else:
            failure = None
        finally:
            _print_peak_memory()
            if slot is not None:
                slot.close()
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            _terminal = None
    if failure is not None:
        kind = "" if isinstance(failure, ValueError) else f"{type(failure).__name__}: "
        os.write(2, f"bomf error: {kind}{failure} (traceback: {snakemake.log[0]})\n".encode())
        raise SystemExit(1)
