"""Stage 3 and its baselines: fusing members θ(w) = Σ wᵢθᵢ, w on the simplex, or merging their task vectors.

``MemberStack`` owns the hard part (members stacked once on the device, mixing as one matmul into a
preallocated buffer; beyond fusion.device_memory, kept in host memory and mixed chunk by chunk);
``FusionObjective`` writes a point (``points``: simplex weights, a task-vector merge, or a stored state such
as the EMA) into one preallocated model and scores it; a fusion method is a small function registered by
name that decides which point to use. What a method chose is recorded, never a
model: every reader rebuilds it from the members.
"""

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..memory import GIB, SCORING_ACTIVATIONS, chunk_columns, stack_bytes
from ..metrics import ranking_key, sign
from ..tasks.models import load_member_state
from ..tasks.registry import TaskSpec
from ..tasks.splits import SplitData
from .journal import JournaledObjective
from .merging import Merge
from .methods import MERGE_GRIDS, SETTINGS
from .otfusion import layout as otfusion_layout
from .otfusion import otfusion
from .points import Aligned, Span, Stored
from .selection import bootstrap_standard_error

SIMPLEX_TOLERANCE = 1e-6


def check_simplex(weights: torch.Tensor, count: int) -> None:
    if weights.shape != (count,):
        raise ValueError(f"expected {count} fusion weights, got shape {tuple(weights.shape)}")
    if (not bool(torch.isfinite(weights).all()) or bool((weights < -SIMPLEX_TOLERANCE).any())
            or abs(float(weights.sum()) - 1.0) > SIMPLEX_TOLERANCE):
        raise ValueError(f"fusion weights must be on the simplex (≥ 0, sum 1): {weights.tolist()}")


