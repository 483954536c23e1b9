"""Fine-tuning, evaluation, layer freezing and member files, on the tiny BERT with real RTE / STS-B examples."""

import copy
import math
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from bomf.device import gradient_scaler
from bomf.io import read_json
from bomf.records import MemberManifest
from bomf.runtime import seed_everything
from bomf.settings import Hyperparameters, OptimConfig, hyperparameters, member_steps
from bomf.tasks.models import encoder_layers, freeze_lower_layers, load_tokenizer, trainable_fraction
from bomf.tasks.readers import read_glue_tsv
from bomf.tasks.registry import GLUE_TASKS
from bomf.tasks.sequence import SequenceData, load_classifier
from bomf.train.members import (MemberIntegrityError, load_members, load_stored, member_path, run_finetune, save_member,
                                sha256)
from bomf.train.training import _accumulate_gradients, fine_tune, warmup_schedule
from conftest import GLUE_DIR

RTE, STSB = GLUE_TASKS["rte"], GLUE_TASKS["stsb"]
CPU = torch.device("cpu")
OPTIM = OptimConfig("linear", 1e-6, (0.9, 0.98), 8, 16)
HP = Hyperparameters(learning_rate=1e-3, batch_size=8, warmup_ratio=0.1, weight_decay=0.01)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def rte(tokenizer):
    train = read_glue_tsv(RTE, GLUE_DIR / "RTE" / "train.tsv")[:32]
    val = read_glue_tsv(RTE, GLUE_DIR / "RTE" / "dev.tsv")[:16]
    return {"train": SequenceData(train, tokenizer, 64, RTE), "val": SequenceData(val, tokenizer, 64, RTE)}


@pytest.fixture(scope="module")
def stsb(tokenizer):
    return SequenceData(read_glue_tsv(STSB, GLUE_DIR / "STS-B" / "dev.tsv")[:20], tokenizer, 64, STSB)


def classifier(source, seed: int = 0, task=RTE):
    seed_everything(seed)
    return load_classifier(str(source), task)


def no_dropout_classifier(source):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(
        str(source), num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def without_seconds(trajectory):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in trajectory]


# --------------------------------------------------------------------------- member_steps


def test_member_steps_spacing():
    assert member_steps(100, 5, 0.5) == [60, 70, 80, 90, 100]
    assert member_steps(20, 3, 0.5) == [14, 17, 20]
    assert member_steps(8, 3, 0.5) == [6, 7, 8]
    assert member_steps(10, 2, 0.0) == [5, 10]
    for total, count in [(100, 5), (37, 4), (8, 4), (1000, 7)]:
        steps = member_steps(total, count, 0.5)
        assert steps[-1] == total and len(steps) == count
        assert all(a < b for a, b in zip(steps, steps[1:]))
        assert steps[0] > total / 2
        gaps = np.diff([total / 2, *steps])
        assert gaps.max() - gaps.min() <= 1  # even, up to rounding to whole steps


@pytest.mark.parametrize("total,count", [(4, 5), (2, 3), (0, 1), (5, 4)])
def test_member_steps_too_few_steps(total, count):
    with pytest.raises(ValueError, match="members"):
        member_steps(total, count, 0.5)


# --------------------------------------------------------------------------- layer freezing


