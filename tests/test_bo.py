"""Bayesian optimisation: stage-1 hyperparameter suggestions and the stage-3 multi-objective search over
fusion weights (on a cheap synthetic objective with a known optimum)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.quasirandom import SobolEngine

from bomf.hpo import Dimension, finite_score, search_space, suggest, trial_loss, trial_score
from bomf.mobo import fill_non_finite, fit_surrogate, run_mobo, sobol_simplex, weight_columns
from bomf.selection import SELECTION_RULES, best_trial
from bomf.tasks import GLUE_TASKS

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


def _trials(points: list[dict], sign: float) -> list[dict]:
    return [{"params": p, "score": sign * math.log10(p["learning_rate"])} for p in points]


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
    trials[1]["score"] = math.nan
    trials[4]["score"] = math.nan
    points = suggest(space, trials, 2, 1, seed=2)
    assert len(points) == 2 and all(math.isfinite(p["learning_rate"]) for p in points)


def test_finite_score():
    trials = [{"score": 0.6}, {"score": math.nan}, {"score": 0.8}]
    assert finite_score(0.7, trials) == 0.7
    filled = finite_score(math.nan, trials)
    assert filled == pytest.approx(0.6 - 0.1 * (0.2 + 1e-3))
    assert filled < 0.6  # worse than every finite score
    assert finite_score(math.nan, [{"score": math.nan}]) == 0.0
    same = finite_score(math.nan, [{"score": 0.5}, {"score": 0.5}])
    assert math.isfinite(same) and same < 0.5


def test_trial_score_and_best_trial():
    trajectory = [{"val_accuracy": 0.6}, {"val_accuracy": math.nan}, {"val_accuracy": 0.7}]
    assert trial_score(trajectory, "accuracy") == 0.7
    assert math.isnan(trial_score([{"val_accuracy": math.nan}], "accuracy"))
    trials = [{"score": 0.5, "id": 0}, {"score": math.nan, "id": 1}, {"score": 0.9, "id": 2},
              {"score": 0.9, "id": 3}]
    assert best_trial(trials)["id"] == 2  # NaN ignored, ties -> earliest
    assert best_trial([{"score": math.nan, "id": 0}, {"score": -1.0, "id": 1}])["id"] == 1
    # Trials tied on the metric (e.g. all at the majority class) are told apart by validation loss.
    tied = [{"score": 0.68, "loss": 0.64, "id": 0}, {"score": 0.68, "loss": 0.61, "id": 1},
            {"score": 0.68, "loss": math.nan, "id": 2}, {"score": 0.5, "loss": 0.1, "id": 3}]
    assert best_trial(tied)["id"] == 1
    assert trial_loss([{"val_accuracy": 0.6, "val_loss": 0.5}, {"val_accuracy": 0.7, "val_loss": 0.9},
                       {"val_accuracy": 0.7, "val_loss": 0.8}], "accuracy") == 0.8
    with pytest.raises(ValueError, match="diverged"):
        best_trial([{"score": math.nan}, {"score": math.nan}])


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
    assert set(SELECTION_RULES) == {"best_metric", "best_loss", "knee"}