class MemberStack:
    """Members' floating-point tensors (full states, or LoRA adapters) as one [N, P] matrix on the device.

    Non-floating tensors (integer buffers such as position ids) cannot be averaged: they must be equal in
    every member and are taken as they are. ``base``: the state the members were fine-tuned from (θ₀, in
    the same layout), which the task-vector merges need; ``stored``: states stage 2 kept beside the members
    (the EMA), by name. ``memory``: the bytes of device memory the stack may take (None: no limit; see
    ``stack_memory``). Where the whole stack does not fit (``memory.stack_bytes``), the matrix, θ₀ and the
    stored states stay in host memory (pinned on CUDA) and every point is computed chunk by chunk of
    ``columns`` columns into the mixed parameters on the device (``memory.chunk_columns``), to the same
    values: each entry's arithmetic is the same in a chunk as in the whole.
    """

    def __init__(self, states: Sequence[dict[str, torch.Tensor]], device: torch.device,
                 base: dict[str, torch.Tensor] | None = None, stored: dict[str, dict[str, torch.Tensor]] | None = None,
                 memory: int | None = None):
        if len(states) < 2:
            raise ValueError(f"fusion needs at least 2 members, got {len(states)}")
        # One pass, one member at a time: ``states`` may read each member when it is taken (train.members.Members).
        rows = iter(states)
        first = next(rows)
        shapes = {name: t.shape for name, t in first.items()}
        fixed = {name: t for name, t in first.items() if not t.is_floating_point()}
        self.float_names = [name for name, t in first.items() if t.is_floating_point()]
        self.fixed = {name: t.to(device) for name, t in fixed.items()}
        self.shapes = [shapes[name] for name in self.float_names]
        self.offsets = np.concatenate([[0], np.cumsum([first[name].numel() for name in self.float_names])]).tolist()
        size = self.offsets[-1]
        self.columns = self._columns(size, len(states), memory)
        chunked = self.columns < size
        # A chunked stack's home is host memory, pinned on CUDA so that each chunk is copied at full speed.
        self._home = {"device": torch.device("cpu") if chunked else device,
                      "pin_memory": chunked and device.type == "cuda"}
        self.matrix = torch.empty(len(states), size, dtype=torch.float32, **self._home)
        self._flatten(first, self.matrix[0])
        del first
        for index, state in enumerate(rows, start=1):
            if state.keys() != shapes.keys() or any(state[k].shape != shape for k, shape in shapes.items()):
                raise ValueError(f"member {index} does not have the same tensors as member 0")
            for name, tensor in fixed.items():
                if not torch.equal(state[name], tensor):
                    raise ValueError(f"non-floating tensor {name!r} differs between members; it cannot be fused")
            self._flatten(state, self.matrix[index])
        self.mixed = torch.empty(size, dtype=torch.float32, device=device)
        self.base = self._flatten_like_members(base, "the base model") if base is not None else None
        self.stored = {name: self._flatten_like_members(state, f"the stored {name} state")
                       for name, state in (stored or {}).items()}
        if chunked:
            print(f"members' stack chunked: {len(self)} × {size:,} floats ({self.matrix.nbytes / GIB:.2f} GiB) kept "
                  f"in host memory and mixed on {device} in {len(self.blocks)} chunks of {self.columns:,} columns "
                  f"({memory / GIB:.2f} GiB of device memory left for it: fusion.device_memory)", flush=True)

    @staticmethod
    def _columns(size: int, count: int, memory: int | None) -> int:
        """Columns mixed at a time: all of them where the stack fits ``memory`` whole, else as many as fit."""
        if memory is None or stack_bytes(size, count) <= memory:
            return size
        columns = chunk_columns(size, count, memory)
        if columns < 1:
            raise ValueError(f"fusion.device_memory: {memory / GIB:.2f} GiB of device memory left for the members' "
                             f"stack (beside the model and its activations) cannot hold the mixed parameters "
                             f"({4 * size / GIB:.2f} GiB) and a chunk of columns; raise it")
        return columns

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """The (start, stop) column chunks a point is computed in: one where the stack is whole on the device."""
        size = self.offsets[-1]
        return [(start, min(start + self.columns, size)) for start in range(0, size, self.columns)]

    def _flatten_like_members(self, state: dict[str, torch.Tensor], what: str) -> torch.Tensor:
        shapes = dict(zip(self.float_names, self.shapes))
        if state.keys() != shapes.keys() | self.fixed.keys() or any(state[k].shape != s for k, s in shapes.items()):
            raise ValueError(f"{what} does not have the same tensors as the members")
        return self._flatten(state, torch.empty(self.offsets[-1], dtype=torch.float32, **self._home))

    def _flatten(self, state: dict[str, torch.Tensor], out: torch.Tensor) -> torch.Tensor:
        for name, start, stop in zip(self.float_names, self.offsets, self.offsets[1:]):
            out[start:stop].copy_(state[name].reshape(-1))
        return out

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def parameters(self, point: "torch.Tensor | Span | Merge | Stored") -> torch.Tensor:
        """The flat parameters of a point, in the preallocated buffer (overwritten by the next call): Σ wᵢθᵢ of
        simplex weights or of coefficients of the span, a task-vector merge, or a stored state."""
        if isinstance(point, Span):
            if point.coefficients.shape != (len(self),) or not bool(torch.isfinite(point.coefficients).all()):
                raise ValueError(f"expected {len(self)} finite span coefficients, got {point.coefficients.tolist()}")
            return self.combine(point.coefficients)
        if isinstance(point, Merge):
            if self.base is None:
                raise ValueError(f"{point.method} merges task vectors: the stack needs the base model")
            return point.vector(self.matrix, self.base, out=self.mixed, blocks=self.blocks)
        if isinstance(point, Stored):
            if point.name not in self.stored:
                raise ValueError(f"stage 2 kept no {point.name} state beside its members (finetune.ema_decay: null?)")
            return self.mixed.copy_(self.stored[point.name])
        if isinstance(point, Aligned):
            return self._flatten(otfusion([self._views(row) for row in self.matrix], point.reference, point.heads),
                                 self.mixed)
        weights = point.to(self.matrix)
        check_simplex(weights, len(self))
        return self.combine(weights)

    def combine(self, weights: torch.Tensor) -> torch.Tensor:
        """Σ wᵢθᵢ of any weights (affine ones too: the landscape's plane) into the preallocated buffer, chunk by
        chunk where the stack is in host memory."""
        weights = weights.to(device=self.mixed.device, dtype=torch.float32)
        with torch.no_grad():
            for start, stop in self.blocks:
                block = self.matrix[:, start:stop].to(self.mixed.device)
                torch.mv(block.t(), weights, out=self.mixed[start:stop])
        return self.mixed

    def mix(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """Σ wᵢθᵢ as a state dict of views into the preallocated buffer (overwritten by the next call)."""
        return self.state(self.parameters(weights))

    def state(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A state dict of views into a flat parameter vector (autograd flows through them), on the stack's
        device: a vector computed from a chunked stack's host matrix (learned_soup's mix) is copied there."""
        return {**self._views(flat.to(self.mixed.device)), **self.fixed}

    def _views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The floating tensors of a flat parameter vector (a member's row, the mixed buffer), as views into it."""
        return {name: flat[start:stop].view(shape)
                for name, start, stop, shape in zip(self.float_names, self.offsets, self.offsets[1:], self.shapes)}

    def load_into(self, model: nn.Module, point: "torch.Tensor | Merge | Stored") -> None:
        load_member_state(model, self.state(self.parameters(point)))


def stack_memory(device_memory: float | None, device: torch.device, model: nn.Module) -> int | None:
    """The bytes of device memory a members' stack may take beside ``model`` (already on ``device``) and its
    activations (``memory.SCORING_ACTIVATIONS`` copies of it): fusion.device_memory (GiB) less the two; where
    it is null, what the CUDA device has free less the activations, and no limit on the CPU."""
    model_bytes = sum(t.nbytes for t in itertools.chain(model.parameters(), model.buffers()))
    activations = int(SCORING_ACTIVATIONS * model_bytes)
    if device_memory is not None:
        return int(device_memory * GIB) - model_bytes - activations
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free - activations


class FusionObjective:
    """Scores fused weights on a split: its loss (minimised) and the task's metrics (how depends on the task
    kind's data: class ids, answer spans or generated text)."""

    def __init__(self, stack: MemberStack, model: nn.Module, val: SplitData, task: TaskSpec, batch_size: int,
                 device: torch.device):
        self.stack, self.model, self.val, self.task = stack, model.eval(), val, task
        self.batch_size, self.device = batch_size, device

    @property
    def names(self) -> list[str]:
        return ["loss", *self.task.metrics]

    def score(self) -> dict[str, float]:
        return self.val.evaluate(self.model, list(self.task.metrics), self.batch_size, self.device)[0]

    def __call__(self, point: "torch.Tensor | Merge | Stored") -> dict[str, float]:
        self.fused_model(point)
        return self.score()

    def standard_error(self, point: "torch.Tensor | Merge | Stored", metric: str) -> float:
        """The bootstrap standard error of ``point``'s ``metric`` over the split's examples
        (``selection.bootstrap_standard_error``): one evaluation, not journaled, whose predictions it keeps."""
        self.fused_model(point)
        _, predictions = self.val.evaluate(self.model, list(self.task.metrics), self.batch_size, self.device)
        return bootstrap_standard_error(predictions, self.val.references, metric)

    def fused_model(self, point: "torch.Tensor | Merge | Stored") -> nn.Module:
        """The evaluation model holding ``point``'s parameters. Built here, not taken as the model stands,
        because a replayed (journaled) evaluation never loads its parameters."""
        self.stack.load_into(self.model, point)
        return self.model


def one_hot(index: int, count: int) -> torch.Tensor:
    weights = torch.zeros(count, dtype=torch.float64)
    weights[index] = 1.0
    return weights


@dataclass
class FusionContext:
    objective: FusionObjective | JournaledObjective  # a journaled one replays an interrupted run's evaluations
    config: dict  # the settings the method declares (methods.SETTINGS), under their names (method_settings)
    seed: int
    train: SplitData | None = None  # the training split: given to the methods.TRAINING_SPLIT_METHODS only

    @property
    def count(self) -> int:
        return len(self.objective.stack)

    @cached_property
    def member_scores(self) -> list[dict[str, float]]:
        """Every member scored by the same objective as the fused models."""
        return [self.objective(one_hot(i, self.count)) for i in range(self.count)]

    @property
    def member_calls(self) -> int:
        """Objective calls spent on the members (none unless the method read ``member_scores``): what a
        method's own evaluation count leaves out."""
        return self.count if "member_scores" in self.__dict__ else 0


@dataclass
class FusionResult:
    point: "torch.Tensor | Span | Merge | Stored"  # simplex weights, span coefficients, a merge, a stored state
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # extra outputs, e.g. a BO history


# Each declared method's implementation (``methods.SETTINGS``: its name and the settings it reads).
METHODS: dict[str, Callable[[FusionContext], FusionResult]] = {}


def register(name: str):
    """The implementation of the fusion method declared as ``name`` in ``methods.SETTINGS``."""
    if name not in SETTINGS:
        raise ValueError(f"fusion method {name!r} is not declared in bomf.fuse.methods.SETTINGS")

    def decorate(method):
        METHODS[name] = method
        return method

    return decorate


@register("swa")
def uniform_average(ctx: FusionContext) -> FusionResult:
    return FusionResult(torch.full((ctx.count,), 1.0 / ctx.count, dtype=torch.float64))


@register("best_member")
def best_member(ctx: FusionContext) -> FusionResult:
    primary = ctx.objective.task.primary_metric
    best = max(range(ctx.count), key=lambda i: ranking_key(ctx.member_scores[i], primary))
    return FusionResult(one_hot(best, ctx.count))


@register("ema")
def exponential_moving_average(ctx: FusionContext) -> FusionResult:
    """The exponential moving average of stage 2's trajectory (finetune.ema_decay), kept while it trained."""
    return FusionResult(Stored("ema"))


@register("otfusion")
def optimal_transport_fusion(ctx: FusionContext) -> FusionResult:
    """OTFusion (Singh & Jaggi; Imfeld et al. for transformers, ``otfusion``): the members' neurons aligned to a
    reference member (fusion.otfusion_reference: the best validation member, or the last), then averaged."""
    stack = ctx.objective.stack
    otfusion_layout(stack.float_names)  # members it cannot align (LoRA): one line, before any evaluation
    reference = (int(best_member(ctx).point.argmax()) if ctx.config["otfusion_reference"] == "best"
                 else ctx.count - 1)
    return FusionResult(Aligned(reference, ctx.objective.model.config.num_attention_heads))


@register("last_member")
def last_member(ctx: FusionContext) -> FusionResult:
    return FusionResult(one_hot(ctx.count - 1, ctx.count))


def uniform(members: list[int], count: int) -> torch.Tensor:
    weights = torch.zeros(count, dtype=torch.float64)
    weights[members] = 1.0 / len(members)
    return weights


@register("greedy_soup")
def greedy_soup(ctx: FusionContext) -> FusionResult:
    """Wortsman et al.'s greedy soup: members in order of validation metric, each added to the uniform
    soup only if the soup's validation metric is no worse (in the metric's direction)."""
    primary = ctx.objective.task.primary_metric
    order = sorted(range(ctx.count), key=lambda i: ranking_key(ctx.member_scores[i], primary), reverse=True)
    soup, best = [order[0]], ctx.member_scores[order[0]][primary]
    tried = []
    for candidate in order[1:]:
        scores = ctx.objective(uniform([*soup, candidate], ctx.count))
        accepted = sign(primary) * scores[primary] >= sign(primary) * best  # no worse, in its direction
        tried.append({"member": candidate, "accepted": accepted, **scores})
        if accepted:
            soup, best = [*soup, candidate], scores[primary]
    return FusionResult(uniform(soup, ctx.count), {"history": pd.DataFrame(tried)})


def _backward_in_chunks(objective: "FusionObjective | JournaledObjective", split: SplitData, indices: list[int],
                        params: dict[str, torch.Tensor], chunk_size: int, total: torch.Tensor) -> torch.Tensor:
    """One batch's loss backward through ``params`` (views of a fused vector, where the gradient gathers), over
    chunks of at most ``chunk_size`` examples weighted by their size, as training accumulates; returns
    ``total`` plus the batch's summed loss (on the device: no synchronisation a chunk)."""
    for first in range(0, len(indices), chunk_size):
        chunk = indices[first:first + chunk_size]
        loss = torch.func.functional_call(objective.model, params,
                                          kwargs=split.batch(chunk, objective.device)).loss
        (loss * len(chunk) / len(indices)).backward()
        total = total + loss.detach().double() * len(chunk)
    return total


@register("learned_soup")
def learned_soup(ctx: FusionContext) -> FusionResult:
    """Mixing weights softmax(a) learned by Adam on the validation loss (Wortsman et al.'s learned soup), one
    step per batch of ``optim.eval_batch_size`` examples. Gradients reach ``a`` through one fused parameter
    vector: each batch's gradient with respect to it is accumulated over chunks of at most
    ``optim.max_device_batch`` examples (weighted by their size, as training accumulates), then taken back
    through the mix once, so memory stays that of a single forward and backward pass of one model on one chunk."""
    objective, stack = ctx.objective, ctx.objective.stack
    logits = torch.zeros(ctx.count, device=stack.matrix.device, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=ctx.config["learned_soup_lr"])
    order = torch.Generator().manual_seed(ctx.seed)
    batch_size, chunk_size, rows = objective.batch_size, ctx.config["optim.max_device_batch"], []
    for epoch in range(ctx.config["learned_soup_epochs"]):
        permutation = torch.randperm(len(objective.val), generator=order).tolist()
        total = torch.zeros((), dtype=torch.float64, device=objective.device)  # read once an epoch: no sync a chunk
        for start in range(0, len(permutation), batch_size):
            indices = permutation[start:start + batch_size]
            mixed = torch.softmax(logits, 0) @ stack.matrix
            fused = mixed.detach().requires_grad_()  # the chunks' gradients gather here, before the mix
            total = _backward_in_chunks(objective, objective.val, indices, stack.state(fused), chunk_size, total)
            mixed.backward(fused.grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        rows.append({"epoch": epoch, "val_loss": total.item() / len(permutation)})
    weights = torch.softmax(logits.detach(), 0).double().cpu()
    return FusionResult(weights / weights.sum(), {"history": pd.DataFrame(rows)})


TWA_MOMENTUM = 0.9  # the paper's P-SGD momentum (its weight decay, 1e-5, is left out)
GRAM_BLOCK_ELEMENTS = 1 << 22  # float64 elements per block of columns (32 MiB) while accumulating a Gram
# A direction of the span whose Gram eigenvalue is below this share of the largest is finer than the float32
# members resolve (a member (nearly) a combination of the others): it is left out of the basis.
SPAN_RESOLUTION = (16 * torch.finfo(torch.float32).eps) ** 2


def _float64_columns(stack: MemberStack):
    """(start, block) over the members' matrix: blocks of columns in float64 on the stack's device, so that
    no P-sized float64 copy exists at any time (the members' near-equal rows cancel in float32 products)."""
    step = max(1, GRAM_BLOCK_ELEMENTS // len(stack))
    for start in range(0, stack.offsets[-1], step):
        yield start, stack.matrix[:, start:start + step].to(stack.mixed.device, torch.float64)


def _member_gram(stack: MemberStack) -> torch.Tensor:
    """W Wᵀ ([N, N] float64, on the stack's device): the members' inner products."""
    return sum(block @ block.T for _, block in _float64_columns(stack))


def span_basis(gram: torch.Tensor) -> torch.Tensor:
    """[N, k] float64 B from the members' Gram matrix W Wᵀ (W their [N, P] matrix): the rows of Q = Bᵀ W are an
    orthonormal basis of the members' linear span, so w = βᵀQ is Σ αᵢθᵢ with α = B β. B = V Λ^-½ from the
    Gram matrix's eigenvectors, less the directions below SPAN_RESOLUTION: k < N where members are linearly
    dependent. Every orthonormal basis of the span has the same projector QᵀQ, so the same projected steps as
    the paper's Gram–Schmidt basis, which divides by ~0 at a dependent member."""
    values, vectors = torch.linalg.eigh(gram)
    kept = values > SPAN_RESOLUTION * values[-1]
    return vectors[:, kept] / values[kept].sqrt()


def _member_inner_products(stack: MemberStack, vector: torch.Tensor) -> torch.Tensor:
    """W·vector ([N] float64): each member's inner product with a flat vector on the stack's device."""
    return sum(block @ vector[start:start + block.shape[1]].double() for start, block in _float64_columns(stack))


@register("twa")
def trainable_weight_averaging(ctx: FusionContext) -> FusionResult:
    """Li et al.'s Trainable Weight Averaging (ICLR 2023): θ = Σ αᵢθᵢ anywhere in the members' linear span,
    trained on the *training* loss by projected SGD with momentum from the uniform average (SWA).

    As in the paper's code, the subspace is the span of the members themselves (Gram–Schmidt of the θᵢ, not of
    their differences), so α has any sign and any sum (a ``points.Span``). Projected SGD in parameter space,
    w ← w − η QᵀQ ∇L(w) with Q an orthonormal basis of the span, is plain SGD on w's coordinates β = Q w in
    that basis (``span_basis``), whose gradient is Q ∇L(w) = Bᵀ (W ∇L(w)); so it runs, one step per batch
    of fusion.twa_batch_size training examples, its gradient accumulated over chunks of at most
    optim.max_device_batch (weighted by their size, as training accumulates). The model is in eval mode (no
    dropout), as the objective scores it. The learned soup differs: softmax (simplex) weights by Adam on the
    validation loss."""
    if ctx.train is None:
        raise ValueError("twa fits on the training split: its FusionContext needs train")
    objective, stack, train = ctx.objective, ctx.objective.stack, ctx.train
    gram = _member_gram(stack)
    basis = span_basis(gram)
    swa = torch.full((ctx.count,), 1.0 / ctx.count, dtype=torch.float64, device=gram.device)
    coordinates = (basis.T @ gram @ swa).requires_grad_()  # β₀ = Q w₀ = Bᵀ W Wᵀ α₀: the SWA start
    optimizer = torch.optim.SGD([coordinates], lr=ctx.config["twa_lr"], momentum=TWA_MOMENTUM)
    order = torch.Generator().manual_seed(ctx.seed)
    batch_size, chunk_size, rows = ctx.config["twa_batch_size"], ctx.config["optim.max_device_batch"], []
    for epoch in range(ctx.config["twa_epochs"]):
        permutation = torch.randperm(len(train), generator=order).tolist()
        total = torch.zeros((), dtype=torch.float64, device=objective.device)  # read once an epoch: no sync a chunk
        for start in range(0, len(permutation), batch_size):
            indices = permutation[start:start + batch_size]
            fused = stack.combine(basis @ coordinates.detach()).detach().requires_grad_()
            total = _backward_in_chunks(objective, train, indices, stack.state(fused), chunk_size, total)
            coordinates.grad = basis.T @ _member_inner_products(stack, fused.grad)
            optimizer.step()
        rows.append({"epoch": epoch, "train_loss": total.item() / len(permutation)})
    return FusionResult(Span((basis @ coordinates.detach()).cpu()), {"history": pd.DataFrame(rows)})


def _bayesian_optimisation(ctx: FusionContext, searched: list[str] | None) -> FusionResult:
    from .mobo import WEIGHT_PREFIX, run_mobo  # BoTorch (~2 s to import) only in the jobs that run BO

    history, chosen = run_mobo(ctx.objective, ctx.member_scores, ctx.config, ctx.seed, searched)
    weight_columns = [c for c in history.columns if c.startswith(WEIGHT_PREFIX)]
    weights = torch.tensor(history.loc[chosen, weight_columns].to_numpy(dtype=float), dtype=torch.float64)
    return FusionResult(weights, {"history": history, "pareto": history[history["pareto"]]})


@register("bomf")
def bomf(ctx: FusionContext) -> FusionResult:
    """Stage 3: multi-objective BO over validation loss and every task metric."""
    return _bayesian_optimisation(ctx, None)


@register("bo_metric")
def bo_metric(ctx: FusionContext) -> FusionResult:
    """Single-objective BO on the primary metric alone (the paper's BO-SWA ablation)."""
    return _bayesian_optimisation(ctx, [ctx.objective.task.primary_metric])


@register("bo_loss")
def bo_loss(ctx: FusionContext) -> FusionResult:
    """Single-objective BO on the validation loss alone."""
    return _bayesian_optimisation(ctx, ["loss"])


def _merge_search(ctx: FusionContext, method: str, fixed: dict | None = None) -> FusionResult:
    """A task-vector merge with its hyperparameters chosen on validation: every point of its grid
    (``MERGE_GRIDS``, from the fusion.* settings) scored, the best primary metric kept (ties: lower loss)."""
    grid = {name: ctx.config[setting] for name, setting in MERGE_GRIDS[method].items()}
    candidates, rows = [], []
    for values in itertools.product(*grid.values()):
        hyperparameters = dict(zip(grid, values))
        merge = Merge(method, {**hyperparameters, **(fixed or {})})
        scores = ctx.objective(merge)
        candidates.append((merge, scores))
        rows.append({**hyperparameters, **scores})
    primary = ctx.objective.task.primary_metric
    best = max(range(len(candidates)), key=lambda i: ranking_key(candidates[i][1], primary))
    history = pd.DataFrame(rows).assign(chosen=[i == best for i in range(len(rows))])
    return FusionResult(candidates[best][0], {"history": history})


@register("task_arithmetic")
def task_arithmetic(ctx: FusionContext) -> FusionResult:
    return _merge_search(ctx, "task_arithmetic")


@register("ties")
def ties_merging(ctx: FusionContext) -> FusionResult:
    return _merge_search(ctx, "ties")


@register("dare")
def dare_merging(ctx: FusionContext) -> FusionResult:
    return _merge_search(ctx, "dare", {"seed": ctx.seed})