@pytest.mark.parametrize("embeddings", [False, True])
@pytest.mark.parametrize("count", [0, 1, 2])
def test_freeze_lower_layers(tiny_model_dir, count, embeddings):
    model = classifier(tiny_model_dir)
    layers = encoder_layers(model)
    assert len(layers) == 2 and layers is model.bert.encoder.layer
    freeze_lower_layers(model, count, embeddings=embeddings)
    for index, layer in enumerate(layers):
        assert all(p.requires_grad == (index >= count) for p in layer.parameters()), index
    # Word, position and token-type embeddings and their LayerNorm: frozen with the layers above them only.
    assert all(p.requires_grad == (not embeddings or count == 0) for p in model.bert.embeddings.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    frozen = [p for p in model.parameters() if not p.requires_grad]
    total = sum(p.numel() for p in model.parameters())
    assert trainable_fraction(model) == pytest.approx(1 - sum(p.numel() for p in frozen) / total)


def test_a_proxy_with_frozen_embeddings_stops_the_backward_pass_at_its_lowest_trained_layer(tiny_model_dir, rte):
    """With the embeddings and layer 0 frozen, no gradient flows below layer 1: layer 0 is never differentiated
    (its output does not require grad), which is where the proxy's time goes."""
    model = classifier(tiny_model_dir)
    freeze_lower_layers(model, 1, embeddings=True)
    reached = []
    model.bert.encoder.layer[0].register_forward_hook(lambda module, args, out: reached.append(out[0].requires_grad))
    model.bert.encoder.layer[1].register_forward_hook(lambda module, args, out: reached.append(out[0].requires_grad))
    model(**rte["train"].batch([0, 1, 2], CPU)).loss.backward()
    assert reached == [False, True]
    assert all(p.grad is None for p in model.bert.embeddings.parameters())


def test_freeze_more_layers_than_the_model_has(tiny_model_dir):
    model = classifier(tiny_model_dir)
    with pytest.raises(ValueError, match="3 layers"):
        freeze_lower_layers(model, 3, embeddings=False)
    assert trainable_fraction(model) == 1.0


def test_frozen_layers_do_not_change_in_training(tiny_model_dir, rte):
    model = classifier(tiny_model_dir)
    freeze_lower_layers(model, 1, embeddings=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fine_tune(model, rte["train"], rte["val"], RTE, HP, OPTIM, 1, 0, CPU)
    for name, param in model.named_parameters():
        if name.startswith("bert.encoder.layer.0."):
            assert torch.equal(param, before[name]), name
    assert not torch.equal(model.bert.encoder.layer[1].output.dense.weight,
                           before["bert.encoder.layer.1.output.dense.weight"])
    assert not torch.equal(model.classifier.weight, before["classifier.weight"])


# --------------------------------------------------------------------------- SequenceData and evaluate


def test_encoded_pads_each_batch_to_its_own_longest(rte, stsb):
    data = rte["train"]
    lengths = [len(ids) for ids in data.features["input_ids"]]
    assert max(lengths) <= 64 and max(lengths) == 64  # RTE premises are long: truncated to max_length
    short = sorted(range(len(data)), key=lengths.__getitem__)[:4]
    long = sorted(range(len(data)), key=lengths.__getitem__)[-4:]
    for indices in (short, long, [0, 5, 9]):
        batch = data.batch(indices, CPU)
        width = max(lengths[i] for i in indices)
        assert batch["input_ids"].shape == (len(indices), width)
        assert batch["attention_mask"].sum(1).tolist() == [lengths[i] for i in indices]
        assert torch.equal(batch["labels"], data.labels[indices])
        assert batch["labels"].dtype == torch.long
    assert data.batch(short, CPU)["input_ids"].shape[1] < data.batch(long, CPU)["input_ids"].shape[1]
    assert "token_type_ids" in data.batch(short, CPU)  # sentence pairs
    assert stsb.labels.dtype == torch.float32 and stsb.labels[0].item() == pytest.approx(5.0)
    assert len(data) == 32 and set(data.labels.tolist()) == {0, 1}


def test_encoded_single_sentences(tokenizer):
    sst2 = GLUE_TASKS["sst2"]
    examples = [{"text": ["a fine film"], "label": 1}, {"text": ["dull , lifeless and far too long"], "label": 0}]
    data = SequenceData(examples, tokenizer, 64, sst2)
    batch = data.batch([0, 1], CPU)
    assert batch["input_ids"].shape == (2, max(len(ids) for ids in data.features["input_ids"]))
    assert batch["token_type_ids"].sum() == 0  # one segment only
    assert batch["input_ids"][0, 0] == tokenizer.cls_token_id


@pytest.mark.parametrize("side", ["right", "left"])
def test_batches_are_padded_as_the_tokenizer_pads(tokenizer, side):
    """SequenceData collates with numpy (pad_features), to exactly what tokenizer.pad returns, on its side."""
    padding = copy.deepcopy(tokenizer)
    padding.padding_side = side
    data = SequenceData(read_glue_tsv(RTE, GLUE_DIR / "RTE" / "train.tsv")[:12], padding, 64, RTE)
    for indices in ([0, 5, 9], [3], list(range(12))):
        expected = padding.pad([{key: values[i] for key, values in data.features.items()} for i in indices],
                               return_tensors="pt")
        batch = data.collate(indices)
        assert set(batch) == {*expected, "labels"}
        assert all(torch.equal(batch[key], expected[key]) for key in expected), indices


def test_evaluate_classification(tiny_model_dir, rte):
    model = classifier(tiny_model_dir).train()
    val = rte["val"]
    scores, predictions = val.evaluate(model, ["accuracy"], 16, CPU)
    assert model.training  # mode restored
    assert set(scores) == {"loss", "accuracy"}
    assert predictions.shape == (16,) and set(np.unique(predictions)) <= {0, 1}
    assert scores["accuracy"] == pytest.approx(float(np.mean(predictions == val.labels.numpy())))
    model.eval()
    with torch.no_grad():
        logits = model(**val.batch(list(range(16)), CPU)).logits
    assert np.array_equal(predictions, logits.argmax(-1).numpy())
    expected_loss = torch.nn.functional.cross_entropy(logits, val.labels).item()
    assert scores["loss"] == pytest.approx(expected_loss, rel=1e-5)
    # The mean loss does not depend on the evaluation batch size (uneven last batch included).
    small, small_predictions = val.evaluate(model, ["accuracy"], 5, CPU)
    assert small["loss"] == pytest.approx(scores["loss"], rel=1e-5)
    assert np.array_equal(small_predictions, predictions)


def test_evaluate_regression(tiny_model_dir, stsb):
    model = classifier(tiny_model_dir, task=STSB)
    scores, predictions = stsb.evaluate(model, ["pearson", "spearman"], 8, CPU)
    assert set(scores) == {"loss", "pearson", "spearman"}
    assert predictions.shape == (20,) and predictions.dtype == np.float32
    labels = stsb.labels.numpy()
    assert scores["loss"] == pytest.approx(float(np.mean((predictions - labels) ** 2)), rel=1e-5)
    assert scores["pearson"] == pytest.approx(float(np.corrcoef(predictions, labels)[0, 1]), abs=1e-6)
    assert -1 <= scores["spearman"] <= 1


# --------------------------------------------------------------------------- fine_tune


def test_hyperparameters_from_config_and_search():
    optim = {"warmup_ratio": 0.06, "weight_decay": 0.1}
    hp = hyperparameters(optim, {"learning_rate": "2e-5", "batch_size": 16.0})
    assert hp == Hyperparameters(2e-5, 16, 0.06, 0.1) and type(hp.batch_size) is int
    assert hyperparameters(optim, {"learning_rate": 1e-4, "batch_size": 8, "warmup_ratio": 0.0}).warmup_ratio == 0.0


def test_fine_tune_rows_and_callback(tiny_model_dir, rte):
    model = classifier(tiny_model_dir)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    calls = []

    def on_eval(index, step, callback_model, row):
        assert callback_model is model
        calls.append((index, step, dict(row), callback_model.classifier.weight.detach().clone()))

    trajectory = fine_tune(model, rte["train"], rte["val"], RTE, HP, OPTIM, 2, 0, CPU, eval_steps=[4, 6, 8],
                           on_eval=on_eval)
    assert [row["step"] for row in trajectory] == [4, 6, 8]
    assert [row["epoch"] for row in trajectory] == [0, 1, 1]
    assert [row["epoch_progress"] for row in trajectory] == [1.0, 1.5, 2.0]
    for row in trajectory:
        assert set(row) == {"step", "epoch", "epoch_progress", "train_loss", "val_loss", "val_accuracy", "seconds"}
        assert all(math.isfinite(row[k]) for k in ("train_loss", "val_loss", "val_accuracy"))
        assert 0 <= row["val_accuracy"] <= 1
    assert [(i, s) for i, s, _, _ in calls] == [(0, 4), (1, 6), (2, 8)]
    assert [r for _, _, r, _ in calls] == trajectory
    assert not torch.equal(calls[0][3], calls[2][3])  # the callback saw the model at its step
    assert torch.equal(calls[2][3], model.classifier.weight)
    assert not torch.equal(before["classifier.weight"], model.state_dict()["classifier.weight"])
    # The trajectory's validation scores are those of the model at that step.
    final, _ = rte["val"].evaluate(model, ["accuracy"], 16, CPU)
    assert final["loss"] == pytest.approx(trajectory[-1]["val_loss"], rel=1e-6)


def test_fine_tune_default_evaluates_every_epoch(tiny_model_dir, rte):
    trajectory = fine_tune(classifier(tiny_model_dir), rte["train"], rte["val"], RTE,
                           Hyperparameters(1e-3, 12, 0.0, 0.0), OPTIM, 2, 0, CPU)
    assert [row["step"] for row in trajectory] == [3, 6]  # 32 examples, batch 12: 3 steps per epoch


def test_fine_tune_is_bit_reproducible_on_cpu(tiny_model_dir, rte):
    runs = []
    for _ in range(2):
        model = classifier(tiny_model_dir, seed=7)  # dropout on: its RNG is seeded too
        trajectory = fine_tune(model, rte["train"], rte["val"], RTE, HP, OPTIM, 2, 7, CPU, eval_steps=[4, 8])
        runs.append((without_seconds(trajectory), model.state_dict()))
    (first, state_a), (second, state_b) = runs
    assert first == second
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    other = classifier(tiny_model_dir, seed=8)
    fine_tune(other, rte["train"], rte["val"], RTE, HP, OPTIM, 2, 8, CPU, eval_steps=[4, 8])
    assert not torch.equal(other.state_dict()["classifier.weight"], state_a["classifier.weight"])


def test_fine_tune_stops_on_divergence(tiny_model_dir, rte):
    calls = []
    trajectory = fine_tune(classifier(tiny_model_dir), rte["train"], rte["val"], RTE,
                           Hyperparameters(1e8, 8, 0.0, 0.0), OPTIM, 2, 0, CPU, eval_steps=[4, 6, 8],
                           on_eval=lambda *args: calls.append(args[:2]))
    last = trajectory[-1]
    assert last["step"] < 8 and math.isnan(last["val_loss"]) and math.isnan(last["val_accuracy"])
    assert math.isnan(last["train_loss"])
    assert len(calls) == len(trajectory) - 1  # no member is saved from a diverged model


@pytest.mark.parametrize("max_device_batch", [4, 3])
def test_gradient_accumulation_matches_one_full_batch(tiny_model_dir, tokenizer, rte, max_device_batch):
    data = SequenceData(read_glue_tsv(RTE, GLUE_DIR / "RTE" / "train.tsv")[:8], tokenizer, 64, RTE)
    hp = Hyperparameters(1e-3, 8, 0.0, 0.01)
    # Gradients of one optimizer batch, in one chunk vs several.
    grads = []
    for chunk in (8, max_device_batch):
        model = no_dropout_classifier(tiny_model_dir).train()
        chunks = [list(range(start, min(start + chunk, 8))) for start in range(0, 8, chunk)]
        loss = _accumulate_gradients(model, data.batches(chunks, CPU), [len(c) for c in chunks], CPU, "fp32",
                                     gradient_scaler(CPU, "fp32"))
        grads.append((loss, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_full, grad_full), (loss_chunked, grad_chunked) = grads
    assert loss_chunked == pytest.approx(loss_full, rel=1e-5)
    for name in grad_full:
        assert torch.allclose(grad_chunked[name], grad_full[name], rtol=1e-4, atol=1e-7), name
    # And the parameters after one optimizer step of fine_tune.
    states = []
    for chunk in (8, max_device_batch):
        model = no_dropout_classifier(tiny_model_dir)
        optim = OptimConfig("linear", 1e-6, (0.9, 0.98), chunk, 16)
        trajectory = fine_tune(model, data, rte["val"], RTE, hp, optim, 1, 0, CPU)
        assert [row["step"] for row in trajectory] == [1]
        states.append(model.state_dict())
    initial = no_dropout_classifier(tiny_model_dir).state_dict()
    moved = max(float((states[0][n] - initial[n]).abs().max()) for n in initial)
    assert moved > 1e-4  # the step did something
    for name in states[0]:
        assert torch.allclose(states[1][name], states[0][name], rtol=1e-5, atol=1e-6), name


# --------------------------------------------------------------------------- member files


def _members(directory, source, count=3):
    """``count`` member files from differently perturbed copies of the tiny model, with a manifest."""
    model = classifier(source)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    states, checksums = [], {}
    for index in range(count):
        generator = torch.Generator().manual_seed(index)
        model.load_state_dict({k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in base.items()})
        path = member_path(directory, index)
        checksums[path.name] = save_member(model, path)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    MemberManifest(checksums, steps=list(range(count)), hyperparameters={}, seed=0, source=str(source), stored={}
                   ).write(directory)
    return states, checksums


def test_members_round_trip(tmp_path, tiny_model_dir):
    states, checksums = _members(tmp_path, tiny_model_dir)
    assert list(checksums) == ["member00.safetensors", "member01.safetensors", "member02.safetensors"]
    assert all(sha256(tmp_path / name) == digest for name, digest in checksums.items())
    loaded = load_members(tmp_path)
    assert len(loaded) == 3
    for state, expected in zip(loaded, states):
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert not torch.equal(loaded[0]["classifier.weight"], loaded[1]["classifier.weight"])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_truncated_member_raises(tmp_path, tiny_model_dir):
    _members(tmp_path, tiny_model_dir)
    path = member_path(tmp_path, 1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MemberIntegrityError) as err:
        list(load_members(tmp_path))  # each member is verified when it is read
    assert str(path) in str(err.value) and "checksum" in str(err.value)


def test_corrupted_member_raises(tmp_path, tiny_model_dir):
    _members(tmp_path, tiny_model_dir)
    path = member_path(tmp_path, 2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    path.write_bytes(bytes(data))
    with pytest.raises(MemberIntegrityError) as err:
        list(load_members(tmp_path))  # each member is verified when it is read
    assert str(path) in str(err.value)


def test_missing_member_raises(tmp_path, tiny_model_dir):
    _members(tmp_path, tiny_model_dir)
    member_path(tmp_path, 0).unlink()
    with pytest.raises(MemberIntegrityError, match="missing") as err:
        load_members(tmp_path)
    assert str(member_path(tmp_path, 0)) in str(err.value)


def test_run_finetune_saves_verified_members(tmp_path, tiny_model_dir, rte):
    finetune = {"epochs": 2, "members": 3, "start_fraction": 0.5, "ema_decay": 0.5}
    optim = {"schedule": "linear", "adam_eps": 1e-6, "adam_betas": [0.9, 0.98], "max_device_batch": 8,
             "eval_batch_size": 16}
    frame = run_finetune({"source": str(tiny_model_dir)}, RTE, rte, HP, optim, finetune, 0, CPU, tmp_path)
    manifest = read_json(tmp_path / "members.json")
    assert manifest["steps"] == [6, 7, 8] and list(frame["step"]) == [6, 7, 8]
    assert list(frame["member"]) == list(manifest["members"])
    assert (tmp_path / "trajectory.csv").is_file()
    loaded = load_members(tmp_path)
    assert len(loaded) == 3
    assert not torch.equal(loaded[0]["classifier.weight"], loaded[2]["classifier.weight"])
    # The last member is the model at the end of training: it reproduces the last validation loss.
    model = classifier(tiny_model_dir)
    model.load_state_dict(loaded[2])
    scores, _ = rte["val"].evaluate(model, ["accuracy"], 16, CPU)
    assert scores["loss"] == pytest.approx(frame["val_loss"].iloc[-1], rel=1e-6)
    # The moving average starts at the first member (step 6) and is updated after steps 7 and 8, which are
    # the other members: 0.5² θ₆ + 0.5·0.5 θ₇ + 0.5 θ₈.
    average = load_stored(tmp_path)["ema"]
    assert average.keys() == loaded[0].keys()
    for name, tensor in average.items():
        if tensor.is_floating_point():
            expected = 0.25 * loaded[0][name] + 0.25 * loaded[1][name] + 0.5 * loaded[2][name]
            torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6, msg=name)
        else:
            assert torch.equal(tensor, loaded[2][name])


@pytest.mark.parametrize("schedule,theirs", [("linear", "linear"), ("cosine", "cosine"),
                                             ("constant", "constant_with_warmup")])
@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 10), (7, 7)])
def test_warmup_schedule_matches_transformers(schedule, theirs, warmup, total):
    """Our schedule gives exactly the learning rates of transformers' get_scheduler at every step."""
    from transformers import get_scheduler

    def rates(make):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler, seen = make(optimizer), []
        for _ in range(total + 2):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return seen

    ours = rates(lambda optimizer: warmup_schedule(optimizer, schedule, warmup, total))
    reference = rates(lambda optimizer: get_scheduler(theirs, optimizer, num_warmup_steps=warmup,
                                                      num_training_steps=total))
    assert ours == reference


