"""Stage 3's fuse job at two commits on the same members: wall and CPU seconds, and the weights each chose.

Each checkout (a ``git worktree`` of a commit) runs one method's fuse job in its own subprocess, with its own
``bomf`` package first on ``PYTHONPATH`` (the venv's editable install points at this checkout) and its own
config check and job settings, on one run's data and members (made by the current code: regenerate them
with the pipeline first). Checkouts alternate ``--repeats`` times in ABBA order, so a slow spell of a shared
machine hits both alike. The fuse job's own output and journal go to a scratch directory.

    git worktree add --detach /tmp/c3dc10d c3dc10d      # the commit the committed results/cpu runs were made at
    .venv/bin/python benchmarks/stage3.py --run-dir RUN --data-dir DATA --configfile configs/cpu_glue.yaml \\
        --checkout /tmp/c3dc10d . --repeats 2

RUN is a run's directory (``<output_dir>/mrpc/minilm/seed0``: its ``members/``), DATA its task's split
directory (``<output_dir>/data/mrpc``).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# Run inside a checkout: its config check and job settings (the API of that commit: c3dc10d kept job_settings in
# bomf.settings and each method's fusion.* settings in bomf.fusion.PARAMETERS), then its fuse job, timed.
DRIVER = r"""
import json, resource, sys, time
from pathlib import Path
import torch
import yaml
from bomf import pipeline
torch.set_num_threads(1)  # the fuse rule's threads: 1, as bomf.runtime.job sets it
from bomf.config import validate_config
args = json.loads(sys.argv[1])
config = validate_config(yaml.safe_load(Path(args["configfile"]).read_text()), config_files=[args["configfile"]])
wildcards = {"task": args["task"], "model": args["model"], "seed": str(args["seed"]), "method": args["method"]}
try:
    from bomf.config import job_settings
    from bomf.device import COMPUTE_SETTINGS
    from bomf.fuse.methods import setting_keys
    keys = (*COMPUTE_SETTINGS, "optim.eval_batch_size", "fusion.device_memory", *setting_keys(args["method"]))
except ImportError:
    from bomf.fusion import PARAMETERS
    from bomf.settings import job_settings
    keys = ("optim.eval_batch_size", *(f"fusion.{p}" for p in PARAMETERS.get(args["method"], ())))
settings = job_settings(config, wildcards, keys)
started, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
pipeline.fuse(settings, args["task"], args["model"], args["seed"], Path(args["data_dir"]), Path(args["run_dir"]) / "members",
              args["method"], args["out_dir"], args["journal"])
used = resource.getrusage(resource.RUSAGE_SELF)
record = json.loads((Path(args["out_dir"]) / "weights.json").read_text())
print("RESULT " + json.dumps({"seconds": time.perf_counter() - started,
                              "cpu": used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime,
                              "weights": record["weights"], "validation": record["validation"]}), flush=True)
"""


def run_once(checkout: Path, args, scratch: Path) -> dict:
    out = scratch / f"{checkout.name}-{len(list(scratch.iterdir()))}"
    job = {"configfile": str(checkout.resolve() / args.configfile), "task": args.task, "model": args.model, "seed": args.seed,
           "method": args.method, "data_dir": str(args.data_dir.resolve()), "run_dir": str(args.run_dir.resolve()),
           "out_dir": str(out / "fusion"), "journal": str(out / "journal.jsonl")}
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve() / "workflow"), "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(job)], env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{checkout}: the fuse job failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--configfile", type=Path, required=True,
                        help="within each checkout (its own copy), read by its own config check")
    parser.add_argument("--checkout", type=Path, nargs=2, required=True, help="baseline first, then the new one")
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="bomf")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each checkout (ABBA order; median)")
    args = parser.parse_args()

    runs = {checkout: [] for checkout in args.checkout}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for checkout in (args.checkout if repeat % 2 == 0 else args.checkout[::-1]):
                runs[checkout].append(run_once(checkout, args, Path(scratch)))
                print(f"{checkout}: {runs[checkout][-1]['seconds']:.1f} s", file=sys.stderr, flush=True)

    base, new = args.checkout
    print(f"{args.method} fuse job, {args.run_dir}: {args.repeats} run(s) per checkout, ABBA order (median)")
    print(f"{'checkout':<40} {'wall s':>8} {'CPU s':>8}  validation of the chosen point")
    median = {}
    for checkout, rows in runs.items():
        median[checkout] = {k: statistics.median(r[k] for r in rows) for k in ("seconds", "cpu")}
        print(f"{str(checkout):<40} {median[checkout]['seconds']:>8.1f} {median[checkout]['cpu']:>8.1f}  "
              f"{rows[0]['validation']}")
    weights = {checkout: rows[0]["weights"] for checkout, rows in runs.items()}
    largest = max(abs(a - b) for a, b in zip(weights[base], weights[new]))
    print(f"new / baseline: wall {median[new]['seconds'] / median[base]['seconds']:.2f}×, "
          f"CPU {median[new]['cpu'] / median[base]['cpu']:.2f}×")
    print(f"chosen weights: largest difference {largest:.2e}\n  baseline {weights[base]}\n  new      {weights[new]}")


if __name__ == "__main__":
    main()
