"""Stage 1's proxy against the full model: trial time, and whether the proxy ranks hyperparameters the same.

At each hyperparameter point (learning rates log-spaced over [--lr-low, --lr-high] × batch sizes) a
stage-1 trial (``bomf.train.hpo.run_trial``: seeded model, ``fine_tune``, validation every epoch, score = best
validation accuracy) is run twice on the real all-MiniLM-L6-v2 and SST-2: with the proxy (config.yaml's
minilm entry: lowest ``proxy_frozen_layers`` = 3 of 6 layers frozen; embeddings, upper layers and head
train) and with the full model; the optim section is config.yaml's too. Proxy and full trials alternate,
so a slow spell of a shared machine hits both. Reported: each point's trial seconds and scores, the time
ratio, and Spearman's ρ between proxy and full-model scores over the points (the paper's claim: the proxy's
best learning rate is the full model's).

Run (≈8 min on 2 cores with the defaults: 12 trials of 300 examples × 2 epochs, 200 validation):

    .venv/bin/python benchmarks/proxy.py --train 300 --val 200 --epochs 2 --learning-rates 3 \
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


def rho(a: list[float], b: list[float]) -> str:
    if len(set(a)) < 2 or len(set(b)) < 2:
        return "undefined (constant scores)"
    value, p = spearmanr(a, b)
    return f"{value:+.2f} (p={p:.2f}, n={len(a)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=300, help="SST-2 training examples (seeded subsample)")
    parser.add_argument("--val", type=int, default=200, help="validation examples carved out of SST-2 train")
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
    model_spec, optim = config["model_catalog"]["minilm"], config["optim"]
    task = GLUE_TASKS["sst2"]
    examples = read_glue_tsv(task, args.glue_dir / "SST-2" / "train.tsv")
    splits = make_splits(examples, examples[:1], {"split_seed": 0, "val_size": args.val, "max_train": args.train,
                                                  "max_test": 1})
    tokenizer = load_tokenizer(model_spec["source"])
    data = {name: SequenceData(splits[name], tokenizer, model_spec["max_length"], task) for name in ("train", "val")}
    rates = np.geomspace(args.lr_low, args.lr_high, args.learning_rates).tolist()
    points = [{"learning_rate": lr, "batch_size": bs} for bs in args.batch_sizes for lr in rates]
    majority = max(np.mean(data["val"].labels.numpy()), 1 - np.mean(data["val"].labels.numpy()))

    print(f"MiniLM-L6 SST-2: {len(data['train'])} train / {len(data['val'])} val (majority class {majority:.3f}), "
          f"{args.epochs} epoch(s), proxy = lowest {model_spec['proxy_frozen_layers']} layers frozen, "
          f"{torch.get_num_threads()} torch thread(s)", flush=True)
    print(f"{'lr':>8} {'bs':>3} | {'proxy s':>8} {'full s':>7} {'ratio':>6} | {'proxy acc':>9} {'full acc':>8} | "
          f"{'proxy loss':>10} {'full loss':>9}", flush=True)
    rows, started = [], time.perf_counter()
    for point in points:
        record = {}
        for proxy in (True, False):
            trial = run_trial(model_spec, task, data, point, optim, proxy, args.epochs, args.seed, CPU)
            losses = [r["val_loss"] for r in trial.trajectory if math.isfinite(r["val_loss"])]
            record[proxy] = {"seconds": trial.seconds, "score": trial.score,
                             "loss": min(losses) if losses else math.nan, "fraction": trial.trainable_fraction}
        rows.append((point, record))
        p, f = record[True], record[False]
        print(f"{point['learning_rate']:>8.1e} {point['batch_size']:>3} | {p['seconds']:>8.1f} {f['seconds']:>7.1f} "
              f"{p['seconds'] / f['seconds']:>6.2f} | {p['score']:>9.3f} {f['score']:>8.3f} | "
              f"{p['loss']:>10.3f} {f['loss']:>9.3f}", flush=True)

    proxy_seconds = sum(r[True]["seconds"] for _, r in rows)
    full_seconds = sum(r[False]["seconds"] for _, r in rows)
    proxy_scores, full_scores = [r[True]["score"] for _, r in rows], [r[False]["score"] for _, r in rows]
    proxy_losses, full_losses = [r[True]["loss"] for _, r in rows], [r[False]["loss"] for _, r in rows]

    def best(scores: list[float], losses: list[float]) -> dict:  # ties on accuracy go to the lower loss
        return points[max(range(len(points)), key=lambda i: (scores[i], -losses[i]))]

    print(f"trainable fraction: proxy {rows[0][1][True]['fraction']:.3f}, full {rows[0][1][False]['fraction']:.3f}")
    print(f"trial time proxy / full: {proxy_seconds / full_seconds:.2f} ({proxy_seconds:.0f} s vs {full_seconds:.0f} s "
          f"over {len(points)} points)")
    print(f"Spearman ρ proxy vs full, best val accuracy: {rho(proxy_scores, full_scores)}")
    print(f"Spearman ρ proxy vs full, best val loss:     {rho(proxy_losses, full_losses)}")
    bp, bf = best(proxy_scores, proxy_losses), best(full_scores, full_losses)
    print(f"best point: proxy lr {bp['learning_rate']:.1e} bs {bp['batch_size']}, "
          f"full lr {bf['learning_rate']:.1e} bs {bf['batch_size']}; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
