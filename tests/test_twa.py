"""TWA (trainable weight averaging, Li et al., ICLR 2023) on real members: the tiny BERT fine-tuned by
transformers.Trainer on the pipeline's MRPC train split, imported as a run's members. Its steps are checked
against the paper's own algorithm (Gram–Schmidt of the members, projected SGD in parameter space), its record
against the model rebuilt from it, and its place in the DAG against a dry run."""

import re
from dataclasses import dataclass

import pandas as pd
import pytest
import test_imported_runs
import torch
from conftest import write_tiny_config
from safetensors.torch import load_file
from test_pipeline import snakemake

from bomf import pipeline
from bomf.config import validate_config
from bomf.fuse.fusion import METHODS, TWA_MOMENTUM, FusionContext, FusionObjective, MemberStack, span_basis
from bomf.fuse.points import Span
from bomf.records import SelectedModel

CPU = torch.device("cpu")
TRAIN_SIZE = 64  # the tiny config's data.max_train: at twa_batch_size 64, one full-batch step per epoch
SETTINGS = {"twa_epochs": 3, "twa_lr": 1.0, "twa_batch_size": TRAIN_SIZE, "optim.max_device_batch": TRAIN_SIZE}
mrpc_trainer_run = test_imported_runs.mrpc_trainer_run  # the members' fixture: Trainer checkpoints of MRPC


@dataclass
class ImportedRun:
    config: dict
    data: object  # the run's data directory (train.jsonl, val.jsonl)
    members: object  # its members directory
    objective: FusionObjective  # the fuse job's: on validation
    train: object  # the training split, encoded as the fuse job encodes it

    def loss_on_train(self, point) -> float:
        """The training-split loss of a point, scored as the objective scores validation."""
        stack, model = self.objective.stack, self.objective.model
        return FusionObjective(stack, model, self.train, self.objective.task, 32, CPU)(point)["loss"]


@pytest.fixture(scope="module")
def run(mrpc_trainer_run, tiny_model_dir):
    checkpoints = str(mrpc_trainer_run / "trainer/checkpoint-*")
    config = validate_config(test_imported_runs.imported_config(tiny_model_dir, [checkpoints]))
    data = mrpc_trainer_run / "results/data/mrpc"
    members = mrpc_trainer_run / "twa/members"
    pipeline.import_members(config, "mrpc", "trainer-run", 0, data, members)
    spec = pipeline.Run(config, "mrpc", "trainer-run", 0)
    train = spec.splits(data, ("train",))["train"]
    assert len(train) == TRAIN_SIZE
    return ImportedRun(config, data, members, pipeline.member_objective(spec, data, members), train)


def twa(run: ImportedRun, seed: int = 0, **settings) -> Span:
    return METHODS["twa"](FusionContext(run.objective, {**SETTINGS, **settings}, seed, run.train)).point


def papers_projected_sgd(run: ImportedRun, steps: int, lr: float) -> torch.Tensor:
    """The paper's P-SGD (nblt/TWA, train_twa.py) in float64 parameter space, full-batch: the members
    orthonormalised by Gram–Schmidt (twice, for orthogonality among near-parallel members), the training loss's
    gradient projected on their span, SGD with momentum from their mean."""
    stack, model = run.objective.stack, run.objective.model
    members = stack.matrix.double()
    basis = members.clone()
    for row in range(len(basis)):
        for _ in range(2):
            basis[row] -= basis[:row].T @ (basis[:row] @ basis[row])
        basis[row] /= basis[row].norm()
    weights, velocity = members.mean(0), torch.zeros(members.shape[1], dtype=torch.float64)
    batch = run.train.batch(list(range(len(run.train))), CPU)
    for _ in range(steps):
        flat = weights.float().requires_grad_()
        loss = torch.func.functional_call(model, stack.state(flat), kwargs=batch).loss
        (gradient,) = torch.autograd.grad(loss, flat)
        velocity = TWA_MOMENTUM * velocity + basis.T @ (basis @ gradient.double())
        weights = weights - lr * velocity
    return weights


