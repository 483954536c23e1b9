"""Seconds per stage-3 BO iteration (GP fit + acquisition optimisation), old settings against new, and the
final hypervolume each reaches on the same conflicting three-objective problem (``Conflicting`` below).

Run: .venv/bin/python benchmarks/bo_overhead.py            # timing table + hypervolume, OLD and NEW (~5 min)
     .venv/bin/python benchmarks/bo_overhead.py --ablate   # + NEW with each shortcut reverted alone (~9 min)
     .venv/bin/python benchmarks/bo_overhead.py --objectives 2 --no-hv   # loss + one metric, timing only

OLD is the proposal as it was (old_propose below: restarts=4, raw_samples=256, mc_samples=128, cold
fit, BoTorch's polytope initial conditions, SLSQP to convergence); NEW is bomf.fuse.mobo.propose with the
pipeline's fusion defaults. Timing: N = 15 members plus n - 15 Sobol simplex points, n = 15..75; each
proposal timed alone (wall and process CPU seconds; CPU time is what a core would take without the other
processes sharing this machine), after one untimed proposal that pays the process's first-use costs. NEW
is timed warm, as inside a search: its state comes from a fit on the first n - 1 points (untimed).
Hypervolume: run_mobo with 15 Sobol points then BO, seeds 0 and 1 (normalised objectives, reference point
0.1 below the worst member).
"""

import argparse
import statistics
import time
import warnings
from types import SimpleNamespace

import torch

from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import ModelListGP, SingleTaskGP
from botorch.models.transforms import Standardize
from botorch.optim import optimize_acqf
from botorch.sampling import SobolQMCNormalSampler
from gpytorch.mlls import ExactMarginalLogLikelihood, SumMarginalLogLikelihood

from bomf.fuse import mobo
from bomf.runtime import torch_threads

warnings.filterwarnings("ignore")

MEMBERS = 15
OLD = {"mc_samples": 128, "restarts": 4, "raw_samples": 256}


class Conflicting:
    """Validation loss, Pearson and Spearman of a fused model whose three objectives peak at three different
    interior points of the simplex (Dirichlet(1) draws), so the Pareto front is a surface, not a point."""

    names = ["loss", "pearson", "spearman"]
    task = SimpleNamespace(primary_metric="pearson")

    def __init__(self, count: int = MEMBERS, seed: int = 0, objectives: int = 3):
        self.names = Conflicting.names[:objectives]  # 2: loss and Pearson only (a one-metric task)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.optima = torch.distributions.Dirichlet(torch.ones(count)).sample((3,)).double()
        self.calls = 0

    def __call__(self, weights: torch.Tensor) -> dict:
        self.calls += 1
        d = torch.linalg.vector_norm(weights.double() - self.optima, dim=-1)
        return {"loss": float(0.3 + 2 * d[0] ** 2), "pearson": float(0.9 - d[1]), "spearman": float(0.85 - d[2] ** 1.5)}

    def members(self) -> list[dict]:
        return [self(torch.eye(len(self.optima[0]), dtype=torch.double)[i]) for i in range(len(self.optima[0]))]


def old_propose(X, Y, reference, config, seed, state=None):
    """``bomf.fuse.mobo.propose`` as it was before the fast path (verbatim; ``state`` ignored)."""
    count = X.shape[-1]
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
            acquisition = mobo.ACQUISITIONS[config["acquisition"]](
                model=surrogate, ref_point=reference.tolist(), X_baseline=X, prune_baseline=True, sampler=sampler)
        bounds = torch.stack([torch.zeros(count), torch.ones(count)]).double()
        simplex = [(torch.arange(count), torch.ones(count, dtype=torch.double), 1.0)]
        candidate, _ = optimize_acqf(acquisition, bounds=bounds, q=1, num_restarts=config["restarts"],
                                     raw_samples=config["raw_samples"], equality_constraints=simplex,
                                     options={"seed": seed})
    weights = candidate.detach()[0].clamp_min(0.0)
    return weights / weights.sum()


def search(config: dict, seed: int, old: bool = False, objectives: int = 3):
    """run_mobo on the conflicting problem; with ``old`` through ``old_propose``. (history, objective)."""
    objective = Conflicting(objectives=objectives)
    members = objective.members()
    saved = mobo.propose
    if old:
        mobo.propose = old_propose
    try:
        history, _ = mobo.run_mobo(objective, members, config, seed)
    finally:
        mobo.propose = saved
    return history, objective


