"""OTFusion (Singh & Jaggi, NeurIPS 2020), for transformer encoders as in Imfeld et al. (ICLR 2024): every
member's neurons aligned to a reference member by optimal transport, layer by layer, then averaged.

The alignment is hard (``ot.emd``: exact transport between uniform marginals, for units of equal count a
permutation), so an aligned member computes exactly what it did before: each permutation is a symmetry of the
network. Ground cost: the Euclidean distance between incoming weight vectors (a unit's row of the weight that
computes it, with its bias), their input side already aligned. Which axes of which tensor a permutation acts
on is declared once, in ``LAYOUT`` (BERT, RoBERTa and MPNet encoders; the members' sequence-classification
or QA head follows). The spaces aligned, in order:

- the residual stream: one permutation of the hidden units for the whole network, computed at the embeddings
  (the word, position and token-type embeddings' columns and the embedding LayerNorm) and carried by the
  residual connections through every layer's attention and feed-forward outputs and LayerNorms into the head,
  as Imfeld et al. propagate the embeddings' transport map. (With soft maps they average the residual's and a
  sublayer's map where the two meet; a hard alignment keeps one, so that it stays a symmetry.)
- attention heads, as units (Imfeld et al.): for each pair of heads, the dimensions within them matched by
  their query and key rows together (a query·key product is unchanged when both are permuted alike) and,
  separately, by their value rows (which the attention output's columns follow); the cost of a pair of heads
  is the cost of those two matchings, and the heads are matched by ``ot.emd`` on those costs. MPNet's relative
  attention bias, shared by every layer, ties the head order of all layers: one matching on the summed costs.
- each layer's feed-forward neurons (the intermediate dense's rows; the output dense's columns follow), and
  the classification head's hidden units (BERT's pooler, RoBERTa's and MPNet's classifier dense).

LoRA members are adapters of one frozen base and share its coordinates: a neuron of an adapter cannot be
permuted without permuting the base, which all members share unpermuted, so OTFusion is not defined for them
(their uniform average, swa, is what applies) and is refused.
"""

import itertools
import re
from collections.abc import Sequence

import numpy as np
import ot
import torch

RESIDUAL = "residual"
HEADS = "heads"  # the order of the attention heads, where one tensor ties it across layers (MPNet)
QUERY_KEY, VALUE, FEED_FORWARD = "query_key.{}", "value.{}", "feed_forward.{}"

# Each floating tensor of an encoder, by the end of its name: the space each of its axes is a unit of (None: an
# axis no permutation acts on; "{}" is the layer the name's number gives) and the axis whose units its slices
# describe in the ground cost (None: a tensor that only follows the alignment).
LAYOUT: tuple[tuple[str, tuple[str | None, ...], int | None], ...] = (
    (r"embeddings\.(word|position|token_type)_embeddings\.weight", (None, RESIDUAL), 1),
    (r"embeddings\.LayerNorm\.(weight|bias)", (RESIDUAL,), 0),
    (r"layer\.\d+\.attention\.(self\.(query|key)|attn\.[qk])\.weight", (QUERY_KEY, RESIDUAL), 0),
    (r"layer\.\d+\.attention\.(self\.(query|key)|attn\.[qk])\.bias", (QUERY_KEY,), 0),
    (r"layer\.\d+\.attention\.(self\.value|attn\.v)\.weight", (VALUE, RESIDUAL), 0),
    (r"layer\.\d+\.attention\.(self\.value|attn\.v)\.bias", (VALUE,), 0),
    (r"layer\.\d+\.attention\.(output\.dense|attn\.o)\.weight", (RESIDUAL, VALUE), None),
    (r"layer\.\d+\.attention\.(output\.dense|attn\.o)\.bias", (RESIDUAL,), None),
    (r"layer\.\d+\.(attention\.(output\.)?|output\.)LayerNorm\.(weight|bias)", (RESIDUAL,), None),
    (r"layer\.\d+\.intermediate\.dense\.weight", (FEED_FORWARD, RESIDUAL), 0),
    (r"layer\.\d+\.intermediate\.dense\.bias", (FEED_FORWARD,), 0),
    (r"layer\.\d+\.output\.dense\.weight", (RESIDUAL, FEED_FORWARD), None),
    (r"layer\.\d+\.output\.dense\.bias", (RESIDUAL,), None),
    (r"encoder\.relative_attention_bias\.weight", (None, HEADS), None),
    (r"pooler\.dense\.weight", ("pooler", RESIDUAL), 0),
    (r"pooler\.dense\.bias", ("pooler",), 0),
    (r"^classifier\.weight", (None, "pooler"), None),  # BERT's head reads the pooler
    (r"^classifier\.dense\.weight", ("classifier", RESIDUAL), 0),
    (r"^classifier\.dense\.bias", ("classifier",), 0),
    (r"^classifier\.out_proj\.weight", (None, "classifier"), None),
    (r"^(classifier|classifier\.out_proj|qa_outputs)\.bias", (None,), None),
    (r"^qa_outputs\.weight", (None, RESIDUAL), None),
)
LAYER = re.compile(r"layer\.(\d+)\.")


