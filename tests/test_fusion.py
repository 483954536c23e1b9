"""Fusion maths (θ(w) = Σ wᵢθᵢ on the simplex) and the registered fusion methods, on the tiny BERT."""

import math

import pandas as pd
import pytest
import torch

from bomf.fuse.fusion import METHODS, FusionContext, FusionObjective, FusionResult, MemberStack, check_simplex, one_hot
from bomf.fuse.mobo import sobol_simplex, weight_columns
from bomf.metrics import ranking_key
from bomf.tasks.registry import GLUE_TASKS
from bomf.tasks.sequence import load_classifier

RTE = GLUE_TASKS["rte"]
CPU = torch.device("cpu")
BUFFER = "bert.member_ids"  # an integer buffer added to the model, so the state dicts hold one


def make_model(source) -> torch.nn.Module:
    torch.manual_seed(0)
    model = load_classifier(str(source), RTE)
    model.base_model.register_buffer("member_ids", torch.arange(7, dtype=torch.long))
    return model


def perturbed(state: dict, seed: int, scale: float = 0.05) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {name: (t + scale * torch.randn(t.shape, generator=generator)) if t.is_floating_point() else t.clone()
            for name, t in state.items()}


@pytest.fixture(scope="module")
def members(tiny_model_dir):
    base = make_model(tiny_model_dir).state_dict()
    assert BUFFER in base and not base[BUFFER].is_floating_point()
    return [perturbed(base, seed) for seed in (1, 2, 3)]


@pytest.fixture(scope="module")
def stack(members):
    return MemberStack(members, CPU)


@pytest.fixture(scope="module")
def objective(stack, tiny_model_dir, rte_val):
    return FusionObjective(stack, make_model(tiny_model_dir), rte_val, RTE, 8, CPU)


# --------------------------------------------------------------------------- MemberStack


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_one_hot_mix_reproduces_each_member_bit_exactly(stack, members, dtype):
    for index, member in enumerate(members):
        mixed = stack.mix(one_hot(index, len(members)).to(dtype))
        assert mixed.keys() == member.keys()
        for name, tensor in member.items():
            assert mixed[name].dtype == tensor.dtype and torch.equal(mixed[name], tensor), (index, name)


def test_one_hot_load_into_a_real_model_is_bit_exact(stack, members, tiny_model_dir, rte_val):
    model = make_model(tiny_model_dir).eval()
    reference = make_model(tiny_model_dir).eval()
    batch = rte_val.batch(list(range(len(rte_val))), CPU)
    for index, member in enumerate(members):
        stack.load_into(model, one_hot(index, len(members)))
        state = model.state_dict()
        assert state.keys() == member.keys()
        assert all(torch.equal(state[name], member[name]) for name in member), index
        reference.load_state_dict(member)
        with torch.no_grad():
            assert torch.equal(model(**batch).logits, reference(**batch).logits)


@pytest.mark.parametrize("weights", [[0.2, 0.5, 0.3], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.25, 0.75]])
def test_mix_is_the_weighted_sum(stack, members, weights):
    w = torch.tensor(weights, dtype=torch.float64)
    mixed = stack.mix(w)
    for name, tensor in members[0].items():
        if not tensor.is_floating_point():
            continue
        naive = sum(float(wi) * m[name] for wi, m in zip(w, members))
        assert mixed[name].shape == tensor.shape and mixed[name].dtype == torch.float32
        assert torch.allclose(mixed[name], naive, rtol=1e-5, atol=1e-6), name


def test_mix_of_sobol_points_and_load_into(stack, members, tiny_model_dir):
    model = make_model(tiny_model_dir)
    for w in sobol_simplex(3, 4, seed=5):
        stack.load_into(model, w)
        state = model.state_dict()
        for name, tensor in members[1].items():
            if tensor.is_floating_point():
                naive = sum(float(wi) * m[name] for wi, m in zip(w, members))
                assert torch.allclose(state[name], naive, rtol=1e-5, atol=1e-6), name


def test_non_floating_tensors_are_taken_unchanged(stack, members):
    mixed = stack.mix(torch.tensor([0.5, 0.25, 0.25]))
    assert mixed[BUFFER].dtype == torch.long
    assert torch.equal(mixed[BUFFER], torch.arange(7))
    assert BUFFER not in stack.float_names and BUFFER in stack.fixed