NEW = {"mc_samples": 16, "restarts": 2, "raw_samples": 64}  # the pipeline's fusion defaults (config.yaml)
BASE = {"acquisition": "qLogNEHVI", "initial_points": MEMBERS, "selection": "best_metric"}
SIZES = (15, 30, 45, 60, 75)
REPEATS = 2
ABLATIONS = {  # NEW with one shortcut reverted to the old behaviour
    "NEW, mc_samples=128": {"mc_samples": 128},
    "NEW, mc_samples=32": {"mc_samples": 32},
    "NEW, restarts=4 raw=256": {"restarts": 4, "raw_samples": 256},
    "NEW, SLSQP to convergence": {"acq_maxiter": 2000},
    "NEW, no warm start": {"warm_start": False},
    "NEW, prune on 2048 samples": {"prune_samples": 2048},
}


def timed(function, *args) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def timing(objective: Conflicting, config: dict, old: bool) -> dict[int, list[tuple[float, float]]]:
    normaliser = mobo.Normaliser(objective.names, objective.members())
    reference = normaliser.reference_point
    results = {}
    for n in SIZES:
        results[n] = []
        for repeat in range(REPEATS):
            extra = mobo.sobol_simplex(MEMBERS, n - MEMBERS, 100 + repeat) if n > MEMBERS else torch.zeros(0, MEMBERS)
            X = torch.cat([torch.eye(MEMBERS, dtype=torch.double), extra.double()])
            Y = normaliser([objective(x) for x in X])
            seed = 1000 * n + repeat
            if old:
                results[n].append(timed(old_propose, X, Y, reference, config, seed))
            else:
                state = {}
                mobo.fit_surrogate(X[:-1], Y[:-1], seed - 1, config, state)
                results[n].append(timed(mobo.propose, X, Y, reference, config, seed, state))
    return results


def hypervolume_runs(config: dict, old: bool, seeds, evaluations: int, objectives: int = 3):
    finals, seconds = [], []
    for seed in seeds:
        history, _ = search({**BASE, **config, "evaluations": evaluations}, seed, old, objectives)
        finals.append(float(history["hypervolume"].iloc[-1]))
        seconds.extend(history.loc[history["source"] == "bo", "bo_seconds"].tolist())
    return finals, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ablate", action="store_true")
    parser.add_argument("--evaluations", type=int, default=25, help="15 Sobol points + this - 15 BO steps")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--objectives", type=int, choices=(2, 3), default=3)
    parser.add_argument("--no-hv", action="store_true", help="the timing table only")
    args = parser.parse_args()
    objective = Conflicting(objectives=args.objectives)
    settings = {"OLD": ({**BASE, **OLD}, True), "NEW": ({**BASE, **NEW}, False)}
    normaliser = mobo.Normaliser(objective.names, objective.members())
    X = torch.cat([torch.eye(MEMBERS, dtype=torch.double), mobo.sobol_simplex(MEMBERS, 5, 9)])
    mobo.propose(X, normaliser([objective(x) for x in X]), normaliser.reference_point, settings["NEW"][0], 0, {})

    print(f"Seconds per BO iteration, N = {MEMBERS}, {args.objectives} objectives, {REPEATS} proposals per cell: "
          "median / max, wall (CPU)")
    print(f"{'n obs':>6} | {'OLD':^27} | {'NEW':^27}")
    tables = {name: timing(objective, config, old) for name, (config, old) in settings.items()}
    for n in SIZES:
        cells = []
        for name in settings:
            wall = [w for w, _ in tables[name][n]]
            cpu = [c for _, c in tables[name][n]]
            cells.append(f"{statistics.median(wall):5.2f} /{max(wall):5.2f} ({statistics.median(cpu):4.2f}/{max(cpu):4.2f})")
        print(f"{n:>6} | {cells[0]:>27} | {cells[1]:>27}")
    for name in settings:
        wall = [w for cell in tables[name].values() for w, _ in cell]
        cpu = [c for cell in tables[name].values() for _, c in cell]
        print(f"{name} overall: wall median {statistics.median(wall):.2f} max {max(wall):.2f}; "
              f"CPU median {statistics.median(cpu):.2f} max {max(cpu):.2f}")

    if args.no_hv:
        return
    seeds = range(args.seeds)
    runs = dict(settings)
    if args.ablate:
        runs.update({name: ({**BASE, **NEW, **change}, False) for name, change in ABLATIONS.items()})
    print(f"\nFinal hypervolume after {MEMBERS} Sobol + {args.evaluations - MEMBERS} BO evaluations, seeds "
          f"{list(seeds)} (higher is better), and the search's own seconds per BO iteration")
    print(f"{'setting':<28} {'HV per seed':<22} {'mean HV':>8} {'s/iter median':>14} {'max':>6}")
    for name, (config, old) in runs.items():
        finals, seconds = hypervolume_runs(config, old, seeds, args.evaluations, args.objectives)
        print(f"{name:<28} {' '.join(f'{v:.4f}' for v in finals):<22} {statistics.mean(finals):>8.4f} "
              f"{statistics.median(seconds):>14.2f} {max(seconds):>6.2f}", flush=True)


if __name__ == "__main__":
    main()
