"""Disk a finished run uses, by what holds it (nothing is rerun): the members, fused-model weights stored per
method, the exported models, and everything else (records, data splits, tables, figures, logs).

    .venv/bin/python benchmarks/run_disk.py OUTPUT_DIR [OUTPUT_DIR ...]

Each OUTPUT_DIR is a pipeline's output_dir; every run under it (<task>/<model>/seed<seed>/) gets a row, and
the models it exported (export/<task>/<model>/seed<seed>/) are counted with it. Run it on two output
directories of the same config made by two commits to compare them side by side.
"""

import argparse
from pathlib import Path

MiB = 2 ** 20


def size(paths) -> int:
    return sum(path.stat().st_size for path in paths if path.is_file())


def run_rows(output_dir: Path) -> list[dict]:
    rows = []
    for members in sorted(output_dir.glob("*/*/seed*/members")):
        run = members.parent
        relative = run.relative_to(output_dir)
        fused = [p for p in (run / "fusion").rglob("*") if p.suffix in (".safetensors", ".bin")]
        everything = [p for p in run.rglob("*")]
        exported = list((output_dir / "export" / relative).rglob("*"))
        rows.append({"output_dir": str(output_dir), "run": str(relative),
                     "methods": len([d for d in (run / "fusion").iterdir() if d.is_dir()]),
                     "members": size(members.rglob("*")) / MiB,
                     "fused weights stored": size(fused) / MiB,
                     "exported": size(exported) / MiB,
                     "other": (size(everything) - size(members.rglob("*")) - size(fused)) / MiB,
                     "total": (size(everything) + size(exported)) / MiB})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dirs", nargs="+", type=Path)
    args = parser.parse_args()
    rows = [row for directory in args.output_dirs for row in run_rows(directory)]
    header = list(rows[0]) if rows else []
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(f"{value:.1f}" if isinstance(value, float) else str(value) for value in row.values()))


if __name__ == "__main__":
    main()
