"""Installed (through PYTHONPATH) into every Python process of an end-to-end run: an audit hook that fails any
job other than test evaluation and the oracle baseline that opens a test split. Every open of a test split is
logged, allowed or denied, so a run also shows the hook was in place.

Jobs are told apart by their script (Snakemake runs ``.snakemake/scripts/tmp<id>.<script>.py``). The data job
writes the split; nothing else may even open it for reading.
"""

import os
import sys

_LOG = os.environ.get("BOMF_AUDIT_LOG")
_ALLOWED = {"evaluate.py": "r", "oracle_subset.py": "r", "prepare_data.py": "w"}


def _script() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name.rsplit(".", 2)[-2] + ".py" if name.count(".") >= 2 else name


def _hook(event, args):
    if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.fsdecode(args[0])
    if not path.endswith("test.jsonl"):
        return
    mode = args[1] or "r"
    script = _script()
    writes = any(flag in mode for flag in "wax+")
    allowed = _ALLOWED.get(script)
    verdict = "allowed" if allowed == "w" or (allowed == "r" and not writes) else "DENIED"
    with open(_LOG, "a") as log:  # not test.jsonl: no recursion
        log.write(f"{verdict}\t{script or repr(sys.argv)}\t{mode}\t{path}\n")
    if verdict == "DENIED":
        raise PermissionError(f"audit: {script} may not open the test split {path}")


if _LOG:
    sys.addaudithook(_hook)