def test_non_floating_mismatch_raises(members):
    changed = dict(members[2])
    changed[BUFFER] = members[2][BUFFER] + 1
    with pytest.raises(ValueError, match="member_ids"):
        MemberStack([members[0], members[1], changed], CPU)


@pytest.mark.parametrize("weights", [
    [-0.5, 1.0, 0.5],  # negative, sums to 1
    [0.3, 0.3, 0.3],  # sum 0.9
    [0.5, 0.5, 0.5],  # sum 1.5
    [0.5, 0.5],  # wrong length
    [0.25, 0.25, 0.25, 0.25],  # wrong length, on a simplex
    [[0.2, 0.5, 0.3]],  # wrong shape
])
def test_weights_off_the_simplex_raise(stack, weights):
    with pytest.raises(ValueError, match="weights"):
        stack.mix(torch.tensor(weights, dtype=torch.float64))


def test_nan_weights_raise(stack):
    weights = torch.tensor([math.nan, 0.5, 0.5], dtype=torch.float64)
    try:
        stack.mix(weights)
    except ValueError:
        raised = True
    else:
        raised = False
    assert raised, ("PACKAGE BUG (bomf/fusion.py check_simplex): NaN fusion weights pass the simplex check "
                    "(NaN comparisons are False) and produce a NaN model; they must raise ValueError")


def test_check_simplex_tolerance():
    check_simplex(torch.tensor([0.5, 0.5 + 1e-9, -1e-9], dtype=torch.float64), 3)  # optimiser slack is fine
    with pytest.raises(ValueError):
        check_simplex(torch.tensor([0.5, 0.5 + 1e-4, 0.0], dtype=torch.float64), 3)


