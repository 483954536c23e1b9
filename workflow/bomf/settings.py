"""Typed records of the config sections training reads, and where members are taken: pure Python, so the
config check (run when the Snakefile is parsed) uses the same arithmetic as training without importing torch.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Hyperparameters:
    learning_rate: float
    batch_size: int
    warmup_ratio: float
    weight_decay: float


@dataclass(frozen=True)
class OptimConfig:
    schedule: str
    adam_eps: float
    adam_betas: tuple[float, float]
    max_device_batch: int
    eval_batch_size: int

    @classmethod
    def from_config(cls, optim: dict) -> "OptimConfig":
        return cls(optim["schedule"], optim["adam_eps"], tuple(optim["adam_betas"]),
                   optim["max_device_batch"], optim["eval_batch_size"])


def hyperparameters(optim: dict, searched: dict) -> Hyperparameters:
    """Searched values override the config's defaults (warmup ratio and weight decay are optional in the space)."""
    return Hyperparameters(
        learning_rate=float(searched["learning_rate"]),
        batch_size=int(searched["batch_size"]),
        warmup_ratio=float(searched.get("warmup_ratio", optim["warmup_ratio"])),
        weight_decay=float(searched.get("weight_decay", optim["weight_decay"])),
    )


def member_steps(total_steps: int, count: int, start_fraction: float) -> list[int]:
    """``count`` optimizer steps evenly spaced over the steps after ``start_fraction`` of training; the last
    is the final step (integer arithmetic, so rounding never pushes a member past the end)."""
    first = math.floor(start_fraction * total_steps)
    window = total_steps - first
    if window < count:
        raise ValueError(
            f"{count} members need {count} distinct steps after {start_fraction:.0%} of training, "
            f"but training has only {total_steps} steps: lower finetune.members or train longer"
        )
    return [first + -(-(k + 1) * window // count) for k in range(count)]


# Baselines that wrap whole fine-tunes around stage 2 (method_seeds can restrict them to some seeds).
OUTER_LOOP_BASELINES = ("grid_finetune", "hpbo_full")
# What imported members (a user's own checkpoints) cannot give: the average stage 2 keeps, and fine-tunes.
NEEDS_STAGE_2 = ("ema", *OUTER_LOOP_BASELINES)


def config_runs(config: dict) -> list[dict]:
    """Every run as the wildcards of its directory: each (task, model, seed) of tasks x models x seeds, then
    each imported run (its name in the place of the model)."""
    trained = [{"task": t, "model": m, "seed": s} for t in config["tasks"] for m in config["models"]
               for s in config["seeds"]]
    return trained + [{"task": entry["task"], "model": name, "seed": entry["seed"]}
                      for name, entry in config["imported_runs"].items()]


def catalog_name(config: dict, model: str) -> str:
    """The model_catalog entry a run's model stands for: itself, or an imported run's base."""
    imported = config.get("imported_runs", {}).get(model)
    return imported["base"] if imported else model


def run_methods(config: dict, run) -> list[str]:
    """The methods one run (a mapping with its model and seed) evaluates: each gets a fusion/<method>/
    directory, a test evaluation and a row in the tables."""
    method_seeds = config["method_seeds"]
    methods = [m for m in (*config["fusion"]["methods"], *config["baselines"]["methods"])
               if m not in method_seeds or int(run["seed"]) in method_seeds[m]]
    if run["model"] in config["imported_runs"]:
        return [m for m in methods if m not in NEEDS_STAGE_2]
    return methods


def has_selection_study(config: dict, run) -> bool:
    """Whether one run's BOMF search gets the selection-rule study (tables.selection_study: its seeds)."""
    return int(run["seed"]) in config["tables"]["selection_study"] and "bomf" in run_methods(config, run)


def canonical(value):
    """``value`` with every mapping's keys sorted: Snakemake compares params as text, so the order keys were
    written in a config file must not count as a change."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value
