"""What every Snakemake call (and every cluster job, which parses the Snakefile again on its node) pays for the
workflow: `snakemake -n all` on the default config against an empty Snakefile, beside Python's start-up and
torch's import, medians of a few runs measured side by side.

    .venv/bin/python benchmarks/parse.py [--repeats 5]

Run from the repository root on an otherwise idle machine. Snakemake's own start-up (the SLURM executor plugin
among its plugins) is in both Snakemake figures; the difference is the workflow's own cost.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def median_seconds(command: list[str], cwd: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise RuntimeError(f"{command} failed:\n{result.stderr[-3000:]}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    snakemake = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet", "rules"]
    with tempfile.TemporaryDirectory() as scratch:
        empty = Path(scratch) / "Snakefile"
        empty.write_text("rule all:\n")
        rows = {
            "python -c pass": median_seconds([sys.executable, "-c", "pass"], REPO, args.repeats),
            "python -c 'import torch'": median_seconds([sys.executable, "-c", "import torch"], REPO, args.repeats),
            "snakemake -n, an empty Snakefile": median_seconds([*snakemake, "--snakefile", str(empty), "all"],
                                                               Path(scratch), args.repeats),
            "snakemake -n all, config.yaml": median_seconds([*snakemake, "all"], REPO, args.repeats),
        }
    width = max(map(len, rows))
    for name, seconds in rows.items():
        print(f"{name:<{width}}  {seconds:6.2f} s")
    own = rows["snakemake -n all, config.yaml"] - rows["snakemake -n, an empty Snakefile"]
    print(f"{'the workflow itself (difference)':<{width}}  {own:6.2f} s")


if __name__ == "__main__":
    main()
