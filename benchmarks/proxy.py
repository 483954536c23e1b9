"""Stage 1's proxy against the full model: trial time, and whether the proxy ranks hyperparameters the same.

At each hyperparameter point (learning rates log-spaced over [--lr-low, --lr-high] × batch sizes) a
stage-1 trial (``bomf.train.hpo.run_trial``: seeded model, ``fine_tune``, validation every epoch, score = best
validation primary metric) is run three times on the real all-MiniLM-L6-v2 and a GLUE task (--task): the
paper's proxy (config.yaml's minilm entry: lowest ``proxy_frozen_layers`` = 3 of 6 layers frozen; embeddings,
upper layers and head train), the proxy with its embeddings frozen too (``proxy_frozen_embeddings: true``: the
backward pass stops at layer 4), and the full model; the optim section is config.yaml's too. The three
alternate at every point, so a slow spell of a shared machine hits all alike. Reported: each point's trial
seconds and scores, each proxy's time ratio to the full model, Spearman's ρ between its scores and the full
model's over the points, and the point each would choose (the paper's claim: the proxy's best is the full
model's).

Run (≈9 min a task on one core with the defaults: 18 trials of 300 examples × 2 epochs, 200 validation):

    .venv/bin/python benchmarks/proxy.py --task sst2 --train 300 --val 200 --epochs 2 --learning-rates 3 \
        --lr-low 2e-5 --lr-high 3e-4 --batch-sizes 16 32
"""

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy.stats import spearmanr

from bomf.tasks.data import make_splits
from bomf.tasks.models import load_tokenizer
from bomf.tasks.readers import read_glue_tsv
from bomf.tasks.registry import GLUE_TASKS
from bomf.tasks.sequence import SequenceData
from bomf.train.hpo import run_trial

REPO = Path(__file__).resolve().parents[1]
GLUE_DIR = REPO.parent / "shared" / "data" / "glue"
CPU = torch.device("cpu")
FOLDERS = {"sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE", "cola": "CoLA"}


def rho(a: list[float], b: list[float]) -> str:
    if len(set(a)) < 2 or len(set(b)) < 2:
        return "undefined (constant scores)"
    value, p = spearmanr(a, b)
    return f"{value:+.2f} (p={p:.2f}, n={len(a)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="sst2", choices=sorted(FOLDERS))
    parser.add_argument("--train", type=int, default=300, help="training examples (seeded subsample)")
    parser.add_argument("--val", type=int, default=200, help="validation examples carved out of the task's train")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rates", type=int, default=3, help="count, log-spaced over [lr-low, lr-high]")
    parser.add_argument("--lr-low", type=float, default=2e-5)
    parser.add_argument("--lr-high", type=float, default=3e-4)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared 2-core machine 2 threads thrash)")
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--glue-dir", type=Path, default=GLUE_DIR)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = yaml.safe_load(args.config.read_text())
    entry, optim = config["model_catalog"]["minilm"], config["optim"]
    sides = {"proxy": {**entry, "proxy_frozen_embeddings": False},
             "proxy, embeddings frozen": {**entry, "proxy_frozen_embeddings": True}, "full": entry}
    task = GLUE_TASKS[args.task]
    examples = read_glue_tsv(task, args.glue_dir / FOLDERS[args.task] / "train.tsv")
    splits = make_splits(examples, examples[:1], {"split_seed": 0, "val_size": args.val, "max_train": args.train,
                                                  "max_test": 1})
    tokenizer = load_tokenizer(entry["source"])
    data = {name: SequenceData(splits[name], tokenizer, entry["max_length"], task) for name in ("train", "val")}
    rates = np.geomspace(args.lr_low, args.lr_high, args.learning_rates).tolist()
    points = [{"learning_rate": lr, "batch_size": bs} for bs in args.batch_sizes for lr in rates]
    metric = task.primary_metric

    print(f"MiniLM-L6 {args.task}: {len(data['train'])} train / {len(data['val'])} val, {args.epochs} epoch(s), "
          f"proxy = lowest {entry['proxy_frozen_layers']} layers frozen, {torch.get_num_threads()} torch thread(s)",
          flush=True)
    print(f"{'lr':>8} {'bs':>3} | " + " | ".join(f"{name}: s, {metric}, loss" for name in sides), flush=True)
    results, started = {name: [] for name in sides}, time.perf_counter()
    for point in points:
        for name, spec in sides.items():
            trial = run_trial(spec, task, data, point, optim, name != "full", args.epochs, args.seed, CPU)
            losses = [r["val_loss"] for r in trial.trajectory if math.isfinite(r["val_loss"])]
            results[name].append({"seconds": trial.seconds, "score": trial.score,
                                  "loss": min(losses) if losses else math.nan, "fraction": trial.trainable_fraction})
        print(f"{point['learning_rate']:>8.1e} {point['batch_size']:>3} | " + " | ".join(
            f"{r[-1]['seconds']:6.1f} {r[-1]['score']:.3f} {r[-1]['loss']:.3f}" for r in results.values()), flush=True)

    def best(rows: list[dict]) -> dict:  # ties on the metric go to the lower loss
        return points[max(range(len(points)), key=lambda i: (rows[i]["score"], -rows[i]["loss"]))]

    full = results["full"]
    chosen = best(full)
    print(f"full model: {sum(r['seconds'] for r in full):.0f} s over {len(points)} points, best point lr "
          f"{chosen['learning_rate']:.1e} bs {chosen['batch_size']}")
    for name in ("proxy", "proxy, embeddings frozen"):
        rows = results[name]
        point = best(rows)
        print(f"{name}: trainable fraction {rows[0]['fraction']:.3f}; trial time / full "
              f"{sum(r['seconds'] for r in rows) / sum(r['seconds'] for r in full):.2f}; Spearman ρ vs full, "
              f"{metric}: {rho([r['score'] for r in rows], [r['score'] for r in full])}, loss: "
              f"{rho([r['loss'] for r in rows], [r['loss'] for r in full])}; best point lr "
              f"{point['learning_rate']:.1e} bs {point['batch_size']} ({'the same' if point == chosen else 'another'})")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
