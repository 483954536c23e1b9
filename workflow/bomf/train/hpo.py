"""Stage 1: Bayesian optimisation of training hyperparameters on a cheap proxy (lower layers frozen, or a
smaller LoRA rank).

A round proposes q points at once (Sobol for round 0, then a GP with a q-batch acquisition that accounts
for the round's other pending points); every point is trained by its own job; a trial's score is the best
validation primary metric over its epochs.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.quasirandom import SobolEngine

from ..metrics import sign
from ..records import HpoTrial
from ..runtime import seed_everything, seed_rngs, torch_threads
from ..settings import OptimConfig, hyperparameters
from ..tasks.kinds import kind_of
from ..tasks.models import trainable_fraction
from .resume import ResumeDirectory, checkpointed, training_identity
from .training import fine_tune

INTEGER_PARAMS = frozenset({"batch_size"})


@dataclass(frozen=True)
class Dimension:
    name: str
    low: float
    high: float
    log: bool
    integer: bool

    def decode(self, unit: float):
        """[0, 1] -> a value of the space (log scale where asked; integers rounded)."""
        if self.log:
            value = math.exp(math.log(self.low) + unit * (math.log(self.high) - math.log(self.low)))
        else:
            value = self.low + unit * (self.high - self.low)
        value = min(max(value, self.low), self.high)  # exp(log(high)) can overshoot high by an ulp
        return int(round(value)) if self.integer else float(value)

    def encode(self, value) -> float:
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)


# The order of the search dimensions, whatever order the config lists them in (the Sobol design and the GP
# inputs follow it, so a reordered config file searches the same points).
SPACE_ORDER = ("learning_rate", "batch_size", "warmup_ratio", "weight_decay")


def search_space(space: dict) -> list[Dimension]:
    return [Dimension(name, float(space[name]["low"]), float(space[name]["high"]), bool(space[name].get("log", False)),
                      name in INTEGER_PARAMS) for name in SPACE_ORDER if name in space]


def suggest(space: dict, trials: list[HpoTrial], q: int, round_index: int, seed: int,
            acquisition: str = "qLogNEI") -> list[dict]:
    """The q hyperparameter points of one round, given every finished trial of the earlier rounds."""
    dims = search_space(space)
    seed_rngs(seed * 1000 + round_index)  # BO on the CPU: no kernel flags needed, and none imported
    if not trials:
        unit = SobolEngine(len(dims), scramble=True, seed=seed).draw(q).double()
    else:
        unit = _bo_step(dims, trials, q, acquisition, seed * 1000 + round_index)
    return [{d.name: d.decode(float(u)) for d, u in zip(dims, row)} for row in unit]


def _bo_step(dims: list[Dimension], trials: list[HpoTrial], q: int, acquisition: str, seed: int) -> torch.Tensor:
    # BoTorch (~2 s to import) only where BO runs: the trial jobs import this module too.
    from botorch.acquisition.logei import qLogExpectedImprovement, qLogNoisyExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Normalize, Standardize
    from botorch.optim import optimize_acqf
    from botorch.sampling import SobolQMCNormalSampler
    from gpytorch.mlls import ExactMarginalLogLikelihood

    X = torch.tensor([[d.encode(t.params[d.name]) for d in dims] for t in trials], dtype=torch.double)
    # Maximised: a lower-is-better metric enters negated.
    Y = torch.tensor([[sign(t.metric) * finite_score(t.score, trials)] for t in trials], dtype=torch.double)
    bounds = torch.stack([torch.zeros(len(dims)), torch.ones(len(dims))]).double()
    with torch_threads(1):  # small GP fits drown in thread overhead
        model = SingleTaskGP(X, Y, input_transform=Normalize(len(dims), bounds=bounds),
                             outcome_transform=Standardize(1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        sampler = SobolQMCNormalSampler(torch.Size([256]), seed=seed)
        if acquisition == "qLogNEI":
            acqf = qLogNoisyExpectedImprovement(model, X_baseline=X, sampler=sampler)
        else:
            acqf = qLogExpectedImprovement(model, best_f=Y.max(), sampler=sampler)
        candidates, _ = optimize_acqf(acqf, bounds=bounds, q=q, num_restarts=8, raw_samples=256,
                                      options={"seed": seed})
    return candidates.detach().clamp(0, 1)


def finite_score(score: float, trials: list[HpoTrial]) -> float:
    """A diverged trial (NaN score) counts as the worst score seen (in its metric's direction), so the GP still
    learns from it."""
    if math.isfinite(score):
        return score
    direction = sign(trials[0].metric)
    finite = [direction * t.score for t in trials if math.isfinite(t.score)]
    return direction * (min(finite) - 0.1 * (max(finite) - min(finite) + 1e-3)) if finite else 0.0


def trial_score(trajectory: list[dict], primary_metric: str) -> float:
    """Best validation primary metric (in its direction) over the trial's evaluations (NaN if it diverged
    throughout)."""
    values = [row[f"val_{primary_metric}"] for row in trajectory if math.isfinite(row[f"val_{primary_metric}"])]
    return max(values, key=lambda value: sign(primary_metric) * value) if values else math.nan


def trial_loss(trajectory: list[dict], primary_metric: str) -> float:
    """Validation loss at the evaluation that gave the trial its score (the lowest, if several did): what
    breaks ties between trials of equal score."""
    score = trial_score(trajectory, primary_metric)
    losses = [row["val_loss"] for row in trajectory if row[f"val_{primary_metric}"] == score]
    return min(losses) if losses else math.nan


def run_trial(model_spec: dict, task, data: dict, params: dict, optim_config: dict, proxy: bool,
              epochs: int, seed: int, device, precision: str = "fp32", staging_dir: str | Path | None = None,
              checkpoint_seconds: float | None = None) -> HpoTrial:
    """Train with ``params`` (the stage-1 proxy of ``model_spec`` if ``proxy``) in ``precision``
    (``bomf.device``); the trial's record. Given a ``staging_dir``, the trial resumes from the state there and
    writes one every ``checkpoint_seconds`` and on SLURM's signal (``train.resume``)."""
    hp = hyperparameters(optim_config, params)
    identity = training_identity(model_spec, data, seed, device, precision, hyperparameters=vars(hp),
                                 optim=optim_config, proxy=proxy, epochs=epochs)
    resume = ResumeDirectory(staging_dir, identity) if staging_dir is not None else None
    resumed = resume.resume if resume is not None else None
    if resumed is not None:
        print(f"resumed from step {resumed.step}", flush=True)
    seed_everything(seed)
    model = kind_of(task).load_model(model_spec, task, device, proxy=proxy, precision=precision)
    started = time.perf_counter() - (resumed.elapsed if resumed is not None else 0.0)
    with checkpointed(resume, checkpoint_seconds) as resumable:
        trajectory = fine_tune(model, data["train"], data["val"], task, hp, OptimConfig.from_config(optim_config),
                               epochs, seed, device, progress="trial", precision=precision,
                               state_at_evaluations=False, **resumable)
    trial = HpoTrial(params, score=trial_score(trajectory, task.primary_metric),
                     loss=trial_loss(trajectory, task.primary_metric), metric=task.primary_metric, proxy=proxy,
                     trainable_fraction=trainable_fraction(model), epochs=epochs,
                     seconds=round(time.perf_counter() - started, 3), trajectory=trajectory)
    if resume is not None:
        resume.remove()
    return trial
