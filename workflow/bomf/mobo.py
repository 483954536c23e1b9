"""Multi-objective BO over fusion weights on the simplex (BOMF stage 3).

The GP input is the weight vector itself, and candidates are optimised under the equality constraint
Σw = 1 (w ≥ 0), so every point the GP sees is a point of the simplex: no box point is renormalised after
the fact. Initial points are scrambled Sobol points mapped onto the simplex (Dirichlet(1) through
-log(u), so they cover it evenly). Objectives are the validation loss (minimised) and the task's metrics
(maximised), normalised by the members' own spread; the reference point lies a tenth of that spread below
the worst member in every objective. The members' own scores are measured first and not counted in the
budget.

Every evaluation goes through a ``JournaledObjective``; given a journal file, a rerun of an interrupted
search replays the journaled evaluations and takes the journaled BO points instead of proposing them again.
"""

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.monte_carlo import qNoisyExpectedHypervolumeImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import ModelListGP, SingleTaskGP
from botorch.models.transforms import Standardize
from botorch.optim import optimize_acqf
from botorch.sampling import SobolQMCNormalSampler
from botorch.utils.multi_objective.hypervolume import Hypervolume
from botorch.utils.multi_objective.pareto import is_non_dominated
from gpytorch.mlls import ExactMarginalLogLikelihood, SumMarginalLogLikelihood
from torch.quasirandom import SobolEngine

from .io import write_jsonl
from .metrics import ranking_key
from .runtime import seed_everything, torch_threads

WEIGHT_PREFIX = "w"
REFERENCE_MARGIN = 0.1
ACQUISITIONS = {"qLogNEHVI": qLogNoisyExpectedHypervolumeImprovement,
                "qNEHVI": qNoisyExpectedHypervolumeImprovement}


class JournaledObjective:
    """An objective whose evaluations are recorded (weights, scores, seconds) and, given a ``path``, appended
    to a JSON-lines journal there, flushed and fsynced one line per evaluation.

    A rerun replays the journal: the k-th evaluation returns the k-th record when its weights are exactly
    the recorded ones (JSON round-trips float64 exactly). Fusion methods are deterministic, so a rerun asks
    for the same weights in the same order; from the first mismatch on, the rest of the journal is stale
    and is dropped. The first line names what the journal was written for (``identity``); a journal written
    for anything else is discarded whole. Attributes other than calls are the wrapped objective's.
    """

    def __init__(self, objective, path: str | Path | None = None, identity: dict | None = None):
        self.objective, self.path = objective, Path(path) if path is not None else None
        self.header = {"identity": json.loads(json.dumps(identity))}
        self.records: list[dict] = []  # this run's evaluations, replayed or new
        self.pending = self._read_journal() if self.path is not None else []
        self.evaluations = self.replayed = 0
        if self.path is not None:
            write_jsonl(self.path, [self.header, *self.pending])  # drops a torn last line

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def __call__(self, weights: torch.Tensor) -> dict[str, float]:
        return self.evaluate(weights)["scores"]

    def next_weights(self) -> list[float] | None:
        """The weights of the next journaled evaluation, if any is left to replay."""
        return self.pending[0]["weights"] if self.pending else None

    def evaluate(self, weights: torch.Tensor, proposal_seconds: float = 0.0) -> dict:
        """The record of one evaluation: replayed from the journal, or measured (and then journaled);
        ``proposal_seconds`` is the time the caller spent choosing ``weights``."""
        self.evaluations += 1
        values = torch.as_tensor(weights).double().tolist()
        record = self._replay(values)
        if record is None:
            started = time.perf_counter()
            scores = self.objective(weights)
            record = {"weights": values, "scores": scores, "seconds": time.perf_counter() - started,
                      "proposal_seconds": proposal_seconds}
            self._append(record)
        self.records.append(record)
        return record

    def _replay(self, weights: list[float]) -> dict | None:
        if self.pending and self.pending[0]["weights"] == weights:
            self.replayed += 1
            return self.pending.pop(0)
        if self.pending:
            print(f"{self.path}: evaluation {self.evaluations} asks for other weights than journaled; "
                  f"dropping the {len(self.pending)} stale records from there on", flush=True)
            self.pending = []
            write_jsonl(self.path, [self.header, *self.records])
        return None

    def _append(self, record: dict) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as journal:
            journal.write(json.dumps(record) + "\n")
            journal.flush()
            os.fsync(journal.fileno())

    def _read_journal(self) -> list[dict]:
        """The records of an existing journal written for the same identity."""
        if not self.path.is_file():
            return []
        lines = []
        # A kill mid-write leaves a torn last line (no newline): it and anything unreadable end the journal.
        for line in self.path.read_text(encoding="utf-8").split("\n")[:-1]:
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                break
        if lines and lines[0] != self.header:
            print(f"{self.path}: written for other inputs or settings; discarding it", flush=True)
            return []
        return lines[1:]

    def discard(self) -> None:
        """Remove the journal once what it protected is complete."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def weight_columns(count: int) -> list[str]:
    return [f"{WEIGHT_PREFIX}{i:02d}" for i in range(count)]


def sobol_simplex(count: int, points: int, seed: int) -> torch.Tensor:
    """Quasi-random points spread evenly over the simplex (Dirichlet(1) via normalised -log u)."""
    unit = SobolEngine(count, scramble=True, seed=seed).draw(points).double().clamp(1e-12, 1 - 1e-12)
    exponential = -torch.log(unit)
    return exponential / exponential.sum(-1, keepdim=True)


class Normaliser:
    """Maps objectives to a maximisation space scaled by the members' spread: 0 = worst member, 1 = best."""

    def __init__(self, names: list[str], member_scores: list[dict[str, float]]):
        self.signs = torch.tensor([-1.0 if name == "loss" else 1.0 for name in names], dtype=torch.double)
        self.names = names
        raw = self._signed(member_scores)
        finite = raw[torch.isfinite(raw).all(-1)]
        if len(finite) == 0:
            raise ValueError("every member has a non-finite validation objective: nothing to normalise by")
        self.low = finite.min(0).values
        spread = finite.max(0).values - self.low
        # Members that tie on an objective still need a scale: fall back to a small fraction of its size.
        self.scale = torch.where(spread > 1e-12, spread, self.low.abs().clamp_min(1.0) * 1e-3)

    def _signed(self, scores: list[dict[str, float]]) -> torch.Tensor:
        values = torch.tensor([[s[name] for name in self.names] for s in scores], dtype=torch.double)
        return values * self.signs

    def __call__(self, scores: list[dict[str, float]]) -> torch.Tensor:
        return (self._signed(scores) - self.low) / self.scale

    @property
    def reference_point(self) -> torch.Tensor:
        return torch.full((len(self.names),), -REFERENCE_MARGIN, dtype=torch.double)


