"""The task-vector merges (task arithmetic, TIES, DARE): their maths on hand-checked vectors, and as fusion
methods that choose their hyperparameters on validation, journaled and rebuilt from their record."""

import json
import math

import pandas as pd
import pytest
import torch
from conftest import tiny_config

from bomf.config import validate_config
from bomf.fuse.fusion import METHODS, FusionContext, FusionObjective, MemberStack
from bomf.fuse.methods import SETTINGS as DECLARED
from bomf.fuse.journal import JournaledObjective
from bomf.fuse.merging import MERGES, Merge
from bomf.fuse.points import point_of
from bomf.records import HpoChoice, SelectedModel
from test_fusion import CPU, RTE, make_model, perturbed

# θ₀ away from zero: a merge that takes θᵢ for its task vector θᵢ − θ₀ gives other answers.
BASE = torch.tensor([0.5, -1.0, 2.0])
MATRIX = BASE + torch.tensor([[1.0, -2.0, 0.125], [3.0, 1.0, -0.125]])  # exact in float32


def test_ties_trims_elects_a_sign_and_averages_the_agreeing_members():
    # Elected signs (+, -, 0): the first parameter averages both members, the second keeps only the member
    # that agrees with the sign, the third has no elected sign and stays at the base.
    for density in (1.0, 2 / 3):  # keeping the two largest magnitudes of three drops only the ±0.125
        merged = MERGES["ties"](MATRIX, BASE, density=density)
        torch.testing.assert_close(merged, torch.tensor([2.0, -2.0, 0.0]))
    trimmed = MERGES["ties"](MATRIX, BASE, density=1 / 3)  # each member keeps only its largest entry
    torch.testing.assert_close(trimmed, torch.tensor([3.0, -2.0, 0.0]))
    merged = Merge("ties", {"scale": 2.0, "density": 1 / 3}).vector(MATRIX, BASE, torch.empty(3))
    torch.testing.assert_close(merged, BASE + 2 * torch.tensor([3.0, -2.0, 0.0]))


def test_ties_elects_the_sign_of_the_trimmed_task_vectors():
    # The second parameter: +0.5, +0.5, -0.375 sum to +0.625, but trimming to each member's largest entry
    # keeps only the -0.375 (the other two are small beside their members' 4 and 2): the elected sign is minus.
    # Signs elected before trimming would leave no member agreeing there: 0 instead of -0.375.
    task_vectors = torch.tensor([[4.0, 0.5, 0.0], [0.0, 0.5, 2.0], [0.125, -0.375, 0.25]])
    trimmed = MERGES["ties"](BASE + task_vectors, BASE, density=1 / 3)
    torch.testing.assert_close(trimmed, torch.tensor([4.0, -0.375, 2.0]))
    untrimmed = MERGES["ties"](BASE + task_vectors, BASE, density=1.0)  # +: the mean of the two agreeing 0.5
    torch.testing.assert_close(untrimmed, torch.tensor([4.125 / 2, 0.5, 2.25 / 2]))


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


def test_dare_keeps_each_entry_with_probability_one_minus_p_rescaled_by_its_inverse():
    # Task vectors 1, 2 and 4 everywhere, around a non-zero θ₀: each merged entry is (the sum of the kept
    # members' values) / (3 × 0.1), so N(1 − p)·τ is an integer whose bits say which members kept the entry.
    size, drop_rate = 200_000, 0.9
    base = torch.linspace(-1.0, 1.0, size)
    matrix = base + torch.tensor([[1.0], [2.0], [4.0]])
    merged = Merge("dare", {"scale": 1.0, "drop_rate": drop_rate, "seed": 0}).vector(matrix, base, torch.empty(size))
    sums = (merged - base) * 3 * (1 - drop_rate)
    kept = sums.round()
    torch.testing.assert_close(sums, kept, atol=1e-4, rtol=0)
    assert kept.min() >= 0 and kept.max() <= 7
    for member in range(3):  # each member keeps about 10% of its entries (sd 0.07 points), independently
        assert float((kept.long() >> member & 1).float().mean()) == pytest.approx(1 - drop_rate, abs=0.005)
    assert float((kept == 7).float().mean()) == pytest.approx((1 - drop_rate) ** 3, abs=0.0005)
    # Unbiased: the mean task vector is 7/3 (each entry's sd is 21 ** 0.5, the mean's 0.01).
    assert float((merged - base).mean()) == pytest.approx(7 / 3, abs=0.05)


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


def test_the_base_of_the_merges_is_the_state_stage_2_started_from(tmp_path, tiny_model_dir, monkeypatch):
    """θ₀ as the fusion jobs load it, tensor for tensor against the model stage 2's own fine-tune started from:
    the pretrained body, and the head its seed drew (seed 1, so neither a fixed seed nor another draws it)."""
    from bomf import pipeline
    from bomf.tasks.models import member_state
    from bomf.train import members

    config = validate_config(tiny_config(tiny_model_dir, tasks=["rte"], seeds=[1]))
    started, fine_tune = {}, members.fine_tune

    def starting_state(model, *args, **kwargs):  # the real fine-tune, its starting state recorded on the way
        started.update(member_state(model))
        return fine_tune(model, *args, **kwargs)

    monkeypatch.setattr(members, "fine_tune", starting_state)
    data, run = tmp_path / "data", tmp_path / "run"
    pipeline.prepare_data(config, "rte", data)
    HpoChoice({"learning_rate": 1e-3, "batch_size": 16}, score=math.nan, loss=math.nan, metric="accuracy", trials=0,
              warning="").write(run / "hpo/best.json")
    pipeline.finetune(config, "rte", "tiny", 1, data, run / "hpo/best.json", run / "members", run / "members.resume",
                      checkpoint_seconds=1800)
    stack, _ = pipeline.member_stack(pipeline.Run(config, "rte", "tiny", 1), run / "members")
    assert torch.equal(stack.base, torch.cat([started[name].reshape(-1) for name in stack.float_names]))
    assert not torch.equal(stack.matrix[0], stack.base)  # the members moved away from it
