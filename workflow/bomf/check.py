"""``python -m bomf.check CONFIG...``: check config files as ``snakemake --configfile CONFIG...`` would read them,
run from the same working directory, and print every problem, one line each naming the file and line or the
field; exit status 1 if there is one.

Snakemake reads each ``--configfile`` before any workflow code runs, and reports one it cannot read without
its line (a missing one with a traceback); this names them. The files are then merged in order over the
working directory's ``config.yaml`` (the Snakefile's ``configfile:``), as Snakemake merges them, and checked as
the workflow checks its config (``bomf.config.validate_config``).
"""

import sys
from pathlib import Path

from .config import ConfigError, config_file_problem, problem_list, validate_config

DEFAULT_CONFIG = "config.yaml"  # the Snakefile's configfile:, relative to the working directory


def check(paths: list[str]) -> str | None:
    """Every problem of the config that ``paths`` (merged in order over config.yaml) make, as one message;
    None for a valid config."""
    import yaml
    from snakemake.utils import update_config

    files = [*([DEFAULT_CONFIG] if Path(DEFAULT_CONFIG).is_file() and DEFAULT_CONFIG not in paths else []), *paths]
    problems = [problem for path in files if (problem := config_file_problem(path))]
    if problems:
        return problem_list(problems)
    config: dict = {}
    for path in files:
        update_config(config, yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    try:
        validate_config(config, config_files=files)
    except ConfigError as error:
        return str(error)
    return None


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__.strip().split("\n\n")[0], file=sys.stderr)
        return 2
    problem = check(argv)
    if problem:
        print(f"bomf: {problem}", file=sys.stderr)
        return 1
    print(f"bomf: {', '.join(argv)}: a valid configuration")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
