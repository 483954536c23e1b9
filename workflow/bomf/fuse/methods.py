"""The fusion methods by name and the settings each reads, cheap to import (no torch): the config check and
the Snakefile's job settings read them when the workflow is parsed, as ``tasks/kinds.py`` declares the task
kinds. Each method's implementation is registered under its name in ``fusion`` (``fusion.register`` accepts
only a name declared here, and a test checks that every name has one).

A bare setting name is a fusion.* setting, a dotted one ("optim.max_device_batch") that setting of another
section. A fuse job gets exactly these (``setting_keys``), so editing one reruns only the methods that read it;
its FusionContext.config holds them under the declared names (``method_settings``).
"""

BO_SETTINGS = ("acquisition", "initial_points", "evaluations", "selection", "mc_samples", "restarts", "raw_samples")
# Each task-vector merge's grid: its hyperparameter -> the fusion.* setting listing the values tried.
MERGE_GRIDS = {"task_arithmetic": {"scale": "merge_scales"},
               "ties": {"density": "ties_densities", "scale": "merge_scales"},
               "dare": {"drop_rate": "dare_drop_rates", "scale": "merge_scales"}}
SETTINGS: dict[str, tuple[str, ...]] = {
    "swa": (),
    "best_member": (),
    "ema": (),
    "otfusion": ("otfusion_reference",),
    "last_member": (),
    "greedy_soup": (),
    "learned_soup": ("learned_soup_epochs", "learned_soup_lr", "optim.max_device_batch"),
    "twa": ("twa_epochs", "twa_lr", "twa_batch_size", "optim.max_device_batch"),
    "bomf": BO_SETTINGS,
    "bo_metric": BO_SETTINGS,
    "bo_loss": BO_SETTINGS,
    **{merge: tuple(grid.values()) for merge, grid in MERGE_GRIDS.items()},
}
# The methods that fit on the training split (its fuse job also reads train.jsonl); every other reads only val.
TRAINING_SPLIT_METHODS = frozenset({"twa"})


def setting_keys(method: str) -> tuple[str, ...]:
    """The config keys the settings ``method`` declares are read from (``bomf.config.job_settings``'s
    ``section.name``); none for a method that is not declared here (an outer-loop baseline)."""
    return tuple(p if "." in p else f"fusion.{p}" for p in SETTINGS.get(method, ()))


def method_settings(config: dict, method: str) -> dict:
    """``method``'s FusionContext.config: each setting it declares, read from ``config``."""
    settings = {}
    for declared, key in zip(SETTINGS[method], setting_keys(method)):
        section, _, name = key.partition(".")
        settings[declared] = config[section][name]
    return settings