def layout(names: Sequence[str]) -> dict[str, tuple[tuple[str | None, ...], int | None]]:
    """Each floating tensor's spaces and ground-cost axis (``LAYOUT``), layer numbers filled in; one clear line
    for members OTFusion cannot align (LoRA adapters, a tensor of an architecture it does not know)."""
    if any("lora_" in name for name in names):
        raise ValueError("otfusion: LoRA members are adapters of one shared base, in its coordinates: their neurons "
                         "cannot be permuted without the base's, so OTFusion is not defined for them (use swa)")
    found = {}
    for name in names:
        declared = next(((s, a) for pattern, s, a in LAYOUT if re.search(pattern + "$", name)), None)
        if declared is None:
            raise ValueError(f"otfusion: no alignment declared for the tensor {name!r} (bomf.fuse.otfusion.LAYOUT: "
                             f"BERT, RoBERTa and MPNet encoders)")
        spaces, axis = declared
        layer = LAYER.search(name)
        found[name] = (tuple(s.format(layer.group(1)) if s and "{}" in s else s for s in spaces), axis)
    return found


def matching(cost: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The exact optimal transport (``ot.emd``) between two equal sets of units with uniform marginals and
    ``cost`` [reference unit, member unit]: a permutation, as the member unit matched to each reference unit,
    and its total cost."""
    count = cost.shape[0]
    marginal = np.full(count, 1.0 / count)
    costs = cost.double().cpu().numpy()
    plan, log = ot.emd(marginal, marginal, costs, numItermax=10_000_000, log=True)
    matched = plan.argmax(axis=1)
    if log["result_code"] != 1 or len(set(matched.tolist())) != count:
        raise RuntimeError(f"otfusion: ot.emd found no permutation of {count} units ({log['warning']})")
    return torch.from_numpy(matched), float(costs[np.arange(count), matched].sum())


def permuted(tensor: torch.Tensor, spaces: tuple[str | None, ...], permutations: dict[str, torch.Tensor],
             skip: int | None = None) -> torch.Tensor:
    """``tensor`` with each axis whose space has a permutation (but ``skip``) put in the reference's order."""
    for axis, space in enumerate(spaces):
        if axis != skip and space in permutations:
            tensor = tensor.index_select(axis, permutations[space].to(tensor.device))
    return tensor


class Alignment:
    """The permutations aligning one member's floating tensors to the reference's: ``permutations[space][i]`` is
    the member's unit that the reference's unit ``i`` is matched to."""

    def __init__(self, reference: dict[str, torch.Tensor], member: dict[str, torch.Tensor], heads: int):
        self.layout = layout([name for name, tensor in reference.items() if tensor.is_floating_point()])
        self.reference, self.member, self.heads = reference, member, heads
        self.permutations: dict[str, torch.Tensor] = {}
        self._match(RESIDUAL)  # first: every other space's incoming weights read the residual stream
        self._match_heads(sorted({LAYER.search(name).group(1) for name in self.layout if LAYER.search(name)}, key=int))
        for space in sorted({spaces[axis] for spaces, axis in self.layout.values() if axis is not None}):
            if space not in self.permutations:
                self._match(space)

    def features(self, space: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The incoming weight vectors of ``space``'s units, [units, features], of the reference and of the member
        (its other axes already aligned), in float64 on the CPU: the same numbers on any device."""
        pairs = []
        for name, (spaces, axis) in self.layout.items():
            if axis is not None and spaces[axis] == space:
                member = permuted(self.member[name], spaces, self.permutations, skip=axis)
                pairs.append([t.to("cpu", torch.float64).movedim(axis, 0).reshape(t.shape[axis], -1)
                              for t in (self.reference[name], member)])
        return torch.cat([r for r, _ in pairs], 1), torch.cat([m for _, m in pairs], 1)

    def _match(self, space: str) -> None:
        self.permutations[space] = matching(torch.cdist(*self.features(space)))[0]

    def _match_heads(self, layers: list[str]) -> None:
        """Heads as units: within each pair of heads the query-key and the value dimensions matched, the heads
        matched on the cost of those matchings, a layer at a time or, where a tensor ties the head order of
        every layer (``HEADS``), once on their sum."""
        inner, costs, widths = {}, [], []
        for layer in layers:
            spaces = (QUERY_KEY.format(layer), VALUE.format(layer))
            distances = [torch.cdist(*self.features(space)) for space in spaces]
            if distances[0].shape[0] % self.heads:
                raise ValueError(f"otfusion: layer {layer}'s {distances[0].shape[0]} query dimensions do not split "
                                 f"into {self.heads} heads")
            width = distances[0].shape[0] // self.heads
            cost = torch.zeros(self.heads, self.heads, dtype=torch.float64)
            for a, b in itertools.product(range(self.heads), repeat=2):
                block = (slice(a * width, (a + 1) * width), slice(b * width, (b + 1) * width))
                for space, distance in zip(spaces, distances):
                    inner[space, a, b], pair_cost = matching(distance[block])
                    cost[a, b] += pair_cost
            costs.append(cost)
            widths.append(width)
        if any(HEADS in spaces for spaces, _ in self.layout.values()):
            self.permutations[HEADS] = matching(sum(costs))[0]
        for layer, cost, width in zip(layers, costs, widths):
            heads = self.permutations[HEADS] if HEADS in self.permutations else matching(cost)[0]
            for space in (QUERY_KEY.format(layer), VALUE.format(layer)):
                self.permutations[space] = torch.cat([b * width + inner[space, a, b]
                                                      for a, b in enumerate(heads.tolist())])

    def aligned(self) -> dict[str, torch.Tensor]:
        """The member's floating tensors with every permutation applied: the same function, in the reference's
        order."""
        return {name: permuted(self.member[name], spaces, self.permutations)
                for name, (spaces, _) in self.layout.items()}


def otfusion(states: Sequence[dict[str, torch.Tensor]], reference: int, heads: int) -> dict[str, torch.Tensor]:
    """The uniform average of the members' floating tensors, each member aligned to member ``reference`` (itself
    as it is), summed in the members' order, one aligned member at a time."""
    names = layout([name for name, tensor in states[reference].items() if tensor.is_floating_point()])
    total = {name: torch.zeros_like(states[reference][name]) for name in names}
    for index, state in enumerate(states):
        aligned = state if index == reference else Alignment(states[reference], state, heads).aligned()
        for name in names:
            total[name] += aligned[name]
    return {name: tensor / len(states) for name, tensor in total.items()}
