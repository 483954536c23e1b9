"""Sample efficiency of stage 3: qLogNEHVI (bomf.fuse.mobo.run_mobo, pipeline defaults) against random
Dirichlet(1) search on the same 15 synthetic members and conflicting objectives (bo_overhead.Conflicting).

Run: .venv/bin/python benchmarks/sample_efficiency.py [--seeds 3] [--evaluations 45]

Both start from the members' own scores (not counted). BO: 15 Sobol simplex points, then BO up to
--evaluations; random: --evaluations Dirichlet(1) points (and 8x as many, for the equal-time comparison).
Printed: mean hypervolume vs evaluations, the evaluations BO needs to reach random's final hypervolume (per
seed), and an equal-wall-time comparison: the synthetic objective is free, so a real evaluation time per
fused model is ASSUMED (each row states it); BO's wall time is that times its evaluations plus its measured
proposal seconds, and random gets as many evaluations as fit in that same time.
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bo_overhead import MEMBERS, Conflicting
from bomf.fuse import mobo

warnings.filterwarnings("ignore")
CONFIG = {"acquisition": "qLogNEHVI", "initial_points": MEMBERS, "selection": "best_metric",
          "mc_samples": 16, "restarts": 2, "raw_samples": 64}  # config.yaml's fusion defaults
ASSUMED_EVAL_SECONDS = (0.5, 2.0, 5.0, 20.0)  # one fused-model validation pass (2-core CPU: seconds+)
RANDOM_FACTOR = 8


def random_curve(objective: Conflicting, normaliser, evaluations: int, seed: int) -> list[float]:
    points = np.random.default_rng(seed).dirichlet(np.ones(MEMBERS), evaluations)
    scores = objective.members() + [objective(torch.tensor(p)) for p in points]
    Y = normaliser(scores)
    return [mobo.hypervolume(Y[: MEMBERS + i], normaliser.reference_point) for i in range(1, evaluations + 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evaluations", type=int, default=45)
    args = parser.parse_args()
    E = args.evaluations
    objective = Conflicting()
    normaliser = mobo.Normaliser(objective.names, objective.members())
    bo, bo_seconds, random = [], [], []
    for seed in range(args.seeds):
        started = time.perf_counter()
        history, _ = mobo.run_mobo(Conflicting(), objective.members(), {**CONFIG, "evaluations": E}, seed)
        bo.append(history["hypervolume"].to_numpy()[MEMBERS:])  # after each counted evaluation
        bo_seconds.append(float(history["bo_seconds"].sum()))
        random.append(random_curve(objective, normaliser, RANDOM_FACTOR * E, seed))
        print(f"seed {seed}: BO {time.perf_counter() - started:.0f} s, final HV {bo[-1][-1]:.4f} vs random "
              f"{random[-1][E - 1]:.4f}", flush=True)

    marks = sorted({1, 5, 10, MEMBERS, MEMBERS + 5, MEMBERS + 10, (MEMBERS + E) // 2, E})
    print(f"\nMean hypervolume vs evaluations ({args.seeds} seeds; BO's first {MEMBERS} are Sobol points)")
    print(f"{'evals':>6} {'BO':>8} {'random':>8}")
    for m in marks:
        print(f"{m:>6} {statistics.mean(c[m - 1] for c in bo):>8.4f} {statistics.mean(c[m - 1] for c in random):>8.4f}")
    print(f"{RANDOM_FACTOR * E:>6} {'':>8} {statistics.mean(c[-1] for c in random):>8.4f}  (random only)")

    needed = []
    for b, r in zip(bo, random):
        reached = np.nonzero(np.asarray(b) >= r[E - 1])[0]
        needed.append(int(reached[0]) + 1 if len(reached) else None)
    print(f"\nEvaluations BO needs to reach random's final HV at {E}: {needed} "
          f"(target <= {E // 2}); random evaluations to reach BO's final HV: "
          f"{[next((i + 1 for i, v in enumerate(r) if v >= b[-1]), f'>{RANDOM_FACTOR * E}') for b, r in zip(bo, random)]}")

    print(f"\nEqual wall time (BO proposal seconds measured here: mean {statistics.mean(bo_seconds):.1f} s per "
          f"search of {E - MEMBERS} BO steps)")
    print(f"{'assumed s/eval':>14} {'BO wall s':>10} {'random evals':>13} {'BO HV':>8} {'random HV':>10}  winner")
    for t in ASSUMED_EVAL_SECONDS:
        wall = E * t + statistics.mean(bo_seconds)
        count = min(int(wall // t), RANDOM_FACTOR * E)
        bo_hv = statistics.mean(c[-1] for c in bo)
        random_hv = statistics.mean(c[count - 1] for c in random)
        print(f"{t:>14.1f} {wall:>10.0f} {count:>13d} {bo_hv:>8.4f} {random_hv:>10.4f}  "
              f"{'BO' if bo_hv > random_hv else 'random'}")


if __name__ == "__main__":
    main()
