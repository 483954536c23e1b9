"""Baselines that are not chosen among the stage-2 members' fusions: the grid fine-tune (whose grid, run
again with lower layers frozen, is also the paper's hyperparameter-alignment study), HPBO-full's fine-tune,
and the oracle best subset.

``train_keeping_best`` is the one recipe behind the grid and HPBO-full: a fine-tune whose best validation
checkpoint is kept, scored on the same member schedule as stage 2 so that the uniform average of its
second-half checkpoints (SWA of the trajectory) can be compared with its best checkpoint (the paper's
Figure 3).
"""

import itertools
import math
import time
from pathlib import Path

import pandas as pd
import torch

from ..metrics import ranking_key
from ..records import BestCheckpointRun
from ..runtime import seed_everything
from ..settings import OptimConfig, hyperparameters, member_steps
from ..tasks.kinds import kind_of
from ..tasks.models import freeze_lower_layers, load_member_state, member_state
from ..train.resume import ResumeDirectory, Saved, checkpointed, training_identity
from ..train.training import fine_tune
from .fusion import FusionObjective, uniform


def grid_points(grid: dict) -> list[dict]:
    """Every (learning rate, batch size) of the grid, in a fixed order (index = position in this list)."""
    return [{"learning_rate": float(lr), "batch_size": int(bs)}
            for lr, bs in itertools.product(grid["learning_rates"], grid["batch_sizes"])]


def train_keeping_best(model_spec: dict, task, data: dict, params: dict, optim_config: dict, finetune_config: dict,
                       frozen_layers: int, seed: int, device, precision: str = "fp32",
                       staging_dir: str | Path | None = None,
                       checkpoint_seconds: float | None = None) -> tuple[BestCheckpointRun, dict[str, torch.Tensor]]:
    """Fine-tune with ``params`` (lowest ``frozen_layers`` layers frozen), scoring the validation split at the
    end of every epoch and at stage 2's member steps. Returns the run's record (trajectory, best checkpoint's
    scores, scores of the uniform average of the member-step checkpoints) and the best checkpoint's state.
    Given a ``staging_dir``, the run resumes from the state there (which keeps the best checkpoint and the
    running sum of the member-step checkpoints) and writes one every ``checkpoint_seconds`` and on SLURM's
    signal (``train.resume``)."""
    hp = hyperparameters(optim_config, params)
    optim = OptimConfig.from_config(optim_config)
    epochs = finetune_config["epochs"]
    steps_per_epoch = math.ceil(len(data["train"]) / hp.batch_size)
    members = member_steps(steps_per_epoch * epochs, finetune_config["members"], finetune_config["start_fraction"])
    eval_steps = sorted({*members, *(steps_per_epoch * (e + 1) for e in range(epochs))})
    primary = task.primary_metric
    identity = training_identity(model_spec, data, seed, device, precision, hyperparameters=vars(hp),
                                 optim=optim_config, eval_steps=eval_steps, frozen_layers=frozen_layers)
    resume = ResumeDirectory(staging_dir, identity) if staging_dir is not None else None
    saved = resume.saved if resume is not None else None
    # What the run keeps besides its training state: the best checkpoint, the member-step checkpoints' sum.
    best = {"scores": None, "step": None, "state": None}
    average = {"sum": None, "count": 0}
    if saved is not None:
        print(f"resumed from step {saved.state.step}", flush=True)
        kept = saved.kept
        best.update(scores=saved.notes["best_scores"], step=saved.notes["best_step"],
                    state={k[len("best."):]: v for k, v in kept.items() if k.startswith("best.")} or None)
        average.update(sum={k[len("sum."):]: v for k, v in kept.items() if k.startswith("sum.")} or None,
                       count=saved.notes["count"])

    def keep(index, step, model, row):
        scores = {key[len("val_"):]: value for key, value in row.items() if key.startswith("val_")}
        state = member_state(model)  # one CPU copy, shared by the best checkpoint and the running sum
        if best["scores"] is None or ranking_key(scores, primary) > ranking_key(best["scores"], primary):
            best.update(scores=scores, step=step, state=state)
        if step in members:
            if average["sum"] is None:
                average["sum"] = {k: v.to(torch.float64, copy=True) for k, v in state.items() if v.is_floating_point()}
            else:
                for name, total in average["sum"].items():
                    total += state[name].double()
            average["count"] += 1

    def save_state(state):
        kept = {**{f"best.{k}": v for k, v in (best["state"] or {}).items()},
                **{f"sum.{k}": v for k, v in (average["sum"] or {}).items()}}
        notes = {"best_scores": best["scores"], "best_step": best["step"], "count": average["count"]}
        resume.write(Saved(state, kept=kept, notes=notes))

    seed_everything(seed)
    model = kind_of(task).load_model(model_spec, task, device, precision=precision)
    freeze_lower_layers(model, frozen_layers, embeddings=model_spec["proxy_frozen_embeddings"])
    started = time.perf_counter() - (saved.state.elapsed if saved is not None else 0.0)
    with checkpointed(resume, checkpoint_seconds, save_state) as resumable:
        trajectory = fine_tune(model, data["train"], data["val"], task, hp, optim, epochs, seed, device,
                               eval_steps=eval_steps, on_eval=keep, progress=f"frozen {frozen_layers}",
                               precision=precision, state_at_evaluations=False, **resumable)
    seconds = time.perf_counter() - started
    if best["state"] is None:
        raise RuntimeError(f"training with {params} diverged (non-finite loss) before its first evaluation")
    swa_scores = _average_scores(model, average, task, data["val"], optim.eval_batch_size, device)
    record = BestCheckpointRun(params, frozen_layers, epochs, primary, best_step=best["step"], best=best["scores"],
                               swa=swa_scores, seconds=round(seconds, 3), trajectory=trajectory)
    if resume is not None:
        resume.remove()
    return record, best["state"]