def test_members_are_read_once_each_and_one_at_a_time_into_the_stack(tmp_path, tiny_model_dir, monkeypatch):
    """Stacking N members reads each file once (its checksum from the same bytes) and never holds a list of N
    states beside the stack: when a member is read, at most the one before it is still alive."""
    from bomf.fuse.fusion import MemberStack
    from bomf.train.members import Members

    states, _ = _members(tmp_path, tiny_model_dir)
    reads, alive, peak = [], weakref.WeakSet(), []
    read_bytes, take = Path.read_bytes, Members.__getitem__

    class State(dict):  # a dict cannot be weakly referenced; a subclass can (counted by identity)
        __hash__, __eq__ = object.__hash__, object.__eq__

    def tracked(self, index):
        peak.append(len(alive))
        state = State(take(self, index))
        alive.add(state)
        return state

    monkeypatch.setattr(Path, "read_bytes", lambda path: reads.append(path.name) or read_bytes(path))
    monkeypatch.setattr(Members, "__getitem__", tracked)
    stack = MemberStack(load_members(tmp_path), CPU)
    assert sorted(reads) == [f"member{i:02d}.safetensors" for i in range(3)]
    assert len(peak) == 3 and max(peak) <= 1
    for row, state in enumerate(states):
        stacked = stack.state(stack.matrix[row])
        assert stacked.keys() == state.keys() and all(torch.equal(stacked[k], t) for k, t in state.items())
