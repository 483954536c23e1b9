"""Multi-objective BO over fusion weights on the simplex (BOMF stage 3).

The GP input is the weight vector itself, and candidates are optimised under the equality constraint
Σw = 1 (w ≥ 0), so every point the GP sees is a point of the simplex: no box point is renormalised after
the fact. Initial points are scrambled Sobol points mapped onto the simplex (Dirichlet(1) through
-log(u), so they cover it evenly). Objectives are the validation loss (minimised) and the task's metrics,
each in its own direction (``metrics.sign``: a lower-is-better metric is minimised, i.e. its negative
maximised), normalised by the members' own spread; the reference point lies a tenth of that spread below
the worst member in every objective. The members' own scores are measured first and not counted in the
budget.

Every evaluation goes through a ``journal.JournaledObjective``, which a rerun of an interrupted search
replays; the rule that picks one Pareto point is registered in ``selection.SELECTION_RULES``.
"""

import math
import time

import numpy as np
import pandas as pd
import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.monte_carlo import qNoisyExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.utils import prune_inferior_points_multi_objective
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms import Standardize
from botorch.optim import optimize_acqf
from botorch.optim.initializers import initialize_q_batch
from botorch.sampling import SobolQMCNormalSampler
from botorch.utils.multi_objective.hypervolume import Hypervolume
from botorch.utils.multi_objective.pareto import is_non_dominated
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch.quasirandom import SobolEngine

from ..metrics import sign
from ..runtime import seed_everything, torch_threads
from .journal import JournaledObjective
from .selection import SELECTION_RULES, standard_error_point
from .warmup import prepare_fused_kernel

WEIGHT_PREFIX = "w"
REFERENCE_MARGIN = 0.1
ACQUISITIONS = {"qLogNEHVI": qLogNoisyExpectedHypervolumeImprovement,
                "qNEHVI": qNoisyExpectedHypervolumeImprovement}


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
        self.signs = torch.tensor([sign(name) for name in names], dtype=torch.double)
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


# Tuning knobs of ``propose`` beside fusion.mc_samples/restarts/raw_samples. They are read with config.get so
# that benchmarks/bo_overhead.py can switch each shortcut off; the pipeline's schema does not expose them.
WARM_START = True  # start each GP fit from the previous iteration's hyperparameters
FIT_MAXITER = 20  # L-BFGS iterations of a warm-started fit (a cold fit runs to convergence)
ACQ_MAXITER = 10  # SLSQP iterations of the acquisition optimiser (BoTorch's default: 2000)
PRUNE_SAMPLES = 256  # posterior samples that decide which observations can be on the front (BoTorch: 2048)
RAW_BATCH = 64  # raw candidates scored per acquisition call


def _surrogate(X: torch.Tensor, Y: torch.Tensor, state: dict | None, config: dict):
    """GPs of the objectives, fitted by maximum marginal likelihood, one per objective. With ``state`` (the
    hyperparameters left by the previous call, updated in place) each fit starts from them and stops after
    FIT_MAXITER L-BFGS steps: one new observation barely moves the optimum, and a warm fit takes a few
    steps where a cold one takes ~100 and retries on failure. Several objectives come back as one batched
    multi-output GP holding the same fitted GPs: the acquisition then costs one posterior call, not one per
    objective (~3x faster on 3 objectives)."""
    warm = state is not None and config.get("warm_start", WARM_START)
    models = [SingleTaskGP(X, Y[:, [i]], outcome_transform=Standardize(1)) for i in range(Y.shape[-1])]
    options = {}
    if warm and len(state.get("hyperparameters") or ()) == len(models):
        for model, previous in zip(models, state["hyperparameters"], strict=True):
            model.load_state_dict(previous, strict=False)
        options = {"optimizer_kwargs": {"options": {"maxiter": config.get("fit_maxiter", FIT_MAXITER)}}}
    for model in models:
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model), **options)
    fitted = [{name: value.detach().clone() for name, value in model.state_dict().items()
               if not name.startswith("outcome_transform")} for model in models]  # Y's own mean and scale
    if warm:
        state["hyperparameters"] = fitted
    if len(models) == 1:
        return models[0]
    batched = SingleTaskGP(X, Y, outcome_transform=Standardize(Y.shape[-1]))
    merged = {}
    for name, value in batched.state_dict().items():
        if name in fitted[0]:
            parts = [part[name] for part in fitted]
            merged[name] = parts[0] if parts[0].shape == value.shape else torch.stack(parts).reshape(value.shape)
    batched.load_state_dict(merged, strict=False)
    return batched.eval()


def fit_surrogate(X: torch.Tensor, Y: torch.Tensor, seed: int, config: dict, state: dict | None = None):
    """The surrogate ``propose`` fits for these inputs and seed (advancing ``state`` as it does)."""
    with torch_threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _surrogate(X, Y, state, config)


