"""Fine-tuning, as one recipe that reads top to bottom, for every task kind (its split data supplies the
batches and scores the model: ``splits.SplitData``).

``fine_tune`` is used by stage 1 (a proxy trial: lower layers frozen, score = best validation metric over
epochs) and stage 2 (the full run that saves members), so both see exactly the same training code.
"""

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from tqdm.auto import tqdm

from ..device import gradient_scaler, training_autocast
from ..settings import Hyperparameters, OptimConfig
from ..tasks.models import load_member_state, member_names
from ..tasks.registry import TaskSpec
from ..tasks.splits import SplitData


def make_optimizer(model: nn.Module, hp: Hyperparameters, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and normalisation weights. Fused on every device: on the CPU too
    its one pass over the parameters takes ~20 ms a MiniLM step against ~135 ms for the multi-tensor one
    (benchmarks/README.md "Training throughput"); it is also ``transformers.Trainer``'s default."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=hp.learning_rate, eps=optim.adam_eps, betas=optim.adam_betas,
                             fused=True)


def _warmup_factor(step: int, schedule: str, warmup: int, total: int) -> float:
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return max(0.0, (total - step) / max(1, total - warmup))


def warmup_schedule(optimizer: torch.optim.Optimizer, schedule: str, warmup: int, total: int):
    """Linear warmup, then linear decay to 0, cosine decay to 0, or constant: the factors of transformers'
    ``get_scheduler`` (linear, cosine, constant_with_warmup), which is not imported for it because importing
    it pulls in peft (~3 s per job)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(_warmup_factor, schedule=schedule, warmup=warmup,
                                                                 total=total))


# Called after a member step with (member index, step, model, trajectory row).
MemberCallback = Callable[[int, int, nn.Module, dict], None]


class ExponentialAverage:
    """An exponential moving average of what fine-tuning changes (``models.member_state``'s floating tensors),
    kept on the device from optimizer step ``start`` on: a copy at ``start``, then θ̄ ← θ̄ + (1 − decay)(θ − θ̄)
    after every step (torch.optim.swa_utils' EMA, without a second copy of the model)."""

    def __init__(self, decay: float, start: int):
        self.decay, self.start = decay, start
        self.names: list[str] = []
        self.average: list[torch.Tensor] = []  # empty until step ``start``

    def update(self, model: nn.Module, step: int) -> None:
        if step < self.start:
            return
        state = model.state_dict()
        if not self.average:
            self.names = [name for name in member_names(model) if state[name].is_floating_point()]
            self.average = [state[name].detach().clone() for name in self.names]
            return
        for average, current in zip(self.average, (state[name] for name in self.names)):
            average.lerp_(current.detach(), 1.0 - self.decay)

    def state(self) -> dict[str, torch.Tensor]:
        """The average as CPU tensors (empty before ``start``): what a training state and the output keep."""
        return {name: tensor.to("cpu", copy=True) for name, tensor in zip(self.names, self.average)}

    def load(self, state: dict[str, torch.Tensor], device: torch.device) -> None:
        self.names, self.average = list(state), [tensor.to(device, copy=True) for tensor in state.values()]


@dataclass
class TrainingState:
    """Everything ``fine_tune`` needs to continue after ``step`` as if it had never stopped (bit for bit on
    CPU): taken after an evaluation, every ``checkpoint_seconds`` and when a stop is requested."""

    step: int
    model: dict[str, torch.Tensor]  # the tensors ``models.member_state`` holds (a LoRA model: its adapters)
    optimizer: dict  # torch's optimizer state_dict
    scheduler: dict  # the learning-rate schedule's state_dict
    data_order: torch.Tensor  # the data-order generator at the start of the epoch of ``step``
    rng: torch.Tensor  # torch's global RNG (dropout)
    cuda_rng: torch.Tensor | None  # the device's RNG on GPU
    trajectory: list[dict]
    elapsed: float  # training seconds up to ``step``
    average: dict[str, torch.Tensor] | None = None  # ``ExponentialAverage.state()``, if one is kept
    scaler: dict | None = None  # fp16 training's loss scale (GradScaler.state_dict(); empty when disabled)
    running_loss: float = 0.0  # the train loss summed since the last evaluation (its row's train_loss)
    running_count: int = 0


class TrainingStopped(RuntimeError):
    """Training stopped at a requested stop (SLURM's signal before a time limit or a pre-emption) after saving
    its state: the job fails, and its rerun resumes there."""


def fine_tune(model: nn.Module, train: SplitData, val: SplitData, task: TaskSpec, hp: Hyperparameters,
              optim: OptimConfig, epochs: int, seed: int, device: torch.device,
              eval_steps: list[int] | None = None, on_eval: MemberCallback | None = None,
              progress: str = "train", resume: TrainingState | None = None,
              on_state: Callable[[TrainingState], None] | None = None,
              average: ExponentialAverage | None = None, precision: str = "fp32",
              checkpoint_seconds: float | None = None, stop_requested: Callable[[], bool] | None = None,
              state_at_evaluations: bool = True) -> list[dict]:
    """Train ``model`` (on ``device`` already: ``TaskKind.load_model``) with AdamW + warmup schedule, forward
    passes autocast to ``precision`` (``bomf.device``: bf16, fp16 with a loss scaler, or fp32; parameters
    stay float32), and return one trajectory row per evaluation.

    Evaluations happen at ``eval_steps`` (default: the end of every epoch); ``on_eval`` receives each one,
    which is how stage 2 saves its members, and then (``state_at_evaluations``) ``on_state`` receives the
    state to ``resume`` from; it also receives one every ``checkpoint_seconds`` of training, and one when
    ``stop_requested()`` turns true, after which training raises TrainingStopped. ``average`` is updated after every optimizer step. A diverged
    run (non-finite loss) stops early with NaN scores.
    """
    metrics = list(task.metrics)
    steps_per_epoch = math.ceil(len(train) / hp.batch_size)
    total_steps = steps_per_epoch * epochs
    eval_steps = eval_steps or [steps_per_epoch * (e + 1) for e in range(epochs)]
    model.train()
    optimizer = make_optimizer(model, hp, optim)
    scheduler = warmup_schedule(optimizer, optim.schedule, round(hp.warmup_ratio * total_steps), total_steps)
    scaler = gradient_scaler(device, precision)
    order = torch.Generator().manual_seed(seed)
    trajectory, running_loss, running_count, step, elapsed = [], 0.0, 0, 0, 0.0
    if resume is not None:
        _restore(resume, model, optimizer, scheduler, order, device)
        if resume.scaler:
            scaler.load_state_dict(resume.scaler)
        trajectory, step, elapsed = list(resume.trajectory), resume.step, resume.elapsed
        running_loss, running_count = resume.running_loss, resume.running_count
        if average is not None and resume.average is not None:
            average.load(resume.average, device)
    # A resumed run redraws the permutation of its last step's epoch and skips that epoch's finished batches.
    first_epoch = max(step - 1, 0) // steps_per_epoch
    finished_batches = step - first_epoch * steps_per_epoch
    batch_starts = range(0, len(train), hp.batch_size)
    started = time.perf_counter() - elapsed
    last_state = time.perf_counter()

    def training_state() -> TrainingState:
        state, saved = model.state_dict(), set(member_names(model))
        return TrainingState(step, {name: t for name, t in state.items() if name in saved}, optimizer.state_dict(),
                             scheduler.state_dict(), epoch_order, torch.get_rng_state(), _device_rng(device),
                             list(trajectory), time.perf_counter() - started,
                             average.state() if average is not None else None, scaler.state_dict(), running_loss,
                             running_count)

    bar = tqdm(total=total_steps, initial=step, desc=progress, mininterval=5, disable=None)
    for epoch in range(first_epoch, epochs):
        epoch_order = order.get_state()
        permutation = torch.randperm(len(train), generator=order).tolist()
        # Each optimizer batch in device batches of at most max_device_batch examples, and those of the whole
        # epoch as one stream (``SplitData.batches``), so the next is prepared while the device computes.
        steps = [[batch[start:start + optim.max_device_batch] for start in range(0, len(batch), optim.max_device_batch)]
                 for batch in (permutation[start:start + hp.batch_size]
                               for start in batch_starts[finished_batches if epoch == first_epoch else 0:])]
        chunks = train.batches((chunk for step_chunks in steps for chunk in step_chunks), device)
        for step_chunks in steps:
            loss_value = _accumulate_gradients(model, chunks, [len(chunk) for chunk in step_chunks], device,
                                               precision, scaler)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if average is not None:
                average.update(model, step)
            bar.update()
            running_loss += loss_value
            running_count += 1
            if not math.isfinite(loss_value):
                nan_scores = {"loss": math.nan, **{m: math.nan for m in metrics}}
                trajectory.append(_row(step, epoch, step / steps_per_epoch, math.nan, nan_scores, started))
                bar.close()
                return trajectory
            if step in eval_steps:
                scores, _ = val.evaluate(model, metrics, optim.eval_batch_size, device)
                row = _row(step, epoch, step / steps_per_epoch, running_loss / running_count, scores, started)
                running_loss, running_count = 0.0, 0
                trajectory.append(row)
                bar.set_postfix({k: f"{v:.3f}" for k, v in scores.items()})
                if on_eval is not None:
                    on_eval(len(trajectory) - 1, step, model, row)
            stopping = stop_requested is not None and stop_requested()
            due = checkpoint_seconds is not None and time.perf_counter() - last_state >= checkpoint_seconds
            if on_state is not None and ((state_at_evaluations and step in eval_steps) or stopping or due):
                on_state(training_state())
                last_state = time.perf_counter()
            if stopping:
                bar.close()
                raise TrainingStopped(f"training stopped on request at step {step} of {total_steps}"
                                      f"{', its state saved: a rerun resumes there' if on_state else ''}")
    bar.close()
    return trajectory


def _device_rng(device: torch.device) -> torch.Tensor | None:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _restore(state: TrainingState, model: nn.Module, optimizer, scheduler, order: torch.Generator,
             device: torch.device) -> None:
    load_member_state(model, state.model)
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    order.set_state(state.data_order)
    torch.set_rng_state(state.rng)
    if state.cuda_rng is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state.cuda_rng, device)


def _accumulate_gradients(model, chunks: Iterator[dict[str, torch.Tensor]], chunk_sizes: list[int], device,
                          precision: str, scaler) -> float:
    """Forward/backward one optimizer batch, the next ``len(chunk_sizes)`` device batches of ``chunks``; returns
    the batch's mean loss. The loss is summed on the device (in float64, as Python summed it) and read once:
    one synchronisation a step."""
    total, batch_size = 0.0, sum(chunk_sizes)
    for size, batch in zip(chunk_sizes, chunks):
        with training_autocast(device, precision):
            loss = model(**batch).loss
        scaler.scale(loss * size / batch_size).backward()
        total = total + loss.detach().double() * size
    return float(total) / batch_size


def _row(step: int, epoch: int, progress_epochs: float, train_loss: float, scores: dict, started: float) -> dict:
    return {"step": step, "epoch": epoch, "epoch_progress": round(progress_epochs, 4),
            "train_loss": train_loss, **{f"val_{k}": v for k, v in scores.items()},
            "seconds": round(time.perf_counter() - started, 3)}