def test_members_with_different_tensors_raise(members):
    missing = {k: v for k, v in members[1].items() if k != "classifier.bias"}
    with pytest.raises(ValueError, match="member 1"):
        MemberStack([members[0], missing, members[2]], CPU)
    extra = {**members[2], "extra.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match="member 2"):
        MemberStack([members[0], members[1], extra], CPU)
    reshaped = {**members[1], "classifier.weight": members[1]["classifier.weight"].reshape(-1)}
    with pytest.raises(ValueError, match="member 1"):
        MemberStack([members[0], reshaped], CPU)


def test_fewer_than_two_members_raise(members):
    with pytest.raises(ValueError, match="at least 2"):
        MemberStack(members[:1], CPU)
    with pytest.raises(ValueError, match="at least 2"):
        MemberStack([], CPU)


def test_stack_layout(stack, members):
    assert len(stack) == 3
    floats = [n for n, t in members[0].items() if t.is_floating_point()]
    assert stack.float_names == floats
    assert stack.matrix.shape == (3, sum(members[0][n].numel() for n in floats))


# --------------------------------------------------------------------------- sobol_simplex


def test_sobol_simplex_points_are_on_the_simplex_and_seeded():
    points = sobol_simplex(4, 64, seed=3)
    assert points.shape == (64, 4) and points.dtype == torch.float64
    assert bool((points > 0).all())
    assert torch.allclose(points.sum(-1), torch.ones(64, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.equal(points, sobol_simplex(4, 64, seed=3))
    assert not torch.equal(points, sobol_simplex(4, 64, seed=4))
    # Dirichlet(1): every coordinate has mean 1/4 and the points are spread, not clustered.
    assert torch.allclose(points.mean(0), torch.full((4,), 0.25, dtype=torch.float64), atol=0.04)
    assert float(points.max()) > 0.7 and float(points.min()) < 0.02
    for point in points:
        check_simplex(point, 4)


# --------------------------------------------------------------------------- the objective and the methods


def test_objective_scores_the_fused_model(objective, members, tiny_model_dir, rte_val):
    assert objective.names == ["loss", "accuracy"]
    reference = make_model(tiny_model_dir)
    for index, member in enumerate(members):
        reference.load_state_dict(member)
        expected, _ = rte_val.evaluate(reference, ["accuracy"], 8, CPU)
        assert objective(one_hot(index, 3)) == expected
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    reference.load_state_dict(objective.stack.mix(w))
    assert objective(w) == rte_val.evaluate(reference, ["accuracy"], 8, CPU)[0]


def test_swa_gives_uniform_weights(objective):
    result = METHODS["swa"](FusionContext(objective, {}, seed=0))
    assert isinstance(result, FusionResult)
    assert torch.equal(result.point, torch.full((3,), 1 / 3, dtype=torch.float64))


def test_last_member(objective):
    assert torch.equal(METHODS["last_member"](FusionContext(objective, {}, seed=0)).point, one_hot(2, 3))


def test_best_member_on_the_real_objective(objective, members, tiny_model_dir, rte_val):
    ctx = FusionContext(objective, {}, seed=0)
    # Scored independently: each member loaded directly into a fresh model.
    reference = make_model(tiny_model_dir)
    scores = []
    for member in members:
        reference.load_state_dict(member)
        scores.append(rte_val.evaluate(reference, ["accuracy"], 8, CPU)[0])
    assert ctx.member_scores == scores
    assert len({s["loss"] for s in scores}) == 3  # the members really differ
    expected = max(range(3), key=lambda i: (scores[i]["accuracy"], -scores[i]["loss"]))
    assert torch.equal(METHODS["best_member"](ctx).point, one_hot(expected, 3))


class ScriptedObjective:
    """Fixed scores per member (the methods only ever ask for one-hot weights here)."""

    def __init__(self, stack, scores, task=RTE):
        self.stack, self.scores, self.task = stack, scores, task
        self.calls = 0

    @property
    def names(self):
        return ["loss", *self.task.metrics]

    def __call__(self, weights):
        check_simplex(weights, len(self.stack))
        assert int((weights == 1).sum()) == 1, "only members are scored"
        self.calls += 1
        return self.scores[int(weights.argmax())]


@pytest.mark.parametrize("scores,expected", [
    # highest accuracy wins even with a higher loss
    ([{"loss": 0.2, "accuracy": 0.6}, {"loss": 0.9, "accuracy": 0.7}, {"loss": 0.1, "accuracy": 0.5}], 1),
    # tie on accuracy -> lower loss
    ([{"loss": 0.5, "accuracy": 0.6}, {"loss": 0.9, "accuracy": 0.7}, {"loss": 0.4, "accuracy": 0.7}], 2),
    ([{"loss": 0.3, "accuracy": 0.7}, {"loss": 0.9, "accuracy": 0.7}, {"loss": 0.4, "accuracy": 0.7}], 0),
    # a diverged member never wins
    ([{"loss": math.nan, "accuracy": math.nan}, {"loss": 0.9, "accuracy": 0.5}, {"loss": 0.4, "accuracy": 0.4}], 1),
])
def test_best_member_ties_go_to_lower_loss(stack, scores, expected):
    objective = ScriptedObjective(stack, scores)
    ctx = FusionContext(objective, {}, seed=0)
    assert torch.equal(METHODS["best_member"](ctx).point, one_hot(expected, 3))
    assert max(range(3), key=lambda i: ranking_key(scores[i], "accuracy")) == expected
    METHODS["best_member"](ctx)
    assert objective.calls == 3  # member scores are measured once per context


def test_best_member_uses_the_task_primary_metric(stack):
    mrpc = GLUE_TASKS["mrpc"]  # primary metric f1
    scores = [{"loss": 0.5, "f1": 0.6, "accuracy": 0.9}, {"loss": 0.5, "f1": 0.8, "accuracy": 0.7},
              {"loss": 0.5, "f1": 0.7, "accuracy": 0.8}]
    ctx = FusionContext(ScriptedObjective(stack, scores, mrpc), {}, seed=0)
    assert torch.equal(METHODS["best_member"](ctx).point, one_hot(1, 3))


def non_dominated(history, names) -> list[int]:
    """Rows of ``history`` no other finite row dominates in ``names`` (loss minimised, metrics maximised),
    by brute force; non-finite rows are never on the front."""
    signed = [[-row[n] if n == "loss" else row[n] for n in names] for _, row in history.iterrows()]
    finite = [all(math.isfinite(v) for v in values) for values in signed]

    def dominates(a, b):
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [history.index[i] for i, values in enumerate(signed)
            if finite[i] and not any(finite[j] and dominates(signed[j], values) for j in range(len(signed)))]


BO_CONFIG = {"acquisition": "qLogNEHVI", "initial_points": 2, "evaluations": 3, "selection": "best_metric",
             "mc_samples": 32, "restarts": 2, "raw_samples": 64}


def test_bomf_method_returns_the_chosen_history_row(objective):
    result = METHODS["bomf"](FusionContext(objective, BO_CONFIG, seed=0))
    history = result.tables["history"]
    assert list(history["source"]) == ["member"] * 3 + ["sobol"] * 2 + ["bo"]
    # The Pareto table is the brute-force front of the whole history in loss and accuracy, row for row.
    front = non_dominated(history, ["loss", "accuracy"])
    assert result.tables["pareto"].index.tolist() == front
    pd.testing.assert_frame_equal(result.tables["pareto"], history.loc[front])
    # best_metric, recomputed: the highest accuracy on the front, ties to the lower loss.
    expected = min(front, key=lambda i: (-history.loc[i, "accuracy"], history.loc[i, "loss"]))
    assert history.index[history["chosen"]].tolist() == [expected]
    assert torch.equal(result.point, torch.tensor(history.loc[expected, weight_columns(3)].to_numpy(dtype=float),
                                                    dtype=torch.float64))
    check_simplex(result.point, 3)
    # The chosen weights score what the history says they scored.
    assert objective(result.point) == pytest.approx(history.loc[expected, ["loss", "accuracy"]].to_dict())


class RecordingObjective:
    """A real objective that remembers every weight vector it scored and what it returned."""

    def __init__(self, objective):
        self.inner, self.calls = objective, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, weights):
        scores = self.inner(weights)
        self.calls.append((weights.clone(), scores))
        return scores


def test_greedy_soup_never_lowers_the_validation_metric(objective):
    recording = RecordingObjective(objective)
    ctx = FusionContext(recording, {}, seed=0)
    result = METHODS["greedy_soup"](ctx)
    primary = objective.task.primary_metric
    best_member = max(s[primary] for s in ctx.member_scores)
    soup = result.point[result.point > 0]
    assert torch.allclose(soup, torch.full_like(soup, 1 / len(soup)))  # a uniform soup of a subset
    assert objective(result.point)[primary] >= best_member
    history = result.tables["history"]
    assert len(history) == 2  # every member after the first was tried once
    accepted_scores = [best_member, *history[history["accepted"]][primary]]
    assert accepted_scores == sorted(accepted_scores)  # each accepted member kept or raised the metric
    assert (history[~history["accepted"]][primary] < max(accepted_scores)).all()


def test_learned_soup_weights_are_on_the_simplex_and_lower_the_loss(objective):
    config = {"learned_soup_epochs": 3, "learned_soup_lr": 0.5, "optim.max_device_batch": 8}
    result = METHODS["learned_soup"](FusionContext(objective, config, seed=0))
    check_simplex(result.point, 3)
    assert bool((result.point > 0).all())  # softmax weights are strictly positive
    uniform_loss = objective(torch.full((3,), 1 / 3, dtype=torch.float64))["loss"]
    assert objective(result.point)["loss"] <= uniform_loss + 1e-6  # it starts from uniform and descends
    assert list(result.tables["history"]["epoch"]) == [0, 1, 2]


@pytest.mark.parametrize("method,searched", [("bo_metric", "accuracy"), ("bo_loss", "loss")])
def test_single_objective_bo_chooses_by_its_one_objective(objective, method, searched):
    result = METHODS[method](FusionContext(objective, BO_CONFIG, seed=0))
    history = result.tables["history"]
    assert list(history["source"]) == ["member"] * 3 + ["sobol"] * 2 + ["bo"]
    check_simplex(result.point, 3)
    # The front of one objective is every row at its optimum (brute force), whatever the other objective says.
    finite = history[history["finite"]]
    best = finite[searched].max() if searched != "loss" else finite[searched].min()
    at_best = non_dominated(history, [searched])
    assert at_best == finite.index[finite[searched] == best].tolist()
    flagged = history.index[history["pareto"]].tolist()
    assert flagged == at_best  # every tied row reaches the selection rule
    # Ties at the optimum go to the better other objective (best_metric: lower loss).
    other = "loss" if searched != "loss" else "accuracy"
    expected = min(at_best, key=lambda i: history.loc[i, other] * (1 if other == "loss" else -1))
    chosen = int(history.index[history["chosen"]][0])
    assert torch.equal(result.point, torch.tensor(history.loc[chosen, weight_columns(3)].to_numpy(dtype=float),
                                                    dtype=torch.float64))
    assert chosen == expected, f"rows {at_best} tie at the best {searched} {best}: row {expected} has the best {other}"


@pytest.mark.parametrize("method, searched", [("swa", 0), ("best_member", 0), ("last_member", 0),
                                              ("greedy_soup", 2), ("learned_soup", 0), ("bomf", 3)])
def test_a_methods_search_cost_leaves_out_the_members(objective, method, searched):
    """weights.json's ``evaluations``: the objective calls a method made beyond scoring the members (which
    every method shares), i.e. the fused models its search evaluated."""
    from bomf.fuse.journal import JournaledObjective

    journaled = JournaledObjective(objective)
    context = FusionContext(journaled, {**BO_CONFIG, "learned_soup_epochs": 1, "learned_soup_lr": 0.05,
                                        "optim.max_device_batch": 8}, seed=0)
    METHODS[method](context)
    assert journaled.evaluations - context.member_calls == searched
    assert context.member_calls == (3 if method in ("best_member", "greedy_soup", "bomf") else 0)


@pytest.mark.parametrize("max_device_batch", [3, 1])
def test_learned_soup_in_chunks_of_max_device_batch_learns_the_whole_batchs_weights(objective, max_device_batch):
    """Each batch's gradient accumulated over chunks of optim.max_device_batch examples is the whole batch's:
    the same steps (one per batch of 8 RTE pairs), the same weights."""
    settings = {"learned_soup_epochs": 3, "learned_soup_lr": 0.5}
    whole = METHODS["learned_soup"](FusionContext(objective, {**settings, "optim.max_device_batch": 8}, seed=0))
    chunked = METHODS["learned_soup"](FusionContext(objective, {**settings, "optim.max_device_batch": max_device_batch},
                                                    seed=0))
    assert (whole.point - 1 / 3).abs().max() > 1e-2  # the weights moved away from the uniform start
    assert torch.allclose(chunked.point, whole.point, rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(chunked.tables["history"], whole.tables["history"], rtol=1e-6)


def test_a_fuse_job_gets_the_settings_its_method_declares_from_any_section(tiny_model_dir):
    """learned_soup and twa declare optim.max_device_batch beside their fusion.* settings: their fuse jobs'
    settings (the keys common.smk's fusion_settings gives them) change with it, no other method's do, and every method's
    FusionContext.config is read from its job's settings alone."""
    from conftest import tiny_config

    from bomf.config import job_settings, validate_config
    from bomf.device import COMPUTE_SETTINGS
    from bomf.fuse.methods import method_settings, setting_keys

    config = validate_config(tiny_config(tiny_model_dir))
    edited = validate_config(tiny_config(tiny_model_dir, optim={"max_device_batch": 3}))

    def job(config: dict, method: str) -> dict:
        keys = (*COMPUTE_SETTINGS, "optim.eval_batch_size", *setting_keys(method))
        return job_settings(config, {"task": "rte", "model": "tiny", "seed": "0", "method": method}, keys)

    for method in METHODS:
        assert method_settings(job(config, method), method) == method_settings(config, method), method
        assert (job(edited, method) != job(config, method)) == (method in ("learned_soup", "twa")), method
    assert method_settings(edited, "learned_soup") == {"learned_soup_epochs": config["fusion"]["learned_soup_epochs"],
                                                       "learned_soup_lr": config["fusion"]["learned_soup_lr"],
                                                       "optim.max_device_batch": 3}


# --------------------------------------------------------------------------- a stack beyond fusion.device_memory


@pytest.fixture(scope="module")
def base_state(tiny_model_dir):
    return make_model(tiny_model_dir).state_dict()


def chunked_stack(members, base_state, chunks: int) -> MemberStack:
    """The members with θ₀ and an EMA, in a budget that leaves room for about ``chunks`` chunks of columns."""
    from bomf.memory import FLOAT32, MERGE_VECTORS

    size = sum(t.numel() for t in members[0].values() if t.is_floating_point())
    memory = FLOAT32 * size + (len(members) + 1 + MERGE_VECTORS) * FLOAT32 * (size // chunks)
    return MemberStack(members, CPU, base=base_state, stored={"ema": perturbed(base_state, 9)}, memory=memory)


@pytest.mark.parametrize("point", [[0.2, 0.5, 0.3], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0],
                                   {"method": "task_arithmetic", "scale": 1.5},
                                   {"method": "ties", "density": 0.3, "scale": 1.0},
                                   {"method": "dare", "drop_rate": 0.5, "seed": 4, "scale": 1.2}, "ema"])
def test_a_chunked_stack_computes_every_point_bit_identically(members, base_state, point, capsys):
    from bomf.fuse.merging import Merge
    from bomf.fuse.points import Stored

    whole = MemberStack(members, CPU, base=base_state, stored={"ema": perturbed(base_state, 9)})
    chunked = chunked_stack(members, base_state, chunks=4)
    assert len(whole.blocks) == 1 and 4 <= len(chunked.blocks) <= 5
    assert f"in {len(chunked.blocks)} chunks" in capsys.readouterr().out
    if isinstance(point, dict):
        point = Merge.from_record(point)
    elif isinstance(point, str):
        point = Stored(point)
    else:
        point = torch.tensor(point, dtype=torch.float64)
    expected = whole.state(whole.parameters(point))
    got = chunked.state(chunked.parameters(point))
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[name], expected[name]) for name in expected)


def test_a_chunked_stack_loads_a_model_and_mixes_the_landscapes_affine_weights(members, base_state, tiny_model_dir):
    whole = MemberStack(members, CPU)
    chunked = chunked_stack(members, base_state, chunks=3)
    affine = torch.tensor([1.5, -0.75, 0.25], dtype=torch.float64)
    assert torch.equal(chunked.combine(affine), whole.combine(affine))
    model = make_model(tiny_model_dir)
    chunked.load_into(model, one_hot(1, 3))
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in members[1].items())