def _initial_conditions(acquisition, X: torch.Tensor, Y: torch.Tensor, config: dict, seed: int) -> torch.Tensor:
    """The optimiser's starting points: the best ``restarts`` (Boltzmann-sampled, as BoTorch does) of
    ``raw_samples`` quasi-random simplex points and the observed non-dominated points. Drawn on the simplex
    directly, where BoTorch's hit-and-run polytope sampler spends ~1 s on the equality constraint."""
    raw = torch.cat([sobol_simplex(X.shape[-1], config["raw_samples"], seed), X[pareto_mask(Y)]])
    with torch.no_grad():
        values = torch.cat([acquisition(batch.unsqueeze(1)) for batch in raw.split(RAW_BATCH)])
    starts, _ = initialize_q_batch(raw.unsqueeze(1), values, n=min(config["restarts"], len(raw)))
    return starts


def propose(X: torch.Tensor, Y: torch.Tensor, reference: torch.Tensor, config: dict, seed: int,
            state: dict | None = None) -> torch.Tensor:
    """One new weight vector: hypervolume improvement over GP surrogates, or noisy expected improvement when
    a single objective is searched (the single-objective baselines). ``state``: a dict run_mobo keeps
    across the iterations of one search, for the warm start (None: a cold fit)."""
    count = X.shape[-1]
    # One thread: small GP fits drown in thread overhead (1 s vs 20 s on a 16-core host). Its own seed, and
    # the global RNG left as it was: a resumed search that skips journaled proposals goes on unchanged.
    with torch_threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sampler = SobolQMCNormalSampler(torch.Size([config["mc_samples"]]), seed=seed)
        surrogate = _surrogate(X, Y, state, config)
        if Y.shape[-1] == 1:
            acquisition = qLogNoisyExpectedImprovement(surrogate, X_baseline=X, sampler=sampler)
        else:
            # prune_baseline as BoTorch does, on PRUNE_SAMPLES posterior samples instead of its 2,048 (~0.3 s)
            baseline = prune_inferior_points_multi_objective(surrogate, X, reference,
                                                             num_samples=config.get("prune_samples", PRUNE_SAMPLES))
            prepare_fused_kernel()  # qLogNEHVI loads BoTorch's fused kernel (bomf.fuse.warmup)
            acquisition = ACQUISITIONS[config["acquisition"]](
                model=surrogate, ref_point=reference.tolist(), X_baseline=baseline, prune_baseline=False,
                sampler=sampler)
        bounds = torch.stack([torch.zeros(count), torch.ones(count)]).double()
        simplex = [(torch.arange(count), torch.ones(count, dtype=torch.double), 1.0)]
        candidate, _ = optimize_acqf(acquisition, bounds=bounds, q=1, num_restarts=config["restarts"],
                                     batch_initial_conditions=_initial_conditions(acquisition, X, Y, config, seed),
                                     equality_constraints=simplex,
                                     options={"maxiter": config.get("acq_maxiter", ACQ_MAXITER)})
    weights = candidate.detach()[0].clamp_min(0.0)
    return weights / weights.sum()  # removes the optimiser's ~1e-9 constraint slack only


def pareto_mask(Y: torch.Tensor) -> torch.Tensor:
    """Rows no finite row dominates (maximisation). Every copy of a tied point is flagged: BoTorch keeps only
    the first by default, and then a selection rule's tie-break (e.g. best metric, then lower loss) never
    sees the other rows."""
    finite = torch.isfinite(Y).all(-1)
    mask = torch.zeros(len(Y), dtype=torch.bool)
    mask[finite] = is_non_dominated(Y[finite], deduplicate=False)
    return mask


def history_front(history: pd.DataFrame, searched: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """A finished search's Pareto rows (its ``pareto`` column) and their ``searched`` objectives normalised as
    the search normalised them, by the members' spread: what its selection rule was given."""
    normaliser = Normaliser(searched, history.loc[history["source"] == "member", searched].to_dict("records"))
    front = history[history["pareto"].to_numpy(dtype=bool)]
    return front, normaliser(front[searched].to_dict("records")).numpy()


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
    # The warm start's hyperparameters, carried from one proposal to the next. A journaled proposal is not
    # proposed again, but the fits it skipped are replayed before the next fresh one, so that a resumed
    # search proposes exactly what the uninterrupted one did.
    state, skipped_fits = {}, []
    while len(scores) - count < budget:
        journaled = objective.next_weights()
        started = time.perf_counter()
        X, Y, step_seed = torch.stack(weights), fill_non_finite(normaliser(scores)), seed + len(scores)
        if journaled is not None:  # proposed before an interruption
            point = torch.tensor(journaled, dtype=torch.double)
            skipped_fits.append((X, Y, step_seed))
        else:
            if config.get("warm_start", WARM_START):
                for skipped in skipped_fits:
                    fit_surrogate(*skipped, config, state)
            skipped_fits = []
            point = propose(X, Y, reference, config, step_seed, state)
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
    front, front_yn = frame[frame["pareto"]], Yn[front_mask].numpy()
    rule = SELECTION_RULES[config["selection"]]
    standard_error = None
    if rule.needs_standard_error:  # measured only for a rule that reads it: the others choose as they always did
        measured = standard_error_point(front, front_yn, primary)
        standard_error = objective.standard_error(weights[measured], primary)
        print(f"selection {config['selection']}: validation {primary} standard error {standard_error:.4f} "
              f"(evaluation {measured})", flush=True)
    chosen = rule(front, front_yn, primary, standard_error)
    frame["chosen"] = frame.index == chosen
    return frame, int(chosen)
