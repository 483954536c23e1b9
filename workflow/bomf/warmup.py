"""Build BoTorch's fused qLogNEHVI C++ kernel ahead of time: ``python -m bomf.warmup``.

BoTorch 0.18.1 compiles ``botorch/csrc/logei_fused.cpp`` with ``torch.utils.cpp_extension.load`` (``-O3
-march=native``, through ninja) the first time a qLogEHVI/qLogNEHVI acquisition is built in a process
(``botorch.acquisition.multi_objective.logei._try_load_fused_kernel``). The build is cached under
``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions/py311_cpu/logei_fused_ext``). The compile
takes 31-55 s on 2 cores (benchmarks/first_use_compile.py); later processes only load the shared library
(~0.2 s). Without a compiler or ninja BoTorch warns and falls back to the pure-Python path (by its warning,
~3x slower). Run this once per machine (the Makefile's install step does) so
no BO job pays the compile inside its timings. Exit status 1 if the kernel could not be built.
"""

import sys
import time
import warnings


def build_fused_kernel() -> tuple[bool, float, str]:
    """Load (compiling if needed) the kernel; (available, seconds, build directory)."""
    from torch.utils.cpp_extension import _get_build_directory

    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from botorch.acquisition.multi_objective import logei

        logei._try_load_fused_kernel()
    seconds = time.perf_counter() - started
    for warning in caught:  # only the kernel's own (the imports warn about torch.jit.script too)
        if "fused" in str(warning.message):
            print(f"warning: {warning.message}", file=sys.stderr)
    return logei._C is not None, seconds, _get_build_directory("logei_fused_ext", False)


def main() -> int:
    available, seconds, directory = build_fused_kernel()
    state = "ready" if available else "NOT available (pure-Python fallback)"
    print(f"botorch fused qLogNEHVI kernel {state}: {seconds:.1f} s (import + build/load), cache {directory}")
    return 0 if available else 1


if __name__ == "__main__":
    sys.exit(main())