def test_twa_takes_the_papers_projected_sgd_steps_on_the_training_loss(run):
    """Known answer: three full-batch steps land where the paper's algorithm, run independently in parameter
    space, lands; the point leaves the simplex and lowers the training loss below the SWA start's."""
    point = twa(run)
    expected = papers_projected_sgd(run, steps=SETTINGS["twa_epochs"], lr=SETTINGS["twa_lr"])
    stack = run.objective.stack
    swa = stack.matrix.double().mean(0)
    got = stack.combine(point.coefficients).double()
    moved = (expected - swa).norm()
    assert moved > 0.1  # the steps went somewhere
    assert (got - expected).norm() <= 1e-3 * moved  # float32 mixing rounds: 3e-5 measured
    coefficients = point.coefficients
    assert coefficients.min() < 0 and coefficients.max() > 1  # off the simplex, as the loss asks
    uniform = torch.full((len(stack),), 1 / len(stack), dtype=torch.float64)
    assert run.loss_on_train(point) < run.loss_on_train(uniform) - 1e-3


def test_twa_is_deterministic_and_accumulates_chunks_to_the_whole_batchs_steps(run):
    settings = {"twa_epochs": 1, "twa_batch_size": 16}  # four steps
    first = twa(run, **settings, **{"optim.max_device_batch": 16})
    assert torch.equal(twa(run, **settings, **{"optim.max_device_batch": 16}).coefficients, first.coefficients)
    chunked = twa(run, **settings, **{"optim.max_device_batch": 5})
    assert torch.allclose(chunked.coefficients, first.coefficients, rtol=1e-4, atol=1e-5)


def test_the_span_basis_is_orthonormal_and_drops_a_dependent_member(run):
    members = [load_file(str(path)) for path in sorted(run.members.glob("member*.safetensors"))]
    for states, rank in ((members, len(members)), ([*members, members[1]], len(members))):
        matrix = MemberStack(states, CPU).matrix.double()
        gram = matrix @ matrix.T
        basis = span_basis(gram)
        assert basis.shape == (len(states), rank)
        torch.testing.assert_close(basis.T @ gram @ basis, torch.eye(rank, dtype=torch.float64), rtol=0, atol=1e-6)


def test_twa_through_the_fuse_job_is_recorded_and_rebuilt(run, tmp_path):
    """pipeline.fuse reads the training split for twa and records span coefficients; the model a reader
    rebuilds from the record is Σ αᵢθᵢ of the member files and scores the recorded validation."""
    config = {**run.config, "fusion": {**run.config["fusion"], "twa_epochs": 2, "twa_lr": 1.0}}
    out = tmp_path / "fusion/twa"
    pipeline.fuse(config, "mrpc", "trainer-run", 0, run.data, run.members, "twa", out, tmp_path / "twa.journal.jsonl")
    selected = SelectedModel.read(out)
    assert selected.weights is None and len(selected.span) == len(run.objective.stack)
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss"] and len(history) == 2
    model, _ = pipeline.selected_model(pipeline.Run(config, "mrpc", "trainer-run", 0), run.members, out)
    files = sorted(run.members.glob("member*.safetensors"))
    expected = {name: sum(alpha * load_file(str(f))[name].double() for alpha, f in zip(selected.span, files))
                for name in load_file(str(files[0]))}
    state = model.state_dict()
    for name, tensor in expected.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(state[name].double(), tensor, rtol=1e-5, atol=1e-5)
    scores, _ = run.objective.val.evaluate(model, list(run.objective.task.metrics), 32, CPU)
    assert scores == pytest.approx(selected.validation, abs=1e-6)


def test_only_twas_fuse_job_depends_on_the_training_split(tmp_path, tiny_model_dir):
    config = write_tiny_config(tmp_path / "config.yaml", tiny_model_dir, fusion={"methods": ["swa", "twa"]},
                                export={"methods": ["swa"]})
    run = "results/rte/tiny/seed0/fusion"
    result = snakemake(tmp_path, config, "-n", "--forceall", f"{run}/twa", f"{run}/swa")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = re.findall(r"rule fuse:\n    input: (.*)\n    output: (\S+)", result.stdout)
    inputs = {output.rsplit("/", 1)[1]: job_inputs.split(", ") for job_inputs, output in jobs}
    assert "results/data/rte/train.jsonl" in inputs["twa"]
    assert "results/data/rte/train.jsonl" not in inputs["swa"] and "results/data/rte/val.jsonl" in inputs["swa"]
