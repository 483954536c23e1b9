"""Installed (through PYTHONPATH) into every Python process of an end-to-end run: an audit hook that fails any
job other than test evaluation and the oracle baseline that opens a test split. Every open of a test split is
logged, allowed or denied, so a run also shows the hook was in place.

Jobs are told apart by their script (Snakemake runs ``.snakemake/scripts/tmp<id>.<script>.py``); other
processes (Snakemake itself) are not jobs. The data job writes the split; no other job may even read it.
"""

import os
import sys

_LOG = os.environ.get("BOMF_AUDIT_LOG")
_ALLOWED = {"evaluate_test.py": "r", "selection_study.py": "r", "oracle_subset.py": "r", "prepare_data.py": "w"}


def _script() -> str | None:
    """The job's script name (evaluate_test.py, ...); None for a process that is not a job (Snakemake itself reads
    the split's bytes for its metadata)."""
    path = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.basename(path)
    if f"{os.sep}.snakemake{os.sep}scripts{os.sep}" not in os.path.abspath(path) or name.count(".") < 2:
        return None
    return name.rsplit(".", 2)[-2] + ".py"


def _hook(event, args):
    if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.fsdecode(args[0])
    if not path.endswith("test.jsonl"):
        return
    script = _script()
    if script is None:
        return
    mode = args[1] or "r"
    writes = any(flag in mode for flag in "wax+")
    allowed = _ALLOWED.get(script)
    verdict = "allowed" if allowed == "w" or (allowed == "r" and not writes) else "DENIED"
    with open(_LOG, "a") as log:  # not test.jsonl: no recursion
        log.write(f"{verdict}\t{script}\t{mode}\t{path}\n")
    if verdict == "DENIED":
        raise PermissionError(f"audit: {script} may not open the test split {path}")


if _LOG:
    sys.addaudithook(_hook)
