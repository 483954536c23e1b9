"""Where a finished run's time went, from the files the pipeline wrote (nothing is rerun):

- fusion wall split: per fused-model evaluation of each BO method, the BO proposal (GP fit + acquisition),
  the mixing Σwᵢθᵢ into the evaluation model and the validation pass (history.csv records proposal and
  evaluation seconds; the mixing time is measured here on the run's own members, on this machine);
- total cost ratio: the whole BOMF run (stage 1 + stage 2 + stage 3's bomf job) against one plain fine-tune
  (the stage-2 fine-tune itself, and the mean full-model grid fine-tune), from the Snakemake benchmark files.

    .venv/bin/python benchmarks/run_costs.py --workdir DIR --configfile DIR/config.yaml
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from bomf.config import validate_config  # noqa: E402
from bomf.report.costs import read_benchmarks  # noqa: E402

BO_METHODS = ("bomf", "bo_metric", "bo_loss")


def mixing_seconds(workdir: Path, run: str, config: dict, model: str, task: str, repeats: int = 20) -> float:
    """Median seconds of one Σwᵢθᵢ written into the evaluation model, on the run's members."""
    import torch

    from bomf.fuse.fusion import MemberStack
    from bomf.pipeline import Run
    from bomf.train import members

    torch.set_num_threads(1)  # as the fusion jobs run (threads: 1)
    stack = MemberStack(members.load_members(workdir / run / "members"), torch.device("cpu"))
    model_object = Run(config, task, model, 0).load_model()
    weights = torch.full((len(stack),), 1.0 / len(stack), dtype=torch.float64)
    stack.load_into(model_object, weights)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        stack.load_into(model_object, weights)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO)
    parser.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    config = yaml.safe_load(args.configfile.read_text())
    validate_config(config)
    benchmarks = read_benchmarks(workdir / "results/benchmarks")

    print("Fusion wall split per fused-model evaluation (median seconds; BO rows only):")
    print(f"{'run':<28} {'method':<10} {'evals':>5} {'BO':>7} {'mixing':>7} {'eval':>7} {'job wall':>9}")
    for task in config["tasks"]:
        for model in config["models"]:
            mix = None
            for seed in config["seeds"]:
                run = f"results/{task}/{model}/seed{seed}"
                for method in BO_METHODS:
                    history_file = workdir / run / "fusion" / method / "history.csv"
                    if not history_file.is_file():
                        continue
                    if mix is None:
                        mix = mixing_seconds(workdir, run, config, model, task)
                    history = pd.read_csv(history_file)
                    searched = history[history["source"] != "member"]
                    bo = searched.loc[searched["source"] == "bo", "bo_seconds"]
                    job = benchmarks[(benchmarks["task"] == task) & (benchmarks["model"] == model)
                                     & (benchmarks["seed"] == seed) & (benchmarks["stage"] == "fusion")
                                     & (benchmarks["method"] == method)]["wall_s"]
                    evaluation = searched["eval_seconds"].median()
                    print(f"{task}/{model}/seed{seed:<14} {method:<10} {len(searched):5d} {bo.median():7.2f} "
                          f"{mix:7.3f} {evaluation - mix:7.2f} {job.sum():9.1f}")

    print()
    print("Total cost: BOMF (stage 1 + 2 + bomf fusion) against one plain fine-tune (job wall seconds):")
    print(f"{'run':<28} {'stage 1':>8} {'stage 2':>8} {'bomf':>7} {'total':>8} {'÷ stage 2':>10} {'÷ grid ft':>10}")
    for (task, model, seed), jobs in benchmarks.dropna(subset=["seed"]).groupby(["task", "model", "seed"]):
        stage1 = jobs.loc[jobs["stage"] == "hpo", "wall_s"].sum()
        stage2 = jobs.loc[jobs["stage"] == "finetune", "wall_s"].sum()
        bomf = jobs.loc[(jobs["stage"] == "fusion") & (jobs["method"] == "bomf"), "wall_s"].sum()
        grid = jobs[(jobs["stage"] == "grid") & jobs["path"].str.contains("/frozen0/")]["wall_s"]
        total = stage1 + stage2 + bomf
        per_grid = f"{total / grid.mean():10.2f}" if len(grid) else f"{'-':>10}"
        print(f"{task}/{model}/seed{seed:<14} {stage1:8.1f} {stage2:8.1f} {bomf:7.1f} {total:8.1f} "
              f"{total / stage2:10.2f} {per_grid}")


if __name__ == "__main__":
    main()
