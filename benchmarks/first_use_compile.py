"""First-use cost of BoTorch's fused qLogNEHVI C++ kernel (JIT-compiled by torch.utils.cpp_extension).

Run: .venv/bin/python benchmarks/first_use_compile.py

Each step is a fresh process with TORCH_EXTENSIONS_DIR pointed at a new temporary directory, so the
machine's own cache (~/.cache/torch_extensions) is neither used nor touched:
  import      - ``import botorch.acquisition.multi_objective.logei`` alone (the baseline every BO job pays)
  cold build  - ``python -m bomf.fuse.warmup`` on the empty cache: import + compile
  warm load   - the same again: import + load of the cached library
Compile cost = cold build - import.
"""

import os
import subprocess
import sys
import tempfile
import time

IMPORT = "import botorch.acquisition.multi_objective.logei"


def timed(args: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        print(done.stdout, done.stderr, file=sys.stderr)
    return seconds, (done.stdout + done.stderr).strip()


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCH_EXTENSIONS_DIR": cache}
        imported, _ = timed(["-c", IMPORT], env)
        cold, cold_out = timed(["-m", "bomf.fuse.warmup"], env)
        warm, warm_out = timed(["-m", "bomf.fuse.warmup"], env)
    print(f"{'step':<12}{'process wall s':>16}")
    print(f"{'import':<12}{imported:>16.1f}")
    print(f"{'cold build':<12}{cold:>16.1f}   {cold_out}")
    print(f"{'warm load':<12}{warm:>16.1f}   {warm_out}")
    print(f"first-use compile = cold - import = {cold - imported:.1f} s; cached load adds {warm - imported:+.1f} s")


if __name__ == "__main__":
    main()