def _average_scores(model, average: dict, task, val, batch_size: int, device) -> dict[str, float]:
    """Validation scores of the uniform average of the member-step checkpoints (NaN if training diverged
    before all of them)."""
    if average["count"] == 0:
        return {"loss": math.nan, **{m: math.nan for m in task.metrics}}
    state = member_state(model)
    for name, total in average["sum"].items():
        state[name] = (total / average["count"]).to(state[name].dtype)
    load_member_state(model, state)
    return val.evaluate(model, list(task.metrics), batch_size, device)[0]


def best_run(records: list[BestCheckpointRun]) -> int:
    """Index of the run whose best checkpoint ranks first on validation (ties: the earliest)."""
    ranked = [i for i, r in enumerate(records) if math.isfinite(r.best[r.metric])]
    if not ranked:
        raise ValueError("every grid fine-tune diverged: lower the grid's learning rates")
    return max(ranked, key=lambda i: (ranking_key(records[i].best, records[i].metric), -i))


def candidate_subsets(count: int, max_subsets: int) -> tuple[list[list[int]], str]:
    """Every non-empty subset of the members when there are at most ``max_subsets`` of them; otherwise every
    run of consecutive members (N(N+1)/2 subsets: checkpoints next to each other on the trajectory)."""
    if 2 ** count - 1 <= max_subsets:
        subsets = [list(s) for size in range(1, count + 1) for s in itertools.combinations(range(count), size)]
        return subsets, "every subset"
    return [list(range(i, j)) for i in range(count) for j in range(i + 1, count + 1)], "consecutive members"


def oracle_subset(test_objective: FusionObjective, max_subsets: int) -> tuple[torch.Tensor, pd.DataFrame, str]:
    """The uniform average of the member subset with the best TEST score: an upper reference that no
    honest method can reach (it selects on the split it is reported on)."""
    count, primary = len(test_objective.stack), test_objective.task.primary_metric
    subsets, search = candidate_subsets(count, max_subsets)
    rows = [{"members": " ".join(map(str, s)), **test_objective(uniform(s, count))} for s in subsets]
    frame = pd.DataFrame(rows)
    chosen = max(range(len(rows)), key=lambda i: (ranking_key(rows[i], primary), -i))
    frame["chosen"] = frame.index == chosen
    return uniform(subsets[chosen], count), frame, search
