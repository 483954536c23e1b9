"""The landscape plane through three members, checked against brute-force float64 geometry on the flat
parameter vectors of the tiny BERT, and the landscape evaluation against the fusion objective."""

import pytest
import torch

from bomf.fuse import landscape
from bomf.fuse.fusion import FusionObjective, MemberStack, one_hot
from bomf.fuse.landscape import (AffineObjective, LandscapePlane, default_members, evaluate_landscape, evaluate_points,
                                 grid_points, member_gram, member_points, projected_points)
from bomf.tasks.models import load_tokenizer
from bomf.tasks.readers import read_glue_tsv
from bomf.tasks.registry import GLUE_TASKS
from bomf.tasks.sequence import SequenceData, load_classifier
from conftest import GLUE_DIR

RTE = GLUE_TASKS["rte"]
CPU = torch.device("cpu")
PLANE_MEMBERS = (0, 2, 3)  # not the default, so the test does not lean on a = 0, b = 1, c = N − 1


def make_model(source) -> torch.nn.Module:
    torch.manual_seed(0)
    return load_classifier(str(source), RTE)


def perturbed(state: dict, seed: int, scale: float = 0.05) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {name: (t + scale * torch.randn(t.shape, generator=generator)) if t.is_floating_point() else t.clone()
            for name, t in state.items()}


@pytest.fixture(scope="module")
def stack(tiny_model_dir):
    base = make_model(tiny_model_dir).state_dict()
    return MemberStack([perturbed(base, seed) for seed in (1, 2, 3, 4)], CPU)


@pytest.fixture(scope="module")
def plane(stack):
    return LandscapePlane.from_gram(member_gram(stack.matrix), PLANE_MEMBERS)


@pytest.fixture(scope="module")
def objective(stack, tiny_model_dir):
    examples = read_glue_tsv(RTE, GLUE_DIR / "RTE" / "dev.tsv")[:16]
    val = SequenceData(examples, load_tokenizer(str(tiny_model_dir)), 64, RTE)
    return FusionObjective(stack, make_model(tiny_model_dir), val, RTE, 8, CPU)


def brute_force(stack: MemberStack, members: tuple[int, int, int], weights: list[float]):
    """(α, β, distance, γ) by Gram–Schmidt on the members' flat float64 vectors."""
    flat = stack.matrix.double()
    a, b, c = (flat[i] for i in members)
    along_u = c - a
    u = along_u / along_u.norm()
    perpendicular = (b - a) - ((b - a) @ u) * u
    v = perpendicular / perpendicular.norm()
    offset = torch.tensor(weights, dtype=torch.float64) @ flat - a
    residual = offset - (offset @ u) * u - (offset @ v) * v
    gamma = float((b - a) @ along_u / (along_u @ along_u))
    return (float(offset @ u / along_u.norm()), float(offset @ v / perpendicular.norm()), float(residual.norm()),
            gamma)


def test_gram_measures_member_differences_like_the_flat_vectors(stack, monkeypatch):
    monkeypatch.setattr(landscape, "GRAM_BLOCK_ELEMENTS", 1 << 40)
    one_block = member_gram(stack.matrix)
    monkeypatch.setattr(landscape, "GRAM_BLOCK_ELEMENTS", 4096)  # many blocks, so accumulation is exercised
    gram = member_gram(stack.matrix)
    assert gram.dtype == torch.float64 and gram.shape == (4, 4)
    assert torch.allclose(gram, one_block, rtol=1e-12)
    flat = stack.matrix.double()
    for (i, j), (k, l) in [((0, 1), (0, 1)), ((0, 2), (3, 1)), ((3, 2), (1, 0))]:
        left, right = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
        left[i], left[j], right[k], right[l] = 1.0, -1.0, 1.0, -1.0
        expected = float((flat[i] - flat[j]) @ (flat[k] - flat[l]))
        assert float(left @ gram @ right) == pytest.approx(expected, rel=1e-10)


def test_plane_lengths_and_gamma_match_brute_force(stack, plane):
    flat = stack.matrix.double()
    a, b, c = (flat[i] for i in PLANE_MEMBERS)
    *_, gamma = brute_force(stack, PLANE_MEMBERS, [1.0, 0.0, 0.0, 0.0])
    assert plane.members == PLANE_MEMBERS
    assert plane.gamma == pytest.approx(gamma, rel=1e-9)
    assert plane.length_u == pytest.approx(float((c - a).norm()), rel=1e-9)
    perpendicular = (b - a) - gamma * (c - a)
    assert plane.length_v == pytest.approx(float(perpendicular.norm()), rel=1e-9)


def test_members_land_on_their_coordinates_with_distance_zero(plane):
    expected = {PLANE_MEMBERS[0]: (0.0, 0.0), PLANE_MEMBERS[1]: (plane.gamma, 1.0), PLANE_MEMBERS[2]: (1.0, 0.0)}
    for index, (alpha, beta) in expected.items():
        projected_alpha, projected_beta, distance = plane.project(one_hot(index, 4))
        assert projected_alpha == pytest.approx(alpha, abs=1e-9)
        assert projected_beta == pytest.approx(beta, abs=1e-9)
        assert distance == pytest.approx(0.0, abs=1e-6 * plane.length_u)
        assert torch.equal(plane.weights_at(alpha, beta), one_hot(index, 4)), index  # exactly, not nearly
    points = member_points(plane)
    assert points["name"].tolist() == [f"member {i}" for i in PLANE_MEMBERS]
    assert list(zip(points["alpha"], points["beta"])) == list(expected.values())


