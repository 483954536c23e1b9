"""Baselines outside the member fusions: the grid, the best-checkpoint fine-tune and the oracle subset."""

import math

import pytest
import torch

from bomf.fuse.baselines import best_run, candidate_subsets, grid_points, oracle_subset, train_keeping_best
from bomf.fuse.fusion import FusionObjective, MemberStack, uniform
from bomf.metrics import ranking_key
from bomf.records import BestCheckpointRun
from bomf.tasks.models import load_tokenizer
from bomf.tasks.readers import read_glue_tsv
from bomf.tasks.registry import GLUE_TASKS
from bomf.tasks.sequence import SequenceData, load_classifier
from conftest import GLUE_DIR

RTE = GLUE_TASKS["rte"]
CPU = torch.device("cpu")
OPTIM = {"weight_decay": 0.1, "warmup_ratio": 0.2, "schedule": "linear", "adam_eps": 1e-6,
         "adam_betas": [0.9, 0.98], "max_device_batch": 8, "eval_batch_size": 32}


@pytest.fixture(scope="module")
def rte(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train = read_glue_tsv(RTE, GLUE_DIR / "RTE" / "train.tsv")
    return {"train": SequenceData(train[:48], tokenizer, 64, RTE), "val": SequenceData(train[48:80], tokenizer, 64, RTE),
            "test": SequenceData(train[80:112], tokenizer, 64, RTE)}


def test_grid_points_cover_the_product_in_order():
    points = grid_points({"learning_rates": [1e-5, 1e-4], "batch_sizes": [8, 16, 32]})
    assert len(points) == 6
    assert points[0] == {"learning_rate": 1e-5, "batch_size": 8}
    assert points[-1] == {"learning_rate": 1e-4, "batch_size": 32}


@pytest.mark.parametrize("count, limit, expected, search", [
    (4, 15, 15, "every subset"),
    (4, 14, 10, "consecutive members"),
    (15, 1024, 120, "consecutive members"),
])
def test_candidate_subsets(count, limit, expected, search):
    subsets, described = candidate_subsets(count, limit)
    assert len(subsets) == expected and described == search
    assert len({tuple(s) for s in subsets}) == expected and all(s for s in subsets)
    if search == "consecutive members":
        assert all(s == list(range(s[0], s[-1] + 1)) for s in subsets)


def test_train_keeping_best_keeps_the_best_checkpoint_and_averages_the_member_steps(tiny_model_dir, rte):
    finetune = {"epochs": 2, "members": 3, "start_fraction": 0.5}
    params = {"learning_rate": 5e-4, "batch_size": 8}
    spec = {"source": str(tiny_model_dir), "proxy_frozen_embeddings": False}
    record, best_state = train_keeping_best(spec, RTE, rte, params, OPTIM, finetune, 1, 0, CPU)

    rows = record.trajectory
    # End of both epochs (6 and 12 steps) and the member steps 8, 10, 12 are scored.
    assert [row["step"] for row in rows] == [6, 8, 10, 12]
    best_row = max(rows, key=lambda r: ranking_key({"accuracy": r["val_accuracy"], "loss": r["val_loss"]},
                                                   "accuracy"))
    assert record.best_step == best_row["step"]
    assert record.best == {"loss": best_row["val_loss"], "accuracy": best_row["val_accuracy"]}
    # The kept state really is that checkpoint: scoring it again gives the recorded validation scores.
    model = load_classifier(str(tiny_model_dir), RTE)
    model.load_state_dict(best_state, strict=True)
    rescored, _ = rte["val"].evaluate(model, ["accuracy"], 32, CPU)
    assert rescored == pytest.approx(record.best, abs=1e-6)
    assert set(record.swa) == {"loss", "accuracy"} and math.isfinite(record.swa["loss"])
    assert record.frozen_layers == 1 and record.params == params


def test_best_run_skips_diverged_runs_and_breaks_ties_by_order():
    def run(accuracy, loss):
        return BestCheckpointRun({}, 0, 1, "accuracy", best_step=1, best={"accuracy": accuracy, "loss": loss}, swa={},
                                 seconds=0.0, trajectory=[])

    assert best_run([run(math.nan, math.nan), run(0.6, 0.7), run(0.6, 0.5), run(0.6, 0.5)]) == 2
    with pytest.raises(ValueError, match="every grid fine-tune diverged"):
        best_run([run(math.nan, math.nan)])


def test_oracle_subset_picks_the_best_test_subset(tiny_model_dir, rte):
    torch.manual_seed(0)
    base = load_classifier(str(tiny_model_dir), RTE).state_dict()
    members = []
    for seed in (1, 2, 3):
        generator = torch.Generator().manual_seed(seed)
        members.append({k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
                        for k, v in base.items()})
    stack = MemberStack(members, CPU)
    objective = FusionObjective(stack, load_classifier(str(tiny_model_dir), RTE), rte["test"], RTE, 32, CPU)
    weights, frame, search = oracle_subset(objective, max_subsets=7)

    assert search == "every subset" and len(frame) == 7 and frame["chosen"].sum() == 1
    chosen = frame[frame["chosen"]].iloc[0]
    assert all(ranking_key(chosen, "accuracy") >= ranking_key(row, "accuracy") for _, row in frame.iterrows())
    subset = [int(i) for i in chosen["members"].split()]
    assert torch.equal(weights, uniform(subset, 3))
    assert objective(weights)["accuracy"] == chosen["accuracy"]
