"""Copy a finished pipeline's small outputs — the records a result is read from — to a directory that is
committed, leaving every weight, tokenizer and data split behind.

    python -m bomf.report.publish <output_dir of a run> <committed directory> [--run <task>/<model>/seed<seed> ...]

``--run`` keeps to the named runs (their records, benchmark files, figures, exported cards, their tasks' data
split records) and commands.log: a run finished while others still run in the same output directory.

What is kept (tables, figures, per-run CSV/JSON records, Snakemake benchmark files, commands.log, the exported
models' cards) is enough
to rebuild every table and figure without recomputing a run (see configs/cpu_glue.yaml's header).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..layout import BENCHMARK_DIR, EXPORT_DIRECTORY

SUFFIXES = (".csv", ".json", ".tsv", ".png", ".md", ".tex", ".log")
# The rules that read only such records: with Snakemake limited to them, the tables and figures are rebuilt
# from a committed directory (snakemake all --allowed-rules ... --forcerun ...). Not summarise_run: each run's
# summary.csv and provenance.json stay as the run wrote them, naming the commit that made it.
REBUILD_RULES = ("paper_tables", "plot_landscape", "plot_pareto", "plot_grid", "paper_figures", "all")
# Tokenizers and model configs live in these directories (weights are .safetensors, data splits .jsonl,
# both left behind by suffix); members/ keeps its trajectory.csv and members.json.
SKIPPED_DIRECTORIES = {"members.resume", "model", "adapter", "models"}
COMMANDS_LOG = "commands.log"  # each line: time, commit, command (bomf.report.provenance.log_command)


def _kept(relative: Path) -> bool:
    if relative.parts[0] == EXPORT_DIRECTORY:
        return relative.name == "README.md"  # an exported model's card, not the model
    return relative.suffix in SUFFIXES and not SKIPPED_DIRECTORIES & set(relative.parts[:-1])


def _of_runs(relative: Path, runs: list[str]) -> bool:
    """A file of one of ``runs`` (each "<task>/<model>/seed<seed>"), of their tasks' data, or commands.log."""
    path = relative.as_posix()
    prefixes = [f"{top}{run}/" for run in runs for top in ("", f"{BENCHMARK_DIR}/", f"{EXPORT_DIRECTORY}/",
                                                            "figures/")]
    prefixes += [f"{top}data/{run.split('/')[0]}{end}" for run in runs
                 for top, end in (("", "/"), (f"{BENCHMARK_DIR}/", ".tsv"))]
    return path == COMMANDS_LOG or path.startswith(tuple(prefixes))


def small_outputs(root: str | Path, runs: list[str] | None = None) -> list[Path]:
    """The files under ``root`` worth committing (of ``runs`` only, if given), relative to it, sorted."""
    root = Path(root)
    kept = (path.relative_to(root) for path in root.rglob("*") if path.is_file() and _kept(path.relative_to(root)))
    return sorted(relative for relative in kept if runs is None or _of_runs(relative, runs))


def publish(source: str | Path, destination: str | Path, runs: list[str] | None = None) -> list[Path]:
    """Copy ``small_outputs(source, runs)`` to ``destination`` (same relative paths, timestamps kept). A
    commands.log already there is merged with the source's, line by line in time order: runs made in separate
    checkouts each keep their commands."""
    copied = small_outputs(source, runs)
    for relative in copied:
        target = Path(destination) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative.name == COMMANDS_LOG and target.is_file():
            lines = {*target.read_text(encoding="utf-8").splitlines(),
                     *(Path(source) / relative).read_text(encoding="utf-8").splitlines()}
            target.write_text("".join(f"{line}\n" for line in sorted(lines)), encoding="utf-8")
            continue
        shutil.copy2(Path(source) / relative, target)
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a pipeline's output_dir")
    parser.add_argument("destination", type=Path, help="where the small outputs go (same layout)")
    parser.add_argument("--run", action="append", dest="runs", metavar="TASK/MODEL/seedN",
                        help="only this finished run (repeatable); commands.log always")
    args = parser.parse_args()
    copied = publish(args.source, args.destination, args.runs)
    size = sum((args.destination / path).stat().st_size for path in copied)
    print(f"{len(copied)} files, {size / 2**20:.1f} MiB -> {args.destination}")
    rules = " ".join(REBUILD_RULES)
    print(f"rebuild its tables and figures: snakemake all --configfile <config> --allowed-rules {rules} "
          f"--forcerun {rules}")


if __name__ == "__main__":
    main()