@pytest.mark.parametrize("alpha, beta", [(0.3, 0.6), (-0.2, 1.2), (1.2, -0.2), (0.5, 0.0)])
def test_weights_at_is_affine_on_the_plane_and_projects_back(plane, alpha, beta):
    weights = plane.weights_at(alpha, beta)
    assert weights.dtype == torch.float64 and float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert weights[1] == 0.0  # member 1 is not one of the plane's members
    projected_alpha, projected_beta, distance = plane.project(weights)
    assert (projected_alpha, projected_beta) == pytest.approx((alpha, beta), abs=1e-9)
    assert distance == pytest.approx(0.0, abs=1e-6 * plane.length_u)


@pytest.mark.parametrize("weights", [
    [0.0, 1.0, 0.0, 0.0],  # the member off the plane
    [0.1, 0.2, 0.3, 0.4],  # a convex combination
    [0.25, 0.25, 0.25, 0.25],  # SWA
    [0.6, -0.3, 0.2, 0.5],  # affine, off the simplex
])
def test_projection_matches_brute_force(stack, plane, weights):
    alpha, beta, distance, _ = brute_force(stack, PLANE_MEMBERS, weights)
    assert plane.project(weights) == pytest.approx((alpha, beta, distance), rel=1e-7, abs=1e-9)
    if weights[1] != 0.0:
        assert distance > 0.01 * plane.length_u


def test_projected_points_frame(plane):
    frame = projected_points(plane, {"swa": torch.full((4,), 0.25, dtype=torch.float64), "member 1": one_hot(1, 4)})
    assert frame.columns.tolist() == ["name", "alpha", "beta", "distance"]
    assert frame["name"].tolist() == ["swa", "member 1"]
    assert frame.loc[0, ["alpha", "beta", "distance"]].tolist() == pytest.approx(list(plane.project([0.25] * 4)))


def test_bad_planes_and_weights_are_rejected(stack, plane):
    gram = member_gram(stack.matrix)
    with pytest.raises(ValueError, match="distinct"):
        LandscapePlane.from_gram(gram, (0, 0, 3))
    with pytest.raises(ValueError, match="distinct"):
        LandscapePlane.from_gram(gram, (0, 1, 4))
    collinear = MemberStack([stack.state(stack.matrix[0]), stack.state(stack.matrix[1]),
                             stack.state(2 * stack.matrix[1] - stack.matrix[0])], CPU)
    with pytest.raises(ValueError, match="line"):
        LandscapePlane.from_gram(member_gram(collinear.matrix), (0, 2, 1))
    with pytest.raises(ValueError, match="affine"):
        plane.project([0.5, 0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="affine"):
        plane.project([0.5, 0.5])


def test_default_members_are_first_middle_last():
    assert default_members(3) == (0, 1, 2)
    assert default_members(15) == (0, 7, 14)
    with pytest.raises(ValueError, match="at least 3"):
        default_members(2)


def test_grid_points_cover_the_square_beta_major():
    points = grid_points(21, -0.2, 1.2)
    assert len(points) == 441
    assert points[0] == (-0.2, -0.2) and points[-1] == pytest.approx((1.2, 1.2))
    assert points[1][1] == points[0][1] and points[21][0] == points[0][0]  # α varies fastest


def test_evaluation_at_member_coordinates_reproduces_the_members_scores(stack, plane, objective):
    frame = evaluate_points(AffineObjective.of(objective), plane, plane.member_coordinates)
    assert frame.columns.tolist() == ["alpha", "beta", "loss", "accuracy"]
    for row, index in enumerate(PLANE_MEMBERS):
        assert frame.loc[row, objective.names].to_dict() == objective(one_hot(index, 4)), index


def test_evaluate_landscape_scores_every_grid_point_off_the_simplex(stack, plane, objective):
    frame = evaluate_landscape(AffineObjective.of(objective), plane, 2, -0.5, 1.5)
    assert list(zip(frame["alpha"], frame["beta"])) == grid_points(2, -0.5, 1.5)
    assert frame[objective.names].notna().all().all()
    corner = plane.weights_at(1.5, 1.5)
    assert float(corner.min()) < 0  # the point is off the simplex, where stack.mix would refuse it
    objective.model.load_state_dict(stack.state(corner.float() @ stack.matrix), strict=True)
    assert frame.iloc[-1][objective.names].to_dict() == pytest.approx(objective.score(), rel=1e-6)


def test_affine_objective_scores_only_affine_weights(plane, objective):
    affine = AffineObjective.of(objective)
    assert affine(plane.weights_at(0.0, 0.0)) == objective(one_hot(PLANE_MEMBERS[0], 4))
    with pytest.raises(ValueError, match="weights: 4 affine weights"):
        affine(torch.tensor([0.5, 0.5, 0.5, 0.0], dtype=torch.float64))
