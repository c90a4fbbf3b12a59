"""Head-level gradient masking: train a head set (its Q, K, V, O slices) plus the norms, nothing else.

A *mask* is a 0/1 tensor of a parameter's shape, dtype and device (1 = this entry may change),
keyed by the name `model.named_parameters()` gives it (`blocks.3.attn.W_Q`, `ln_final.w`, ...).
Masks are built on the real parameters, never on the stacked views (`model.W_Q`) or on the GQA
repeat properties (`attn.W_K` of a grouped-query layer is `repeat_interleave(attn._W_K)`).

What a head set C makes trainable (docs/method.md §5), per attention parameter:

- `W_Q, W_K, W_V` [head, d_model, d_head], `W_O` [head, d_head, d_model], `b_Q, b_K, b_V`
  [head, d_head]: the slices `[h]` for (layer, h) in C.
- `b_O` [d_model], shared by the heads of a layer: frozen (policy `b_O="frozen"`, default) or
  trainable when any head of the layer is in C (`b_O="any-head"`).
- Grouped-query attention, `_W_K, _W_V` [kv_head, d_model, d_head] and `_b_K, _b_V`
  [kv_head, d_head]: group g serves query heads `g*r .. g*r + r - 1` (r = n_heads / n_kv_heads,
  the order of `repeat_interleave`); its slice is trainable when any of those query heads is in C
  (`gqa_kv="any-query-head"`, default) or never (`gqa_kv="never"`). In a model without GQA the
  per-head `W_K, W_V, b_K, b_V` follow the head set and `gqa_kv` has no effect.
- `sinks` [head] (GPT-OSS's per-head attention sink logits): the entries `[h]` of C, like `b_Q`.
- Parameters of LayerNorm / RMSNorm modules: trainable (`norms="trainable"`, default) or frozen.
  These are the pre-norms `ln1`, `ln2`, `ln_final`, the sandwich post-norms `ln1_post`, `ln2_post`
  (Gemma 2/3), and the post-norm blocks' `ln1`, `ln2` (OLMo 2/3: there they normalise each
  sublayer's output, still a norm of the whole residual width).
- QK-norm weights (`attn.q_norm`, `attn.k_norm`: Qwen3, Gemma 3, Apertus per head; OLMo 2/3 and
  OLMoE over all heads at once): one tensor shared by every head of a layer, like the norms, so
  they follow the norm policy (`qk_norm="with-norms"`, default) or are frozen (`qk_norm="frozen"`).
- Everything else is frozen: embeddings, positional embeddings, MLPs, and with them a
  mixture-of-experts layer's router (`mlp.W_gate`) and experts (`mlp.experts.*`), the unembedding,
  anything unknown. A head set never trains an expert: the sparse controls (near-zero, random)
  and ln-only freeze them too; only `FULL` trains them.

On a `TransformerBridge` the same rules act on the HF parameters themselves (`_bridge_masks`):
head h of layer l is rows `h*d_head:(h+1)*d_head` of `q_proj` (weight and bias) and the same
columns of `o_proj.weight`; KV group g is those rows of `k_proj` / `v_proj` (each head's own
rows when there is no grouping); `o_proj.bias` is `b_O`; the HF norm modules the bridge maps and
the QK-norms follow the norm policies; everything else is frozen. GPT-2's fused Conv1D `c_attn`
is masked through the q/k/v views the bridge splits it into (`bridge.split_views`): each view's
mask is written into `c_attn`'s mask at the same memory, so head h is columns `i*D + h*d_head ...`
of `c_attn` (i = 0, 1, 2 for q, k, v; D = n_heads * d_head), and rows `h*d_head:(h+1)*d_head` of
the Conv1D `c_proj`; Phi-3's `qkv_proj` likewise, through its q/k/v row-block views. NeoX's and
BLOOM's fused `query_key_value`, which the bridge copies, are refused.

`full_masks` (full fine-tuning) and `ln_only_masks` (no heads, norms only) are the two controls.
`masked_training` applies masks to a model for the duration of a `with` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from circuit_transfer.models.backend import AbstractAttention, LayerNorm, Model, RMSNorm
from circuit_transfer.models.bridge import attention_params, is_bridge, norm_modules, split_views

ParamMasks = dict[str, torch.Tensor]
"""Parameter name (as in `model.named_parameters()`) -> 0/1 tensor of that parameter's shape,
dtype and device; 1 = the entry may change during training."""

Head = tuple[int, int]
"""(layer, head) with 0 <= layer < n_layers and 0 <= head < n_heads."""


@runtime_checkable
class HasHeads(Protocol):
    """Anything with a `.heads` attribute listing (layer, head) pairs, e.g. a discovered `Circuit`."""

    heads: Iterable[Any]


FULL: Literal["full"] = "full"
"""Head spec meaning 'every parameter of the model is trainable' (full fine-tuning)."""

HeadSpec = Iterable[Any] | HasHeads | Literal["full"]
"""Which heads to train: (layer, head) pairs (ints, numpy or 0-d tensor integers; a pair may be a
tuple or a list), an object with `.heads` holding such pairs, or `FULL`. Checked by
`normalize_heads`, hence the loose annotation."""

_PER_HEAD = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "sinks")
_QK_NORMS = ("q_norm", "k_norm")
_PER_KV_GROUP = ("_W_K", "_W_V", "_b_K", "_b_V")


@dataclass(frozen=True)
class MaskPolicy:
    """The choices the papers leave open (docs/method.md §5) about which shared tensors a head set may change.

    Attributes:
        b_O: the attention output bias, shared by all heads of a layer: "frozen", or trainable
            when any head of the layer is selected ("any-head").
        gqa_kv: grouped-query K/V (`_W_K, _W_V, _b_K, _b_V`), shared by a group of query heads:
            trainable when any query head of the group is selected ("any-query-head") or never.
        norms: LayerNorm/RMSNorm weights and biases (pre-, post- and sandwich norms):
            "trainable" or "frozen".
        qk_norm: the QK-norm weights (`attn.q_norm`, `attn.k_norm`), shared by the heads of a
            layer: as the norms ("with-norms") or "frozen" whatever the norms do.
    """

    b_O: Literal["frozen", "any-head"] = "frozen"
    gqa_kv: Literal["any-query-head", "never"] = "any-query-head"
    norms: Literal["trainable", "frozen"] = "trainable"
    qk_norm: Literal["with-norms", "frozen"] = "with-norms"

    def __post_init__(self) -> None:
        for name, allowed in (
            ("b_O", ("frozen", "any-head")),
            ("gqa_kv", ("any-query-head", "never")),
            ("norms", ("trainable", "frozen")),
            ("qk_norm", ("with-norms", "frozen")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"MaskPolicy.{name} must be one of {allowed}, got {getattr(self, name)!r}")


@dataclass(frozen=True, eq=False)
class TrainableSet:
    """What a set of masks lets change: counts overall and per tensor.

    Attributes:
        masks: the masks themselves (see `ParamMasks`).
        n_trainable: number of parameter entries whose mask is 1.
        n_total: number of parameter entries in the model.
        fraction: n_trainable / n_total.
        per_tensor: name -> (trainable entries, total entries), for every parameter.
        heads: the selected heads, sorted (None for full fine-tuning).
    """

    masks: ParamMasks
    n_trainable: int
    n_total: int
    fraction: float
    per_tensor: dict[str, tuple[int, int]]
    heads: tuple[Head, ...] | None = None

    @classmethod
    def from_masks(
        cls, masks: Mapping[str, torch.Tensor], heads: tuple[Head, ...] | None = None
    ) -> TrainableSet:
        """Summarise `masks`."""
        per_tensor = {name: (int(m.count_nonzero()), m.numel()) for name, m in masks.items()}
        n_trainable = sum(t for t, _ in per_tensor.values())
        n_total = sum(n for _, n in per_tensor.values())
        return cls(
            masks=dict(masks),
            n_trainable=n_trainable,
            n_total=n_total,
            fraction=n_trainable / n_total if n_total else 0.0,
            per_tensor=per_tensor,
            heads=heads,
        )

    @property
    def trainable_tensors(self) -> list[str]:
        """Names of the parameters with at least one trainable entry."""
        return [name for name, (t, _) in self.per_tensor.items() if t > 0]

    @property
    def partial_tensors(self) -> list[str]:
        """Names of the parameters with some, but not all, entries trainable (these get hooks)."""
        return [name for name, (t, n) in self.per_tensor.items() if 0 < t < n]

    def table(self) -> str:
        """A per-tensor breakdown (trainable tensors only) as a markdown table."""
        lines = ["| parameter | trainable | total | fraction |", "|---|---:|---:|---:|"]
        for name, (t, n) in self.per_tensor.items():
            if t:
                lines.append(f"| {name} | {t:,} | {n:,} | {t / n:.2%} |")
        lines.append(f"| **all** | {self.n_trainable:,} | {self.n_total:,} | {self.fraction:.4%} |")
        return "\n".join(lines)

    def __repr__(self) -> str:
        n_tensors = len(self.per_tensor)
        n_full = sum(1 for t, n in self.per_tensor.values() if t == n and n)
        if self.heads is None:
            heads = "all (full fine-tuning)"
        else:
            shown = ", ".join(f"L{layer}H{head}" for layer, head in self.heads[:12])
            heads = f"{len(self.heads)} [{shown}{', ...' if len(self.heads) > 12 else ''}]"
        return (
            f"TrainableSet({self.n_trainable:,} of {self.n_total:,} parameters trainable "
            f"({self.fraction:.4%}); tensors: {len(self.trainable_tensors)} of {n_tensors} trainable, "
            f"{n_full} fully, {len(self.partial_tensors)} partially (head-masked); heads: {heads})"
        )


def _model_shape(model: Model) -> str:
    cfg = model.cfg
    kv = f", {cfg.n_key_value_heads} KV heads" if cfg.n_key_value_heads else ""
    return f"{cfg.n_layers} layers x {cfg.n_heads} heads{kv}"


def normalize_heads(model: Model, heads: HeadSpec) -> tuple[Head, ...] | None:
    """Validate a head spec against the model; sorted unique (layer, head) pairs, or None for FULL.

    Raises:
        ValueError: a head is not a pair of non-negative integers inside the model's shape.
    """
    if isinstance(heads, str):
        if heads == FULL:
            return None
        raise ValueError(
            f"unknown head spec {heads!r}: use (layer, head) pairs, an object with .heads, or 'full'"
        )
    items: Iterable[Any] = heads.heads if isinstance(heads, HasHeads) else heads
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    out: set[Head] = set()
    for item in items:
        try:
            layer, head = item
        except (TypeError, ValueError):
            raise ValueError(f"head {item!r} is not a (layer, head) pair") from None
        try:
            layer_i, head_i = _as_index(layer), _as_index(head)
        except TypeError:
            raise ValueError(f"head {item!r} is not a pair of integers") from None
        if not (0 <= layer_i < n_layers and 0 <= head_i < n_heads):
            raise ValueError(
                f"head (layer {layer_i}, head {head_i}) is outside the model: {_model_shape(model)} "
                f"(valid: layer 0..{n_layers - 1}, head 0..{n_heads - 1})"
            )
        out.add((layer_i, head_i))
    return tuple(sorted(out))


def _as_index(x: object) -> int:
    """An integer index from an int, a numpy integer or a 0-d integer tensor (not a bool or float)."""
    if isinstance(x, bool):
        raise TypeError
    if isinstance(x, torch.Tensor):
        if x.numel() != 1 or x.dtype.is_floating_point or x.dtype == torch.bool:
            raise TypeError
        return int(x.item())
    if hasattr(x, "__index__"):
        return int(x.__index__())  # type: ignore[attr-defined]
    raise TypeError


def head_grad_masks(model: Model, heads: HeadSpec, policy: MaskPolicy = MaskPolicy()) -> ParamMasks:
    """A 0/1 mask for every named parameter of `model`: 1 where head set `heads` may change it.

    Args:
        model: the model to mask (its parameters' shapes, dtypes and devices are used).
        heads: (layer, head) pairs, an object with `.heads`, or `FULL` (every entry trainable,
            policy ignored). An empty head set gives the norms only (or nothing, with
            `policy.norms == "frozen"`).
        policy: what happens to shared tensors (b_O, GQA K/V, norms, QK-norms).

    Returns:
        name -> mask, in `model.named_parameters()` order.
    """
    selected = normalize_heads(model, heads)
    if selected is not None and is_bridge(model):
        return _bridge_masks(model, selected, policy)
    masks: ParamMasks = {}
    for name, param in model.named_parameters():
        mask = torch.zeros_like(param, requires_grad=False)
        if selected is None:
            mask.fill_(1)
        else:
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name)
            if isinstance(module, (LayerNorm, RMSNorm)):
                is_qk_norm = module_name.rpartition(".")[2] in _QK_NORMS
                if policy.norms == "trainable" and not (is_qk_norm and policy.qk_norm == "frozen"):
                    mask.fill_(1)
            elif isinstance(module, AbstractAttention):
                _fill_attention_mask(mask, module, attr, selected, policy, model.cfg.n_heads)
        masks[name] = mask
    return masks


def _fill_attention_mask(
    mask: torch.Tensor,
    attn: AbstractAttention,
    attr: str,
    selected: tuple[Head, ...],
    policy: MaskPolicy,
    n_heads: int,
) -> None:
    layer = attn.layer_id
    if layer is None:
        raise ValueError("attention module without layer_id: cannot tell which heads it holds")
    layer_heads = [head for (at, head) in selected if at == layer]
    if attr in _PER_HEAD:
        if mask.shape[0] != n_heads:
            raise ValueError(
                f"{attr} of layer {layer} has shape {tuple(mask.shape)}; expected {n_heads} heads first"
            )
        mask[layer_heads] = 1
    elif attr in _PER_KV_GROUP:
        if policy.gqa_kv == "never":
            return
        n_kv = mask.shape[0]
        if n_heads % n_kv:
            raise ValueError(
                f"{attr} of layer {layer}: {n_heads} query heads do not split into {n_kv} KV groups"
            )
        repeats = n_heads // n_kv
        mask[sorted({h // repeats for h in layer_heads})] = 1
    elif attr == "b_O":
        if policy.b_O == "any-head" and layer_heads:
            mask.fill_(1)
    # any other attention parameter stays frozen


_Slices = tuple[Literal["rows", "cols"], list[int], int] | bool
"""What a bridge parameter's mask gets: True (every entry), False (none), or (axis, blocks, d_head):
rows (axis 0) or columns (axis 1) `i*d_head:(i+1)*d_head` for each block index i."""


def _bridge_masks(model: Model, selected: tuple[Head, ...], policy: MaskPolicy) -> ParamMasks:
    """Head masks on a TransformerBridge's HF parameters (rows / columns per head, see the top)."""
    plan: dict[int, _Slices] = {}  # id(parameter) -> what its mask gets; absent: frozen
    for module in norm_modules(model):
        for param in module.parameters():
            plan[id(param)] = policy.norms == "trainable"
    qk_on = policy.norms == "trainable" and policy.qk_norm == "with-norms"
    for ap in attention_params(model):
        heads = [h for (layer, h) in selected if layer == ap.layer]
        if ap.n_kv_heads == ap.n_heads:
            groups = heads
        elif policy.gqa_kv == "any-query-head":
            groups = sorted({h // (ap.n_heads // ap.n_kv_heads) for h in heads})
        else:
            groups = []
        for linear, n_out, blocks in (
            (ap.q, ap.n_heads, heads),
            (ap.k, ap.n_kv_heads, groups),
            (ap.v, ap.n_kv_heads, groups),
        ):
            if linear.out_features != n_out * ap.d_head:
                raise NotImplementedError(
                    f"layer {ap.layer}: a projection has {linear.out_features} outputs, "
                    f"not {n_out} heads x {ap.d_head}; no head-mask rule for it"
                )
            for param in linear.parameters():
                plan[id(param)] = ("rows", blocks, ap.d_head)
        plan[id(ap.o.weight)] = (ap.o_heads_axis, heads, ap.d_head)
        for param in ap.fused:
            plan[id(param)] = False  # filled from the views of it below
        if ap.o.bias is not None:
            plan[id(ap.o.bias)] = policy.b_O == "any-head" and bool(heads)
        for norm in (ap.q_norm, ap.k_norm):
            for param in () if norm is None else norm.parameters():
                plan[id(param)] = qk_on
        for name, param in model.blocks[ap.layer].attn.original_component.named_parameters():
            if id(param) not in plan:
                raise NotImplementedError(
                    f"no head-mask rule for attention parameter {name} of layer {ap.layer}"
                )
    masks: ParamMasks = {}
    for name, param in model.named_parameters():
        mask = torch.zeros_like(param, requires_grad=False)
        what = plan.get(id(param), False)
        if what is True:
            mask.fill_(1)
        elif what:
            axis, blocks, d = what
            for i in blocks:
                (mask[i * d : (i + 1) * d] if axis == "rows" else mask[:, i * d : (i + 1) * d]).fill_(1)
        masks[name] = mask
    for name, (owner, view) in split_views(model).items():
        view(masks[owner]).copy_(masks[name])  # the same memory: a view's entry is its owner's
    return masks


def full_masks(model: Model) -> ParamMasks:
    """Masks for full fine-tuning: every entry of every parameter may change."""
    return head_grad_masks(model, FULL)


def ln_only_masks(model: Model) -> ParamMasks:
    """Masks that let only LayerNorm/RMSNorm parameters change (no heads)."""
    return head_grad_masks(model, [], MaskPolicy(norms="trainable"))


def trainable_set(model: Model, heads: HeadSpec, policy: MaskPolicy = MaskPolicy()) -> TrainableSet:
    """`head_grad_masks` plus the counts: how many parameters can change, overall and per tensor."""
    selected = normalize_heads(model, heads)  # once: `heads` may be a one-shot iterator
    spec = FULL if selected is None else selected
    return TrainableSet.from_masks(head_grad_masks(model, spec, policy), heads=selected)


def _mask_grad_hook(keep: torch.Tensor):
    """A tensor hook that zeros the gradient where `keep` is False (NaN/inf-safe, unlike g * mask)."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        return torch.where(keep, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))

    return hook


@dataclass
class _Applied:
    handles: list = field(default_factory=list)
    requires_grad: dict[str, bool] = field(default_factory=dict)


@contextlib.contextmanager
def masked_training(
    model: Model, heads: HeadSpec, policy: MaskPolicy = MaskPolicy()
) -> Iterator[TrainableSet]:
    """Within the block, backward only produces gradients where `heads` (under `policy`) may change.

    - Parameters with no trainable entry get `requires_grad=False` (backward skips them: no
      weight gradient is computed for the MLPs, embeddings, unembedding, ...).
    - Fully trainable parameters get `requires_grad=True` and no hook.
    - Partially trainable ones (head-masked W_Q, ...) get `requires_grad=True` and a gradient
      hook that zeros every non-selected entry before it reaches `.grad`.

    On exit, also on an exception, the hooks are removed and every parameter's original
    `requires_grad` is restored. Gradients already accumulated in `.grad` are left as they are.
    Pair it with `optim.MaskedAdamW` so that weight decay and momentum respect the masks too.

    Yields:
        The TrainableSet (masks and counts).
    """
    tset = trainable_set(model, heads, policy)
    applied = _Applied()
    try:
        for name, param in model.named_parameters():
            applied.requires_grad[name] = param.requires_grad
            n_on, n = tset.per_tensor[name]
            param.requires_grad_(n_on > 0)
            if 0 < n_on < n:
                applied.handles.append(param.register_hook(_mask_grad_hook(tset.masks[name].bool())))
        yield tset
    finally:
        for handle in applied.handles:
            handle.remove()
        params = dict(model.named_parameters())
        for name, flag in applied.requires_grad.items():
            params[name].requires_grad_(flag)