def fill_non_finite(Y: torch.Tensor) -> torch.Tensor:
    """A diverged evaluation (NaN/inf) is told to the GP as clearly worse than anything seen."""
    finite_rows = torch.isfinite(Y).all(-1)
    worst = Y[finite_rows].min(0).values - 1.0
    return torch.where(torch.isfinite(Y), Y, worst.expand_as(Y))


def hypervolume(Y: torch.Tensor, reference: torch.Tensor) -> float:
    finite = Y[torch.isfinite(Y).all(-1)]
    if len(finite) == 0:
        return 0.0
    front = finite[is_non_dominated(finite)]
    return float(Hypervolume(reference).compute(front))


def propose(X: torch.Tensor, Y: torch.Tensor, reference: torch.Tensor, config: dict, seed: int) -> torch.Tensor:
    """One new weight vector: hypervolume improvement over GP surrogates, or noisy expected improvement when
    a single objective is searched (the single-objective baselines)."""
    count = X.shape[-1]
    # One thread: small GP fits drown in thread overhead (1 s vs 20 s on a 16-core host). Its own seed, and
    # the global RNG left as it was: a resumed search that skips journaled proposals goes on unchanged.
    with torch_threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sampler = SobolQMCNormalSampler(torch.Size([config["mc_samples"]]), seed=seed)
        if Y.shape[-1] == 1:
            surrogate = SingleTaskGP(X, Y, outcome_transform=Standardize(1))
            fit_gpytorch_mll(ExactMarginalLogLikelihood(surrogate.likelihood, surrogate))
            acquisition = qLogNoisyExpectedImprovement(surrogate, X_baseline=X, sampler=sampler)
        else:
            models = [SingleTaskGP(X, Y[:, [i]], outcome_transform=Standardize(1)) for i in range(Y.shape[-1])]
            surrogate = ModelListGP(*models)
            fit_gpytorch_mll(SumMarginalLogLikelihood(surrogate.likelihood, surrogate))
            acquisition = ACQUISITIONS[config["acquisition"]](
                model=surrogate, ref_point=reference.tolist(), X_baseline=X, prune_baseline=True, sampler=sampler)
        bounds = torch.stack([torch.zeros(count), torch.ones(count)]).double()
        simplex = [(torch.arange(count), torch.ones(count, dtype=torch.double), 1.0)]
        candidate, _ = optimize_acqf(acquisition, bounds=bounds, q=1, num_restarts=config["restarts"],
                                     raw_samples=config["raw_samples"], equality_constraints=simplex,
                                     options={"seed": seed})
    weights = candidate.detach()[0].clamp_min(0.0)
    return weights / weights.sum()  # removes the optimiser's ~1e-9 constraint slack only


