"""Bayesian optimisation: stage-1 hyperparameter suggestions and the stage-3 multi-objective search over
fusion weights (on a cheap synthetic objective with a known optimum)."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch.quasirandom import SobolEngine

from bomf.fuse.mobo import (Normaliser, fill_non_finite, fit_surrogate, pareto_mask, run_mobo, sobol_simplex,
                            weight_columns)
from bomf.fuse.selection import SELECTION_RULES, best_trial
from bomf.records import HpoTrial
from bomf.tasks.registry import GLUE_TASKS
from bomf.train.hpo import Dimension, finite_score, search_space, suggest, trial_loss, trial_score

SPACE = {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}, "batch_size": {"low": 8, "high": 32},
         "warmup_ratio": {"low": 0.0, "high": 0.2}}


def _inside(point: dict, space: dict = SPACE) -> bool:
    return all(space[k]["low"] <= v <= space[k]["high"] for k, v in point.items())


# --------------------------------------------------------------------------- stage 1: hpo.suggest


def test_round_zero_is_sobol_inside_the_space():
    points = suggest(SPACE, [], 4, 0, seed=3)
    assert len(points) == 4
    assert len({tuple(p.values()) for p in points}) == 4
    for p in points:
        assert set(p) == set(SPACE) and _inside(p)
        assert type(p["batch_size"]) is int
        assert type(p["learning_rate"]) is float and type(p["warmup_ratio"]) is float
    # Exactly the scrambled Sobol points of the seed, decoded (log scale for the learning rate).
    unit = SobolEngine(3, scramble=True, seed=3).draw(4).double()
    for p, u in zip(points, unit):
        assert p["learning_rate"] == pytest.approx(math.exp(math.log(1e-5) + float(u[0]) * math.log(100)))
        assert p["batch_size"] == round(8 + float(u[1]) * 24)
        assert p["warmup_ratio"] == pytest.approx(0.2 * float(u[2]))


def test_round_zero_is_deterministic_for_a_seed():
    assert suggest(SPACE, [], 4, 0, seed=3) == suggest(SPACE, [], 4, 0, seed=3)
    assert suggest(SPACE, [], 4, 0, seed=3) != suggest(SPACE, [], 4, 0, seed=4)


def test_log_scale_is_respected():
    """Half the points of a log-scaled range fall below its geometric midpoint (a linear scale: 1%)."""
    points = suggest(SPACE, [], 64, 0, seed=0)
    rates = np.array([p["learning_rate"] for p in points])
    assert 0.4 <= np.mean(rates < 1e-4) <= 0.6
    linear = suggest({"learning_rate": {"low": 1e-5, "high": 1e-3}}, [], 64, 0, seed=0)
    assert np.mean(np.array([p["learning_rate"] for p in linear]) < 1e-4) < 0.15
    batch = np.array([p["batch_size"] for p in points])
    assert 0.35 <= np.mean(batch < 20) <= 0.65  # not log-scaled


def test_dimension_encode_decode():
    (lr, bs) = search_space({"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
                             "batch_size": {"low": 8, "high": 32}})
    assert lr.log and not lr.integer and bs.integer and not bs.log
    assert lr.decode(0.5) == pytest.approx(1e-4)
    assert lr.encode(1e-4) == pytest.approx(0.5)
    assert bs.decode(0.5) == 20 and bs.encode(20) == pytest.approx(0.5)
    for u in (0.1, 0.37, 0.9):
        assert lr.encode(lr.decode(u)) == pytest.approx(u)


def test_decoded_bounds_stay_inside_the_space():
    """BO often proposes the corners of the unit box; their decoded values must lie in [low, high]."""
    lr = Dimension("learning_rate", 1e-5, 1e-3, log=True, integer=False)
    decoded = [lr.decode(0.0), lr.decode(1.0)]
    assert 1e-5 <= decoded[0] and decoded[1] <= 1e-3, (
        f"PACKAGE BUG (bomf/hpo.py Dimension.decode): the corners decode to {decoded}, outside "
        "[1e-05, 0.001] (exp(log(high)) != high in floating point); clamp to [low, high]")


def trial(score: float, loss: float = math.nan, params: dict | None = None) -> HpoTrial:
    """A stage-1 trial record with the given score (and loss, and hyperparameters)."""
    return HpoTrial(params or {}, score, loss, "accuracy", proxy=True, trainable_fraction=1.0, epochs=1, seconds=0.0,
                    trajectory=[])


def _trials(points: list[dict], sign: float) -> list[HpoTrial]:
    return [trial(sign * math.log10(p["learning_rate"]), params=p) for p in points]


def test_later_rounds_use_the_trials():
    space = {k: SPACE[k] for k in ("learning_rate", "batch_size")}
    first = suggest(space, [], 8, 0, seed=1)
    rising = suggest(space, _trials(first, +1), 2, 1, seed=1)  # score grows with the learning rate
    falling = suggest(space, _trials(first, -1), 2, 1, seed=1)
    for p in rising + falling:
        assert set(p) == set(space) and type(p["batch_size"]) is int and 8 <= p["batch_size"] <= 32
        assert 1e-5 * (1 - 1e-9) <= p["learning_rate"] <= 1e-3 * (1 + 1e-9)
    # Not the next Sobol points: the GP followed the scores.
    assert rising != suggest(space, [], 2, 1, seed=1)
    median = float(np.median([p["learning_rate"] for p in first]))
    assert min(p["learning_rate"] for p in rising) > median
    assert max(p["learning_rate"] for p in falling) < median
    # Deterministic given the same trials, with either acquisition.
    assert suggest(space, _trials(first, +1), 2, 1, seed=1) == rising
    ei = suggest(space, _trials(first, +1), 2, 1, seed=1, acquisition="qLogEI")
    assert min(p["learning_rate"] for p in ei) > median


def test_suggest_tolerates_diverged_trials():
    space = {k: SPACE[k] for k in ("learning_rate", "batch_size")}
    trials = _trials(suggest(space, [], 6, 0, seed=2), -1)
    trials[1] = replace(trials[1], score=math.nan)
    trials[4] = replace(trials[4], score=math.nan)
    points = suggest(space, trials, 2, 1, seed=2)
    assert len(points) == 2 and all(math.isfinite(p["learning_rate"]) for p in points)


def test_finite_score():
    trials = [trial(0.6), trial(math.nan), trial(0.8)]
    assert finite_score(0.7, trials) == 0.7
    filled = finite_score(math.nan, trials)
    assert filled == pytest.approx(0.6 - 0.1 * (0.2 + 1e-3))
    assert filled < 0.6  # worse than every finite score
    assert finite_score(math.nan, [trial(math.nan)]) == 0.0
    same = finite_score(math.nan, [trial(0.5), trial(0.5)])
    assert math.isfinite(same) and same < 0.5


def test_search_dimensions_keep_one_order_whatever_the_config_order():
    space = {"batch_size": {"low": 8, "high": 32}, "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}
    assert [d.name for d in search_space(space)] == ["learning_rate", "batch_size"]
    assert suggest(space, [], 3, 0, seed=0) == suggest(dict(reversed(list(space.items()))), [], 3, 0, seed=0)


def test_trial_score_and_best_trial():
    trajectory = [{"val_accuracy": 0.6}, {"val_accuracy": math.nan}, {"val_accuracy": 0.7}]
    assert trial_score(trajectory, "accuracy") == 0.7
    assert math.isnan(trial_score([{"val_accuracy": math.nan}], "accuracy"))
    trials = [trial(0.5), trial(math.nan), trial(0.9), trial(0.9)]
    assert best_trial(trials) is trials[2]  # NaN ignored, ties -> earliest
    diverged = [trial(math.nan), trial(-1.0)]
    assert best_trial(diverged) is diverged[1]
    # Trials tied on the metric (e.g. all at the majority class) are told apart by validation loss.
    tied = [trial(0.68, 0.64), trial(0.68, 0.61), trial(0.68, math.nan), trial(0.5, 0.1)]
    assert best_trial(tied) is tied[1]
    assert trial_loss([{"val_accuracy": 0.6, "val_loss": 0.5}, {"val_accuracy": 0.7, "val_loss": 0.9},
                       {"val_accuracy": 0.7, "val_loss": 0.8}], "accuracy") == 0.8
    with pytest.raises(ValueError, match="diverged"):
        best_trial([trial(math.nan), trial(math.nan)])


def _objective_inside(params: dict) -> float:
    """A stage-1 score peaking strictly inside SPACE (learning rate 10^-4.3 ≈ 5e-5, batch size 19, warmup
    0.07: 35%, 46% and 35% of the way along each range, as the space scales it), 0 at the peak."""
    return -((math.log10(params["learning_rate"]) + 4.3) ** 2 + ((params["batch_size"] - 19) / 24) ** 2
             + ((params["warmup_ratio"] - 0.07) / 0.2) ** 2)


def _random_search(seed: int, trials: int) -> list[float]:
    """Scores of uniform random points of SPACE, decoded here (log-uniform learning rate, rounded batch)."""
    unit = np.random.default_rng(seed).uniform(size=(trials, 3))
    return [_objective_inside({"learning_rate": math.exp(math.log(1e-5) + a * math.log(100)),
                               "batch_size": int(round(8 + b * 24)), "warmup_ratio": 0.2 * c}) for a, b, c in unit]


def test_stage1_bo_reaches_random_search_best_in_fewer_trials():
    """Per seed: 30 random trials set a target (their best score); BO (4 Sobol points, then 4 rounds of
    q=2, so 12 trials) must reach it within its 12 trials, i.e. in fewer than 30, for 4 of 5 seeds, and beat
    random search at an equal 12 trials in the median. A suggest that ignored the trials (Sobol again) or
    walked away from the optimum reaches the target about as rarely as random search does."""
    random_budget, reached, bo_best, random_best = 30, [], [], []
    for seed in range(5):
        trials = []
        for round_index in range(5):
            for params in suggest(SPACE, trials, 4 if round_index == 0 else 2, round_index, seed):
                assert _inside(params)
                trials.append(trial(_objective_inside(params), params=params))
        best_so_far = np.maximum.accumulate([t.score for t in trials])
        random_scores = _random_search(100 + seed, random_budget)
        target = max(random_scores)
        reached.append(int(np.argmax(best_so_far >= target)) + 1 if best_so_far[-1] >= target else math.inf)
        bo_best.append(best_so_far[-1])
        random_best.append(max(random_scores[:len(trials)]))
    assert sum(r <= 12 for r in reached) >= 4, reached  # 12 BO trials beat 30 random ones
    assert np.median(reached) < random_budget, reached
    assert np.median(bo_best) > np.median(random_best), (bo_best, random_best)


# --------------------------------------------------------------------------- stage 3: run_mobo

OPTIMUM = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.double)  # interior point of the 4-simplex
CONFIG = {"acquisition": "qLogNEHVI", "initial_points": 4, "evaluations": 10, "selection": "best_metric",
          "mc_samples": 32, "restarts": 2, "raw_samples": 64}
SEEDS = (0, 1, 2)


class Synthetic:
    """Validation loss and accuracy of a fused model whose best weights are ``OPTIMUM``."""

    names = ["loss", "accuracy"]
    task = GLUE_TASKS["rte"]

    def __init__(self, optimum=OPTIMUM, nan_calls=()):
        self.optimum, self.nan_calls, self.calls = optimum, set(nan_calls), 0

    def distance(self, weights) -> float:
        weights = torch.tensor(np.asarray(weights, dtype=float), dtype=torch.double)
        return float(torch.linalg.vector_norm(weights - self.optimum))

    def __call__(self, weights: torch.Tensor) -> dict:
        self.calls += 1
        if self.calls in self.nan_calls:
            return {"loss": math.nan, "accuracy": math.nan}
        d = self.distance(weights)
        return {"loss": 0.3 + d**2, "accuracy": 0.9 - 0.5 * d}


def members_of(objective: Synthetic, count: int) -> list[dict]:
    return [objective(torch.eye(count, dtype=torch.double)[i]) for i in range(count)]


@pytest.fixture(scope="module")
def searches():
    runs = {}
    for seed in SEEDS:
        objective = Synthetic()
        history, chosen = run_mobo(objective, members_of(objective, 4), CONFIG, seed)
        runs[seed] = (history, chosen, objective)
    return runs


def test_bo_beats_random_search_at_equal_budget(searches):
    bo, random = [], []
    objective = Synthetic()
    for seed, (history, _, _) in searches.items():
        weights = history[weight_columns(4)].to_numpy()
        assert len(weights) == 4 + CONFIG["evaluations"]
        bo.append(min(objective.distance(w) for w in weights))
        rng = np.random.default_rng(seed)
        candidates = [*np.eye(4), *rng.dirichlet(np.ones(4), CONFIG["evaluations"])]
        random.append(min(objective.distance(w) for w in candidates))
    assert np.mean(bo) < 0.5 * np.mean(random), (bo, random)
    assert np.mean(bo) < 0.1  # close to the optimum in absolute terms


def test_history_columns(searches):
    count, budget, initial = 4, CONFIG["evaluations"], CONFIG["initial_points"]
    for seed, (history, chosen, objective) in searches.items():
        assert list(history["evaluation"]) == list(range(count + budget))
        assert list(history["source"]) == ["member"] * count + ["sobol"] * initial + ["bo"] * (budget - initial)
        assert objective.calls == count + budget  # members measured by the caller, then the budget
        weights = torch.tensor(history[weight_columns(count)].to_numpy())
        assert bool((weights >= 0).all())
        assert torch.allclose(weights.sum(-1), torch.ones(len(weights), dtype=torch.double), atol=1e-6)
        assert torch.equal(weights[:count], torch.eye(count, dtype=torch.double))
        assert torch.allclose(weights[count:count + initial], sobol_simplex(count, initial, seed))
        for row, w in zip(history.itertuples(), weights):  # the scores recorded are those of the weights
            assert row.loss == pytest.approx(0.3 + objective.distance(w) ** 2)
        assert history["finite"].all()
        hv = history["hypervolume"].to_numpy()
        assert (np.diff(hv) >= -1e-12).all() and hv[-1] > hv[count - 1]
        assert (history["bo_seconds"][history["source"] == "bo"] > 0).all()


def test_chosen_row_is_on_the_pareto_set(searches):
    for history, chosen, objective in searches.values():
        assert history["chosen"].sum() == 1 and bool(history.loc[chosen, "chosen"])
        assert bool(history.loc[chosen, "pareto"])
        # Both objectives improve with the distance to the optimum: the front is the closest point.
        distances = [objective.distance(w) for w in history[weight_columns(4)].to_numpy()]
        assert set(history.index[history["pareto"]]) == {int(np.argmin(distances))}
        assert chosen == int(np.argmin(distances))


def test_search_is_deterministic_for_a_seed(searches):
    """The warm-started GP fits are carried inside one search only: a rerun proposes the same points."""
    history = searches[0][0]
    objective = Synthetic()
    again, chosen = run_mobo(objective, members_of(objective, 4), CONFIG, 0)
    timings = ["bo_seconds", "eval_seconds"]
    pd.testing.assert_frame_equal(again.drop(columns=timings), history.drop(columns=timings))
    assert chosen == searches[0][1]


def test_batched_surrogate_holds_the_fitted_gps():
    """Several objectives are fitted one GP each, then merged into one batched GP: same posterior."""
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Standardize

    X = sobol_simplex(4, 12, 0)
    Y = torch.stack([-(X - OPTIMUM).norm(dim=-1), X[:, 0] ** 2 - X[:, 1], X[:, 2]], -1)
    state = {}
    surrogate = fit_surrogate(X, Y, 0, CONFIG, state)
    assert len(state["hyperparameters"]) == 3
    test = sobol_simplex(4, 5, 1)
    with torch.no_grad():
        merged = surrogate.posterior(test)
        for i in range(3):
            single = SingleTaskGP(X, Y[:, [i]], outcome_transform=Standardize(1))
            single.load_state_dict(state["hyperparameters"][i], strict=False)
            alone = single.eval().posterior(test)
            assert torch.allclose(merged.mean[:, i], alone.mean[:, 0], atol=1e-8)
            assert torch.allclose(merged.variance[:, i], alone.variance[:, 0], atol=1e-8)


def test_nan_evaluation_is_recorded_and_the_search_continues():
    objective = Synthetic(optimum=torch.tensor([0.5, 0.3, 0.2], dtype=torch.double))
    members = members_of(objective, 3)
    objective.nan_calls = {objective.calls + 3}  # the first BO evaluation diverges
    config = {**CONFIG, "initial_points": 2, "evaluations": 4}
    history, chosen = run_mobo(objective, members, config, seed=0)
    assert list(history["source"]) == ["member"] * 3 + ["sobol"] * 2 + ["bo"] * 2
    assert list(history["finite"]) == [True] * 5 + [False, True]
    assert math.isnan(history.loc[5, "loss"]) and math.isnan(history.loc[5, "accuracy"])
    assert not history.loc[5, "pareto"] and chosen != 5
    assert history.loc[5, "hypervolume"] == history.loc[4, "hypervolume"]
    assert history.loc[6, "hypervolume"] >= history.loc[5, "hypervolume"]
    assert np.isfinite(history.loc[6, weight_columns(3)].to_numpy(dtype=float)).all()
    assert abs(history.loc[6, weight_columns(3)].sum() - 1) < 1e-6


def test_fill_non_finite_is_worse_than_everything():
    Y = torch.tensor([[0.0, 1.0], [math.nan, 0.5], [2.0, -1.0]], dtype=torch.double)
    filled = fill_non_finite(Y)
    assert torch.isfinite(filled).all()
    assert filled[1].tolist() == [-1.0, 0.5] and torch.equal(filled[[0, 2]], Y[[0, 2]])


def test_run_mobo_config_errors():
    objective = Synthetic()
    with pytest.raises(ValueError, match="initial_points"):
        run_mobo(objective, members_of(objective, 4), {**CONFIG, "initial_points": 5, "evaluations": 4}, 0)
    diverged = [{"loss": math.nan, "accuracy": math.nan}] * 3
    with pytest.raises(ValueError, match="non-finite"):
        run_mobo(objective, diverged, CONFIG, 0)


# --------------------------------------------------------------------------- the Pareto mask, by brute force


def brute_force_front(Y: np.ndarray) -> np.ndarray:
    """Rows no other finite row dominates (≥ in every column, > in one; every column maximised); rows with
    a non-finite value are never on it. O(n²), written out."""
    finite = np.isfinite(Y).all(1)
    front = np.zeros(len(Y), dtype=bool)
    for i in range(len(Y)):
        if finite[i]:
            front[i] = not any(finite[j] and j != i and all(Y[j] >= Y[i]) and any(Y[j] > Y[i])
                               for j in range(len(Y)))
    return front


def conflicting_points(objectives: int, count: int, seed: int, grid: float = 0.1) -> np.ndarray:
    """Points near the positive part of a sphere (so every objective trades off against the others),
    rounded to a coarse grid so that many share a coordinate, without two equal rows."""
    rng = np.random.default_rng(seed)
    direction = np.abs(rng.normal(size=(count, objectives)))
    points = direction / np.linalg.norm(direction, axis=1, keepdims=True) * rng.uniform(0.7, 1.0, (count, 1))
    points = np.unique(np.round(points / grid) * grid, axis=0)
    return points[rng.permutation(len(points))]


@pytest.mark.parametrize("objectives", [2, 3, 4])
def test_pareto_mask_matches_brute_force(objectives):
    for seed in range(3):
        Y = conflicting_points(objectives, 60, seed)
        Y = np.vstack([Y, np.full(objectives, np.nan), np.r_[np.inf, np.zeros(objectives - 1)],
                       np.r_[-np.inf, np.ones(objectives - 1)]])  # non-finite rows: never on the front
        expected = brute_force_front(Y)
        assert 3 <= expected.sum() < len(Y) - 3  # a real front, and real dominated points
        # Ties are exercised: some point is dominated only by points that equal it in some objective.
        tied = [i for i in range(len(Y)) if np.isfinite(Y[i]).all() and not expected[i]
                and all((Y[j] == Y[i]).any() for j in range(len(Y))
                        if np.isfinite(Y[j]).all() and (Y[j] >= Y[i]).all() and (Y[j] > Y[i]).any())]
        assert tied
        mask = pareto_mask(torch.tensor(Y, dtype=torch.double))
        np.testing.assert_array_equal(mask.numpy(), expected)


@pytest.mark.parametrize("objectives", [2, 3, 4])
def test_pareto_mask_of_raw_scores_minimises_the_loss(objectives):
    """As run_mobo builds it: raw scores (loss minimised, metrics maximised) through the members'
    Normaliser, compared with dominance written on the raw scores directly."""
    names = ["loss", "accuracy", "f1", "mcc"][:objectives]
    Y = conflicting_points(objectives, 50, seed=10 + objectives)
    scores = [{"loss": 2.0 - y[0], **{name: float(v) for name, v in zip(names[1:], y[1:])}} for y in Y]
    raw = np.array([[s[name] for name in names] for s in scores])
    expected = np.array([not any(raw[j, 0] <= raw[i, 0] and all(raw[j, 1:] >= raw[i, 1:])
                                 and (raw[j, 0] < raw[i, 0] or any(raw[j, 1:] > raw[i, 1:]))
                                 for j in range(len(raw))) for i in range(len(raw))])
    normaliser = Normaliser(names, scores[:4])
    np.testing.assert_array_equal(pareto_mask(normaliser(scores)).numpy(), expected)
    # Reading the loss as maximised gives another front: the orientation is what the mask above checked.
    assert not np.array_equal(brute_force_front(raw), expected)


def test_pareto_mask_flags_every_copy_of_a_non_dominated_point():
    """Two evaluations with equal scores (weights proposed twice, or two members that score alike): neither
    dominates the other, so both are on the front."""
    Y = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.5, 0.5], [0.2, 0.2], [0.2, 0.2]])
    expected = brute_force_front(Y)
    assert expected.tolist() == [True, True, True, True, False, False]
    mask = pareto_mask(torch.tensor(Y, dtype=torch.double)).numpy()
    # BoTorch's is_non_dominated keeps only the first copy unless told not to deduplicate.
    assert mask.tolist() == expected.tolist()


# --------------------------------------------------------------------------- selection rules


FRONT = pd.DataFrame({"loss": [0.20, 0.30, 0.60, 0.90], "accuracy": [0.60, 0.75, 0.80, 0.81]},
                     index=[3, 7, 9, 12])
# Member-normalised objectives (maximised: -loss, accuracy); the utopia point is (1, 1).
FRONT_YN = np.array([[1.0, 0.0], [0.8, 0.7], [0.3, 0.95], [0.0, 1.0]])


def test_selection_rules_on_a_front():
    assert SELECTION_RULES["best_metric"](FRONT, FRONT_YN, "accuracy") == 12
    assert SELECTION_RULES["best_loss"](FRONT, FRONT_YN, "accuracy") == 3
    assert SELECTION_RULES["knee"](FRONT, FRONT_YN, "accuracy") == 7  # distance 0.36 vs 0.70 and 1.0


def test_selection_rule_ties():
    frame = pd.DataFrame({"loss": [0.5, 0.4, 0.4, 0.6], "f1": [0.8, 0.8, 0.7, 0.7]}, index=[10, 11, 12, 13])
    yn = np.zeros((4, 2))
    assert SELECTION_RULES["best_metric"](frame, yn, "f1") == 11  # tie on f1 -> lower loss
    assert SELECTION_RULES["best_loss"](frame, yn, "f1") == 11  # tie on loss -> higher f1
    assert set(SELECTION_RULES) == {"best_metric", "best_loss", "knee", "loss_within_se"}


# Loss is lowest at LOSS_OPTIMUM and the metric highest at METRIC_OPTIMUM, another point of the simplex: the
# Pareto front of a search is a curve between the two, and the rules pick different points of it.
LOSS_OPTIMUM = torch.tensor([0.7, 0.2, 0.1], dtype=torch.double)
METRIC_OPTIMUM = torch.tensor([0.1, 0.2, 0.7], dtype=torch.double)
TRADE_OFF_CONFIG = {**CONFIG, "initial_points": 3, "evaluations": 8}


class TradeOff:
    names = ["loss", "accuracy"]
    task = GLUE_TASKS["rte"]
    noise = 0.05  # its validation accuracy's standard error, as a rule that needs one is told

    def __init__(self, round_metric: int | None = None):
        self.round_metric = round_metric
        self.measured = []  # the points whose standard error a rule asked for

    def standard_error(self, point: torch.Tensor, metric: str) -> float:
        self.measured.append(point.tolist())
        return self.noise

    def __call__(self, weights: torch.Tensor) -> dict:
        weights = torch.as_tensor(weights, dtype=torch.double)
        accuracy = 0.9 - 0.5 * float(torch.linalg.vector_norm(weights - METRIC_OPTIMUM))
        if self.round_metric is not None:  # a metric on few examples takes few values: ties
            accuracy = round(accuracy, self.round_metric)
        return {"loss": 0.3 + float(torch.linalg.vector_norm(weights - LOSS_OPTIMUM)) ** 2, "accuracy": accuracy}


@pytest.fixture(scope="module")
def trade_off_searches():
    searches = {}
    for rule in SELECTION_RULES:
        objective = TradeOff()
        members = [objective(torch.eye(3, dtype=torch.double)[i]) for i in range(3)]
        searches[rule] = run_mobo(objective, members, {**TRADE_OFF_CONFIG, "selection": rule}, seed=0)
        # Only a rule that reads the standard error costs its measurement (once, at the best-metric point).
        assert len(objective.measured) == SELECTION_RULES[rule].needs_standard_error, rule
    return searches


def independent_pick(history: pd.DataFrame, rule: str) -> int:
    """The row ``rule`` should choose, recomputed from the history: its brute-force Pareto set, then the
    rule as documented (knee: nearest the front's best value in every objective after scaling each, signed
    to be maximised, so the members span [0, 1])."""
    objectives = np.column_stack([-history["loss"], history["accuracy"]])
    front = history.index[brute_force_front(objectives)]
    loss, accuracy = history["loss"], history["accuracy"]
    if rule == "best_metric":
        return min(front, key=lambda i: (-accuracy[i], loss[i]))
    if rule == "best_loss":
        return min(front, key=lambda i: (loss[i], -accuracy[i]))
    if rule == "loss_within_se":
        near = [i for i in front if accuracy[i] >= max(accuracy[j] for j in front) - TradeOff.noise]
        return min(near, key=lambda i: (loss[i], -accuracy[i]))
    members = objectives[(history["source"] == "member").to_numpy()]
    low, high = members.min(0), members.max(0)
    scaled = {i: (objectives[i] - low) / (high - low) for i in front}
    utopia = np.max(list(scaled.values()), axis=0)
    return min(front, key=lambda i: math.dist(scaled[i], utopia))


def test_selection_rules_through_run_mobo_on_a_real_trade_off(trade_off_searches):
    histories = {rule: history for rule, (history, _) in trade_off_searches.items()}
    first = histories["best_metric"]
    for rule, (history, chosen) in trade_off_searches.items():
        # The rule only chooses: every search saw the same points.
        pd.testing.assert_frame_equal(history.drop(columns=["chosen", "bo_seconds", "eval_seconds"]),
                                      first.drop(columns=["chosen", "bo_seconds", "eval_seconds"]))
        front = brute_force_front(np.column_stack([-history["loss"], history["accuracy"]]))
        np.testing.assert_array_equal(history["pareto"].to_numpy(), front)
        assert front.sum() >= 4  # a real front, not the single point of a one-optimum objective
        assert front[chosen] and history.index[history["chosen"]].tolist() == [chosen]
        assert chosen == independent_pick(history, rule), rule
    picks = {rule: chosen for rule, (_, chosen) in trade_off_searches.items()}
    assert len(set(picks.values())) == 4, picks  # the rules really differ on this problem
    loss, accuracy = first["loss"], first["accuracy"]
    # The knee lies between the extremes of the front.
    assert loss[picks["best_loss"]] < loss[picks["knee"]] < loss[picks["best_metric"]]
    assert accuracy[picks["best_loss"]] < accuracy[picks["knee"]] < accuracy[picks["best_metric"]]


def test_single_objective_search_breaks_metric_ties_by_loss():
    """A search of the metric alone (bo_metric) on a metric that takes few values: several evaluations tie
    at the best value; best_metric promises the one of lowest loss among them."""
    objective = TradeOff(round_metric=1)
    members = [objective(torch.eye(3, dtype=torch.double)[i]) for i in range(3)]
    history, chosen = run_mobo(objective, members, {**TRADE_OFF_CONFIG, "evaluations": 6}, 0, ["accuracy"])
    best = history["accuracy"].max()
    tied = history[history["accuracy"] == best]
    assert len(tied) >= 2 and tied["loss"].nunique() == len(tied)  # the tie the test is about
    expected = int(tied["loss"].idxmin())
    assert chosen == expected, f"rows {tied.index.tolist()} tie at accuracy {best}: row {expected} has the lowest loss"