def test_learned_soup_learns_the_same_weights_on_a_chunked_stack(objective, members, base_state, tiny_model_dir,
                                                                 rte_val):
    config = {"learned_soup_epochs": 2, "learned_soup_lr": 0.5, "optim.max_device_batch": 8}
    chunked = FusionObjective(chunked_stack(members, base_state, chunks=3), make_model(tiny_model_dir), rte_val,
                              RTE, 8, CPU)
    expected = METHODS["learned_soup"](FusionContext(objective, config, seed=0)).point
    assert torch.equal(METHODS["learned_soup"](FusionContext(chunked, config, seed=0)).point, expected)


def test_a_budget_without_room_for_one_chunk_is_one_line_naming_the_setting(members):
    with pytest.raises(ValueError, match=r"^fusion.device_memory: .* cannot hold the mixed parameters"):
        MemberStack(members, CPU, memory=1000)


def test_stack_memory_leaves_room_for_the_model_and_its_activations(tiny_model_dir, monkeypatch):
    from simulated_cuda import simulated_cuda

    from bomf.fuse.fusion import stack_memory
    from bomf.memory import GIB, SCORING_ACTIVATIONS

    model = make_model(tiny_model_dir)
    weights = sum(t.nbytes for t in [*model.parameters(), *model.buffers()])
    activations = int(SCORING_ACTIVATIONS * weights)
    assert stack_memory(None, CPU, model) is None  # the CPU has no device budget unless one is set
    assert stack_memory(0.5, CPU, model) == GIB // 2 - weights - activations
    with simulated_cuda(monkeypatch):
        # Null on CUDA: what the device has free, the model already on it.
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * GIB, 80 * GIB))
        cuda = torch.device("cuda")
        assert stack_memory(None, cuda, model.to(cuda)) == 3 * GIB - activations
        assert stack_memory(2.0, cuda, model) == 2 * GIB - weights - activations


def test_every_declared_fusion_method_is_implemented_and_only_those():
    """bomf.fuse.methods declares the methods (no torch: the Snakefile reads it); fusion registers each one's
    implementation under its name, and refuses a name not declared there."""
    from bomf.fuse.fusion import register
    from bomf.fuse.methods import SETTINGS

    assert set(METHODS) == set(SETTINGS)
    with pytest.raises(ValueError, match="'my_method' is not declared in bomf.fuse.methods.SETTINGS"):
        register("my_method")