def pareto_mask(Y: torch.Tensor) -> torch.Tensor:
    finite = torch.isfinite(Y).all(-1)
    mask = torch.zeros(len(Y), dtype=torch.bool)
    mask[finite] = is_non_dominated(Y[finite])
    return mask


def _best_metric(frame: pd.DataFrame, Yn: np.ndarray, primary: str) -> int:
    return max(frame.index, key=lambda i: ranking_key(frame.loc[i], primary))


def _best_loss(frame: pd.DataFrame, Yn: np.ndarray, primary: str) -> int:
    return min(frame.index, key=lambda i: (frame.loc[i, "loss"], -frame.loc[i, primary]))


def _knee(frame: pd.DataFrame, Yn: np.ndarray, primary: str) -> int:
    distance = np.linalg.norm(Yn.max(0) - Yn, axis=1)  # to the utopia point of the front, normalised
    return frame.index[int(np.argmin(distance))]


# A rule picks one row of the Pareto set (given the raw rows, their normalised objectives, the primary metric).
SELECTION_RULES: dict[str, Callable[[pd.DataFrame, np.ndarray, str], int]] = {
    "best_metric": _best_metric,  # best primary metric, ties -> lower loss (the default)
    "best_loss": _best_loss,  # lowest validation loss, ties -> better primary metric
    "knee": _knee,  # closest to the front's utopia point in member-normalised space
}


def run_mobo(objective, member_scores: list[dict[str, float]], config: dict, seed: int,
             searched: list[str] | None = None) -> tuple[pd.DataFrame, int]:
    """Search fusion weights over the ``searched`` objectives (default: all of ``objective.names``); returns
    the full history (every objective recorded) and the row chosen by ``config['selection']`` among the
    points Pareto-optimal in the searched objectives."""
    seed_everything(seed)
    if not isinstance(objective, JournaledObjective):
        objective = JournaledObjective(objective)
    count, names = len(member_scores), objective.names
    primary = objective.task.primary_metric
    normaliser = Normaliser(searched or names, member_scores)
    reference = normaliser.reference_point
    initial = config.get("initial_points") or count
    budget = config["evaluations"]
    if initial > budget:
        raise ValueError(f"fusion.initial_points={initial} exceeds fusion.evaluations={budget}")

    weights, scores, sources, timings = [], [], [], []
    for index in range(count):
        weights.append(torch.eye(count, dtype=torch.double)[index])
        scores.append(member_scores[index])
        sources.append("member")
        timings.append((0.0, 0.0))

    def evaluate(point: torch.Tensor, source: str, proposal_seconds: float = 0.0) -> None:
        record = objective.evaluate(point, proposal_seconds)
        scores.append(record["scores"])
        weights.append(point)
        sources.append(source)
        timings.append((record["proposal_seconds"], record["seconds"]))

    for point in sobol_simplex(count, initial, seed):
        evaluate(point, "sobol")
    hypervolumes = [hypervolume(normaliser(scores[: i + 1]), reference) for i in range(len(scores))]
    while len(scores) - count < budget:
        journaled = objective.next_weights()
        started = time.perf_counter()
        if journaled is not None:  # proposed before an interruption: not fitted and proposed again
            point = torch.tensor(journaled, dtype=torch.double)
        else:
            point = propose(torch.stack(weights), fill_non_finite(normaliser(scores)), reference, config,
                            seed + len(scores))
        evaluate(point, "bo", time.perf_counter() - started)
        hypervolumes.append(hypervolume(normaliser(scores), reference))

    Yn = normaliser(scores)
    frame = pd.DataFrame(torch.stack(weights).numpy(), columns=weight_columns(count))
    frame.insert(0, "source", sources)
    frame.insert(0, "evaluation", range(len(frame)))
    for name in names:
        frame[name] = [s[name] for s in scores]
    frame["finite"] = [all(math.isfinite(s[n]) for n in names) for s in scores]
    frame["hypervolume"] = hypervolumes
    front_mask = pareto_mask(Yn)
    frame["pareto"] = front_mask.numpy()
    frame["bo_seconds"] = [t[0] for t in timings]
    frame["eval_seconds"] = [t[1] for t in timings]
    front = frame[frame["pareto"]]
    chosen = SELECTION_RULES[config["selection"]](front, Yn[front_mask].numpy(), primary)
    frame["chosen"] = frame.index == chosen
    return frame, int(chosen)
