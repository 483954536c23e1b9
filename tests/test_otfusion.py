"""OTFusion (bomf.fuse.otfusion) where the answer is known: a permutation of a member's neurons is a symmetry of
the network, which the alignment undoes exactly; members of one trajectory align to (near) identity, so OTFusion
is (near) SWA there; and the method through the fuse job on the tiny fixtures."""

import pytest
import torch
from transformers import MPNetConfig, MPNetForQuestionAnswering, RobertaConfig, RobertaForSequenceClassification

from bomf.fuse.otfusion import HEADS, QUERY_KEY, VALUE, Alignment, layout, otfusion, permuted
from bomf.tasks.registry import GLUE_TASKS
from bomf.tasks.sequence import load_classifier

RTE = GLUE_TASKS["rte"]
CPU = torch.device("cpu")
SMALL = {"vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 64}


def tiny_bert(tiny_model_dir) -> torch.nn.Module:
    torch.manual_seed(0)
    return load_classifier(str(tiny_model_dir), RTE)


def tiny_roberta(_) -> torch.nn.Module:
    torch.manual_seed(0)
    return RobertaForSequenceClassification(RobertaConfig(**SMALL, num_labels=3))


def tiny_mpnet(_) -> torch.nn.Module:
    torch.manual_seed(0)
    return MPNetForQuestionAnswering(MPNetConfig(**SMALL))


ARCHITECTURES = {"bert": tiny_bert, "roberta": tiny_roberta, "mpnet_qa": tiny_mpnet}


def trained_like(model: torch.nn.Module) -> dict:
    """The model's state with every floating tensor moved off its initialisation: a fresh model's zero biases and
    unit LayerNorms would hide one left unpermuted."""
    generator = torch.Generator().manual_seed(0)
    return {name: t + 0.05 * torch.randn(t.shape, generator=generator) if t.is_floating_point() else t
            for name, t in model.state_dict().items()}


def floating(state: dict) -> dict:
    return {name: tensor for name, tensor in state.items() if tensor.is_floating_point()}


def random_symmetry(state: dict, heads: int, seed: int) -> dict[str, torch.Tensor]:
    """A random permutation of every space of ``state``'s layout: heads as blocks (one head order for every
    layer where a tensor ties them), the query-key and the value dimensions within each head shuffled apart."""
    generator = torch.Generator().manual_seed(seed)
    sizes = {space: tensor.shape[axis] for name, tensor in floating(state).items()
             for axis, space in enumerate(layout([name])[name][0]) if space}
    tied = torch.randperm(heads, generator=generator) if HEADS in sizes else None
    permutations = {HEADS: tied} if tied is not None else {}
    for space, size in sizes.items():
        if space.startswith(QUERY_KEY[:-2]):
            order = tied if tied is not None else torch.randperm(heads, generator=generator)
            width = size // heads
            for within in (QUERY_KEY, VALUE):
                permutations[within.format(space.split(".")[1])] = torch.cat(
                    [int(h) * width + torch.randperm(width, generator=generator) for h in order])
        elif space not in permutations and not space.startswith(VALUE[:-2]):
            permutations[space] = torch.randperm(size, generator=generator)
    return permutations


def apply(state: dict, permutations: dict) -> dict:
    spaces = layout(list(floating(state)))
    return {name: permuted(tensor, spaces[name][0], permutations) if name in spaces else tensor
            for name, tensor in state.items()}


def outputs(model: torch.nn.Module, state: dict) -> list[torch.Tensor]:
    model.load_state_dict(state)
    ids = torch.randint(3, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        result = model.eval()(input_ids=ids, attention_mask=torch.ones_like(ids))
    return [result[key] for key in ("logits", "start_logits", "end_logits") if key in result]


def near(state: dict, seed: int, scale: float) -> dict:
    """``state`` with Gaussian noise of ``scale`` times each tensor's own spread: another point of its basin."""
    generator = torch.Generator().manual_seed(seed)
    return {name: t + scale * t.std() * torch.randn(t.shape, generator=generator) if t.is_floating_point() and
            t.numel() > 1 else t for name, t in state.items()}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_permutation_of_every_space_is_a_symmetry_of_the_network(architecture, tiny_model_dir):
    """The permutations the layout declares (residual stream, heads and their dimensions, feed-forward and head
    units) leave the network's outputs unchanged, and change its parameters."""
    model = ARCHITECTURES[architecture](tiny_model_dir)
    state = trained_like(model)
    heads = model.config.num_attention_heads
    moved = apply(state, random_symmetry(state, heads, seed=1))
    unpermuted = {name for name, (spaces, _) in layout(list(floating(state))).items() if not any(spaces)}
    assert unpermuted <= {"classifier.bias", "classifier.out_proj.bias", "qa_outputs.bias"}
    assert {name for name in state if not torch.equal(moved[name], state[name])} == floating(state).keys() - unpermuted
    for before, after in zip(outputs(model, state), outputs(model, moved)):
        assert torch.allclose(before, after, rtol=0, atol=1e-5), float((before - after).abs().max())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_permuted_member_is_aligned_back_exactly(architecture, tiny_model_dir):
    """Members θ_A and π(θ_B), θ_B in θ_A's basin, π a random symmetry: the alignment finds π⁻¹ and OTFusion is
    the unpermuted average (θ_A + θ_B)/2; with π(θ_B) as the reference, π((θ_A + θ_B)/2)."""
    model = ARCHITECTURES[architecture](tiny_model_dir)
    first = trained_like(model)
    heads = model.config.num_attention_heads
    second = near(first, seed=2, scale=0.05)
    symmetry = random_symmetry(first, heads, seed=3)
    shuffled = apply(second, symmetry)
    alignment = Alignment(first, shuffled, heads)
    assert alignment.permutations.keys() == symmetry.keys()
    for space, permutation in symmetry.items():
        assert torch.equal(permutation[alignment.permutations[space]], torch.arange(len(permutation))), space
    average = {name: (first[name] + second[name]) / 2 for name in floating(first)}
    fused = otfusion([first, shuffled], reference=0, heads=heads)
    assert fused.keys() == average.keys()
    assert all(torch.allclose(fused[n], average[n], rtol=0, atol=1e-6) for n in average)
    fused = otfusion([first, shuffled], reference=1, heads=heads)
    assert all(torch.allclose(fused[n], t, rtol=0, atol=1e-6) for n, t in apply(average, symmetry).items())


def test_members_otfusion_cannot_align_are_refused_in_one_line(tiny_model_dir, rte_val):
    """LoRA adapters share their base's coordinates; a tensor of an unknown architecture has no declared
    alignment: each is one line naming why, raised by the method before any evaluation."""
    from peft import LoraConfig, get_peft_model

    from bomf.fuse.fusion import METHODS, FusionContext, FusionObjective, MemberStack
    from bomf.fuse.journal import JournaledObjective
    from bomf.tasks.models import member_state

    adapters = get_peft_model(tiny_bert(tiny_model_dir), LoraConfig(r=2, target_modules=["query", "value"]))
    states = [member_state(adapters), near(member_state(adapters), 1, 0.1)]

    objective = JournaledObjective(FusionObjective(MemberStack(states, CPU), adapters, rte_val, RTE, 8, CPU))
    with pytest.raises(ValueError, match=r"^otfusion: LoRA members .* not defined for them \(use swa\)$"):
        METHODS["otfusion"](FusionContext(objective, {"otfusion_reference": "best"}, 0))
    assert objective.evaluations == 0  # refused before the members were scored
    with pytest.raises(ValueError, match=r"no alignment declared for the tensor 'bert.encoder.rotary.weight'"):
        layout(["bert.embeddings.LayerNorm.weight", "bert.encoder.rotary.weight"])


def test_a_stack_on_the_gpu_or_chunked_rebuilds_the_same_fusion(tiny_model_dir, monkeypatch):
    """The alignment reads its numbers in float64 on the CPU, wherever the members are: a stack mixed chunk by
    chunk, and a stack on the (stand-in) GPU, give the whole CPU stack's fusion bit for bit, the latter on the
    GPU."""
    from simulated_cuda import on_cuda, simulated_cuda

    from bomf.fuse.fusion import MemberStack
    from bomf.fuse.points import Aligned
    from bomf.memory import FLOAT32

    first = trained_like(tiny_bert(tiny_model_dir))
    members = [first, apply(near(first, 2, 0.05), random_symmetry(first, 2, seed=3)), near(first, 4, 0.05)]
    expected = MemberStack(members, CPU).parameters(Aligned(1, 2)).clone()
    size = expected.numel()
    chunked = MemberStack(members, CPU, memory=FLOAT32 * size + 5 * FLOAT32 * (size // 3))
    assert len(chunked.blocks) > 1 and torch.equal(chunked.parameters(Aligned(1, 2)), expected)
    with simulated_cuda(monkeypatch):
        fused = MemberStack(members, torch.device("cuda")).parameters(Aligned(1, 2))
        assert on_cuda(fused) and torch.equal(fused.cpu(), expected)


# --------------------------------------------------------------------------- one trajectory, through the jobs


@pytest.fixture(scope="module")
def trajectory(tiny_model_dir, tmp_path_factory):
    """Stage 2's members on the tiny RTE run, and the otfusion and swa fuse jobs on them."""
    from conftest import tiny_config

    from bomf import pipeline
    from bomf.config import validate_config
    from bomf.records import HpoChoice

    root = tmp_path_factory.mktemp("otfusion")
    config = validate_config(tiny_config(tiny_model_dir, tasks=["rte"], fusion={"otfusion_reference": "best"}))
    job = {"config": config, "task": "rte", "model": "tiny", "seed": 0}
    data, run = root / "data", root / "run"
    pipeline.prepare_data(config, "rte", data)
    HpoChoice({"learning_rate": 1e-3, "batch_size": 8}, 0.0, 0.0, "", 0, "").write(run / "hpo/best.json")
    pipeline.finetune(**job, data_dir=data, best_file=run / "hpo/best.json", out_dir=run / "members",
                      staging_dir=run / "members.resume", checkpoint_seconds=1800)
    for method in ("otfusion", "swa", "best_member"):
        pipeline.fuse(**job, data_dir=data, members_dir=run / "members", method=method,
                      out_dir=run / f"fusion/{method}", journal=run / f"fusion/{method}.journal.jsonl")
    pipeline.evaluate_test(**job, method="otfusion", data_dir=data, members_dir=run / "members",
                           fusion_dir=run / "fusion/otfusion", out=run / "test/otfusion.json")
    return job, data, run


def test_the_fuse_job_records_the_alignment_and_the_model_is_rebuilt_from_it(trajectory):
    """The record holds the reference (the best member: fusion.otfusion_reference) and the heads; re-running the
    alignment from the members rebuilds the model the job scored, tensor for tensor and score for score."""
    from bomf import pipeline
    from bomf.fuse.points import Aligned, point_of
    from bomf.records import EvaluatedModel, SelectedModel
    from bomf.train.members import load_members

    job, data, run = trajectory
    selected = SelectedModel.read(run / "fusion/otfusion")
    best = SelectedModel.read(run / "fusion/best_member").weights.index(1.0)
    assert selected.aligned == {"reference": best, "heads": 2} and selected.weights is None
    assert point_of(selected) == Aligned(best, 2)
    assert EvaluatedModel.read(run / "test/otfusion.json").method == "otfusion"
    objective = pipeline.member_objective(pipeline.Run(*job.values()), data, run / "members")
    assert objective(Aligned(best, 2)) == selected.validation
    rebuilt, _ = pipeline.selected_model(pipeline.Run(*job.values()), run / "members", run / "fusion/otfusion")
    expected = otfusion(list(load_members(run / "members")), best, heads=2)
    state = rebuilt.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in expected.items())


def test_members_of_one_trajectory_align_to_near_identity_so_otfusion_is_near_swa(trajectory):
    """Stage 2's members share their start and most of their path: (nearly) every unit is matched to itself,
    and OTFusion is (nearly) the uniform average, SWA."""
    from bomf.train.members import load_members

    _, _, run = trajectory
    members = list(load_members(run / "members"))
    reference = len(members) - 1
    matched = units = 0
    for member in members[:-1]:
        for permutation in Alignment(members[reference], member, heads=2).permutations.values():
            matched += int((permutation == torch.arange(len(permutation))).sum())
            units += len(permutation)
    fused = otfusion(members, reference, heads=2)
    swa = {name: sum(m[name] for m in members) / len(members) for name in fused}
    distance = torch.cat([(fused[n] - swa[n]).reshape(-1) for n in fused]).norm()
    scale = torch.cat([swa[n].reshape(-1) for n in fused]).norm()
    relative = float(distance / scale)
    spread = float(torch.cat([(members[0][n] - members[-1][n]).reshape(-1) for n in fused]).norm() / scale)
    print(f"one trajectory: {matched}/{units} units matched to themselves ({matched / units:.4f}); "
          f"‖θ_OT − θ_SWA‖ / ‖θ_SWA‖ = {relative:.2e} (first to last member: {spread:.2e})")
    assert matched / units >= 0.95
    assert relative < 1e-3
