"""The task-vector merges (task arithmetic, TIES, DARE): their maths on hand-checked vectors, and as fusion
methods that choose their hyperparameters on validation, journaled and rebuilt from their record."""

import json

import pandas as pd
import pytest
import torch

from bomf.fuse.fusion import METHODS, FusionContext, FusionObjective, MemberStack
from bomf.fuse.methods import SETTINGS as DECLARED
from bomf.fuse.journal import JournaledObjective
from bomf.fuse.merging import MERGES, Merge
from bomf.fuse.points import point_of
from bomf.records import SelectedModel
from test_fusion import CPU, RTE, make_model, perturbed

BASE = torch.zeros(3)
MATRIX = torch.tensor([[1.0, -2.0, 0.1], [3.0, 1.0, -0.1]])


def test_ties_trims_elects_a_sign_and_averages_the_agreeing_members():
    # Elected signs (+, -, 0): the first parameter averages both members, the second keeps only the member
    # that agrees with the sign, the third has no elected sign and stays at the base.
    for density in (1.0, 2 / 3):  # keeping the two largest magnitudes of three drops only the ±0.1
        merged = MERGES["ties"](MATRIX, BASE, density=density)
        torch.testing.assert_close(merged, torch.tensor([2.0, -2.0, 0.0]))
    trimmed = MERGES["ties"](MATRIX, BASE, density=1 / 3)  # each member keeps only its largest entry
    torch.testing.assert_close(trimmed, torch.tensor([3.0, -2.0, 0.0]))


def test_task_arithmetic_at_scale_one_is_the_members_mean():
    base = torch.tensor([0.5, 0.5, 0.5])
    out = torch.empty(3)
    merged = Merge("task_arithmetic", {"scale": 1.0}).vector(MATRIX, base, out)
    torch.testing.assert_close(merged, MATRIX.mean(0))
    extrapolated = Merge("task_arithmetic", {"scale": 2.0}).vector(MATRIX, base, torch.empty(3))
    torch.testing.assert_close(extrapolated, base + 2 * (MATRIX.mean(0) - base))


def test_dare_drops_and_rescales_reproducibly():
    generator = torch.Generator().manual_seed(0)
    matrix, base = torch.randn(3, 200_000, generator=generator), torch.zeros(200_000)
    torch.testing.assert_close(MERGES["dare"](matrix, base, drop_rate=0.0, seed=0), matrix.mean(0))
    dropped = MERGES["dare"](matrix, base, drop_rate=0.9, seed=0)
    assert torch.equal(dropped, MERGES["dare"](matrix, base, drop_rate=0.9, seed=0))
    assert not torch.equal(dropped, MERGES["dare"](matrix, base, drop_rate=0.9, seed=1))
    # Each entry survives in about 10% of the members, rescaled by 10: unbiased for the mean task vector.
    assert float((dropped != 0).float().mean()) == pytest.approx(1 - 0.9 ** 3, abs=0.01)
    # The sum's deviation has variance 200,000 x (10/3)² x 3 x 0.1 x 0.9 = 600,000: within 4 sd.
    assert float(dropped.sum()) == pytest.approx(float(matrix.mean(0).sum()), abs=4 * 600_000 ** 0.5)


@pytest.fixture(scope="module")
def base_and_members(tiny_model_dir):
    base = make_model(tiny_model_dir).state_dict()
    return base, [perturbed(base, seed) for seed in (1, 2, 3)]


@pytest.fixture(scope="module")
def merge_objective(base_and_members, tiny_model_dir, rte_val):
    base, members = base_and_members
    return FusionObjective(MemberStack(members, CPU, base=base), make_model(tiny_model_dir), rte_val, RTE, 8, CPU)


SETTINGS = {"merge_scales": [0.5, 1.0], "ties_densities": [0.3, 1.0], "dare_drop_rates": [0.5]}


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare"])
def test_a_merge_method_chooses_its_grid_point_on_validation(method, merge_objective, tmp_path):
    config = {key: SETTINGS[key] for key in DECLARED[method]}
    journal = tmp_path / "journal.jsonl"
    objective = JournaledObjective(merge_objective, journal, {"method": method})
    result = METHODS[method](FusionContext(objective, config, seed=0))
    history = result.tables["history"]
    sizes = {"task_arithmetic": 2, "ties": 4, "dare": 2}
    assert len(history) == sizes[method] == objective.evaluations and history["chosen"].sum() == 1
    chosen = history[history["chosen"]].iloc[0]
    best = max(history.to_dict("records"), key=lambda row: (row["accuracy"], -row["loss"]))
    assert chosen["loss"] == best["loss"] and chosen["accuracy"] == best["accuracy"]
    assert isinstance(result.point, Merge) and result.point.method == method
    assert result.point.hyperparameters["scale"] == chosen["scale"]
    # What its record holds rebuilds the same model, and a rerun replays every journaled evaluation.
    record = SelectedModel(method, merge_objective(result.point), len(history), merge=result.point.record())
    rebuilt = point_of(SelectedModel(**json.loads(json.dumps(record.__dict__))))
    assert rebuilt == result.point and merge_objective(rebuilt) == record.validation
    replay = JournaledObjective(merge_objective, journal, {"method": method})
    assert METHODS[method](FusionContext(replay, config, seed=0)).point == result.point
    assert replay.replayed == len(history)


def test_scale_one_task_arithmetic_scores_as_swa(merge_objective):
    uniform = torch.full((3,), 1 / 3, dtype=torch.float64)
    swa = merge_objective(uniform)
    merged = merge_objective(Merge("task_arithmetic", {"scale": 1.0}))
    assert merged["accuracy"] == swa["accuracy"] and merged["loss"] == pytest.approx(swa["loss"], abs=1e-6)


def test_a_merge_needs_the_base_model(base_and_members):
    _, members = base_and_members
    with pytest.raises(ValueError, match="needs the base model"):
        MemberStack(members, CPU).parameters(Merge("ties", {"scale": 1.0, "density": 0.5}))
    wrong = {name: tensor for name, tensor in members[0].items() if name != "classifier.bias"}
    with pytest.raises(ValueError, match="base model does not have the same tensors"):
        MemberStack(members, CPU, base=wrong)


def test_history_columns_name_the_hyperparameters(merge_objective):
    result = METHODS["ties"](FusionContext(merge_objective, {key: SETTINGS[key] for key in DECLARED["ties"]}, 0))
    assert isinstance(result.tables["history"], pd.DataFrame)
    assert {"density", "scale", "loss", "accuracy", "chosen"} <= set(result.tables["history"].columns)
