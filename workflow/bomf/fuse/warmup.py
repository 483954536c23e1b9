"""Build BoTorch's fused qLogNEHVI C++ kernel ahead of time: ``python -m bomf.fuse.warmup``.

BoTorch 0.18.1 compiles ``botorch/csrc/logei_fused.cpp`` with ``torch.utils.cpp_extension.load`` (``-O3
-march=native``, through ninja) the first time a qLogEHVI/qLogNEHVI acquisition is built in a process
(``botorch.acquisition.multi_objective.logei._try_load_fused_kernel``). The build is cached under
``$TORCH_EXTENSIONS_DIR``, which ``prepare_fused_kernel`` sets (unless set already) to a folder of this Python
environment and this CPU under ``~/.cache/torch_extensions``: torch's build command names the environment's
paths, so two virtual environments sharing one folder rebuilt the kernel each time the other had loaded it
(57-218 s a rebuild, measured when a clean-clone CI ran beside a working checkout); and ``-march=native`` builds
for the CPU it runs on, so a kernel built on a login node may crash a compute node of another CPU type sharing
the home directory: each CPU model and instruction set gets its own build. The compile
takes 31-55 s on 2 cores (benchmarks/first_use_compile.py); later processes only load the shared library
(~0.2 s). Without a compiler or ninja BoTorch warns and falls back to the pure-Python path (by its warning,
~3x slower). Run this once per machine (the Makefile's install step does) so
no BO job pays the compile inside its timings. Exit status 1 if the kernel could not be built.

torch guards the build directory with a plain ``lock`` file that every process loading the kernel creates
and removes, even when nothing needs compiling. A process killed meanwhile (kill -9, scancel, a CI timeout)
leaves it behind, and every later load then waits for it forever: a BO job that never ends.
``release_stale_lock`` runs before a process loads it, waits while a live process may hold the lock, and removes it
once it is far older than any build.
"""

import hashlib
import os
import sys
import time
import warnings
from functools import cache
from pathlib import Path

KERNEL = "logei_fused_ext"
CPUINFO = Path("/proc/cpuinfo")
STALE_LOCK_SECONDS = 600  # a build takes 31-55 s on 2 cores; a lock this old has no living owner


def release_stale_lock(directory: str | Path | None = None, max_age: float = STALE_LOCK_SECONDS,
                       poll: float = 1.0) -> bool:
    """Wait until the kernel's build lock is gone, removing it once older than ``max_age`` seconds; returns
    whether a stale lock was removed. ``directory``: the build directory (default: torch's for the kernel)."""
    if directory is None:
        from torch.utils.cpp_extension import _get_build_directory

        directory = _get_build_directory(KERNEL, False)
    lock = Path(directory) / "lock"
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return False
        if age > max_age:
            try:
                os.unlink(lock)
            except FileNotFoundError:
                return False
            print(f"bomf: removed a stale build lock {lock} ({age:.0f} s old, left by a killed process)",
                  file=sys.stderr, flush=True)
            return True
        time.sleep(poll)


def cpu_signature(cpuinfo: str | None = None) -> str:
    """What ``-march=native`` compiles for: the machine, the CPU's model name and its instruction-set flags (of
    ``/proc/cpuinfo``, whose first processor stands for all; the machine alone where there is none)."""
    import platform

    if cpuinfo is None:
        cpuinfo = CPUINFO.read_text() if CPUINFO.is_file() else ""
    first = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if first:
                break
            continue
        key, _, value = line.partition(":")
        first[key.strip()] = value.strip()
    flags = " ".join(sorted(first.get("flags", first.get("Features", "")).split()))
    return f"{platform.machine()}|{first.get('model name', first.get('CPU part', ''))}|{flags}"


def build_folder(prefix: str, cpu: str) -> Path:
    """The kernel's build folder for a Python environment (``sys.prefix``) on a CPU (``cpu_signature``)."""
    key = hashlib.sha256(f"{prefix}\n{cpu}".encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "torch_extensions" / f"env-{key}"


@cache
def prepare_fused_kernel() -> None:
    """Once per process, before BoTorch first loads the kernel: the build folder of this environment and CPU,
    no stale lock."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(build_folder(sys.prefix, cpu_signature())))
    release_stale_lock()


def build_fused_kernel() -> tuple[bool, float, str]:
    """Load (compiling if needed) the kernel; (available, seconds, build directory)."""
    from torch.utils.cpp_extension import _get_build_directory

    prepare_fused_kernel()
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from botorch.acquisition.multi_objective import logei

        logei._try_load_fused_kernel()
    seconds = time.perf_counter() - started
    for warning in caught:  # only the kernel's own (the imports warn about torch.jit.script too)
        if "fused" in str(warning.message):
            print(f"warning: {warning.message}", file=sys.stderr)
    return logei._C is not None, seconds, _get_build_directory(KERNEL, False)


def main() -> int:
    available, seconds, directory = build_fused_kernel()
    state = "ready" if available else "NOT available (pure-Python fallback)"
    print(f"botorch fused qLogNEHVI kernel {state}: {seconds:.1f} s (import + build/load), cache {directory}")
    return 0 if available else 1


if __name__ == "__main__":
    sys.exit(main())
