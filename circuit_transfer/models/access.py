"""The narrow model-access layer: what the CD-T rules need to know about a model, per layer.

The CD-T engine (and its slow reference) never reads a TransformerLens component: it asks a
`ModelAccess` for the norms (kind, weight, bias, eps), the attention weights per head and per KV
group, the positional treatment, the layer's mask, the soft-caps, the MLP or the experts, and the
block's flags. `model_access(model)` builds it from a `HookedTransformer` (`access_hooked.py`) or
from a `TransformerBridge` (`access_bridge.py`): the same dataclasses, so every rule is written once
for both backends.

Weights are the model's live parameters (no copies), in TransformerLens's layout:
`W_Q [head, d_model, d_head]`, `W_K/W_V [kv_head, d_model, d_head]`, `W_O [head, d_head, d_model]`,
`W_in/W_gate [d_model, d_mlp]`, `W_out [d_mlp, d_model]`, `W_U [d_model, vocab]`. A bias that is
identically zero is stored as None (nothing to share). Build the access after a forward pass on
the sequence length in question: TransformerLens extends (and, for dynamic NTK, rescales) its
rotary tables lazily during the forward pass.

Hook names: each norm names the hook prefix whose `hook_scale` / `hook_normalized` the clean run
records (`blocks.3.ln1`); per-head QK-norms have none (their clean scale is recomputed from the
clean q and k). Everything else is addressed by TransformerLens's hook names in the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

NormKind = Literal["LN", "LNPre", "RMS", "RMSPre", "none"]
"""LayerNorm (centre, scale, weight, bias), its folded form (centre, scale), RMSNorm (scale,
weight), its folded form (scale only), or no normalisation."""

MaskKind = Literal["causal", "bidirectional"]
PositionKind = Literal["absolute", "rotary", "alibi", "shortformer"]
"""Where a layer's positional information enters: `absolute` (learned or none, in the embedding,
upstream of every source), `rotary` (a rotation of q and k per position), `alibi` (a fixed bias on
the scores), `shortformer` (learned positions added to the q and k inputs only)."""


@dataclass(frozen=True)
class Norm:
    """One normalisation: `kind`, its weight and bias (None when absent or zero), eps and hooks.

    Attributes:
        hook: prefix of this norm's `hook_scale` / `hook_normalized` in the clean run, or None
            when the scale is recomputed from the clean input (QK-norm).
        length: the normalised axis length (d_model, d_mlp, d_head, or n_heads * d_head).
    """

    kind: NormKind
    weight: Float[Tensor, " length"] | None
    bias: Float[Tensor, " length"] | None
    eps: float
    hook: str | None
    length: int

    @property
    def centres(self) -> bool:
        return self.kind in ("LN", "LNPre")


NO_NORM = Norm("none", None, None, 0.0, None, 0)


@dataclass(frozen=True)
class Rotary:
    """Rotary embedding of one layer: the first `dim` features of each head, its own tables.

    `adjacent_pairs` rotates (x0, x1), (x2, x3), ... (GPT-J); otherwise x_i with x_{i + dim/2}
    (GPT-NeoX, Llama). Tables are indexed by position id: `[n_positions, dim]`.
    """

    dim: int
    adjacent_pairs: bool
    sin: Float[Tensor, "n_positions dim"]
    cos: Float[Tensor, "n_positions dim"]


@dataclass(frozen=True)
class QKNorm:
    """RMSNorm on q and k (Qwen3, Gemma 3: per head over d_head; OLMo 2/3, OLMoE: over all heads)."""

    q: Norm
    k: Norm
    per_head: bool


@dataclass(frozen=True)
class Attention:
    """One attention layer.

    Attributes:
        repeat: query heads per KV group (1 without grouped-query attention).
        scale: scores are `q . k / scale`.
        mask: causal or bidirectional; `window` (local attention) additionally limits each query
            to the last `window` keys, itself included.
        position: how positions enter (see PositionKind); `rotary` and `alibi_slopes` hold the
            layer's own parameters; `pos_embed_hook` names the shortformer position embedding.
        qk_norm: RMSNorm on q and k before rotary, or None.
        clip_qkv: q, k and v clamped to [-c, c] after the projection and any QK-norm (OLMo).
        logn_train_length: Qwen-1's log-n query scaling beyond this length (None: off).
        soft_cap: scores become `c * tanh(scores / c)` before the mask (Gemma 2), or None.
        sinks: per-head learned sink logit that joins the softmax as an extra key (GPT-OSS).
    """

    W_Q: Float[Tensor, "head d_model d_head"]
    b_Q: Float[Tensor, "head d_head"] | None
    W_K: Float[Tensor, "kv_head d_model d_head"]
    b_K: Float[Tensor, "kv_head d_head"] | None
    W_V: Float[Tensor, "kv_head d_model d_head"]
    b_V: Float[Tensor, "kv_head d_head"] | None
    W_O: Float[Tensor, "head d_head d_model"]
    b_O: Float[Tensor, " d_model"] | None
    repeat: int
    scale: float
    mask: MaskKind
    window: int | None
    position: PositionKind
    rotary: Rotary | None
    alibi_slopes: Float[Tensor, " head"] | None
    pos_embed_hook: str | None
    qk_norm: QKNorm | None
    clip_qkv: float | None
    logn_train_length: int | None
    soft_cap: float | None
    sinks: Float[Tensor, " head"] | None

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[0]


@dataclass(frozen=True)
class MLP:
    """A dense MLP; gated when `W_gate` is set.

    Plain: `post = act_fn(x W_in + b_in)` (SoLU-LN: then `act_norm`), `out = post W_out + b_out`.
    Gated: `post = act_fn(x W_gate + b_gate) * up_fn(x W_in + b_in) + b_post` (TransformerLens's
    GatedMLP adds its `b_in` after the product: that is `b_post` here).

    Attributes:
        hook: the clean run's hook prefix (`blocks.3.mlp`), or None for an expert (its clean
            pre-activations are recomputed from the clean MLP input).
    """

    W_in: Float[Tensor, "d_model d_mlp"]
    b_in: Float[Tensor, " d_mlp"] | None
    W_out: Float[Tensor, "d_mlp d_model"]
    b_out: Float[Tensor, " d_model"] | None
    act_fn: Callable[[Tensor], Tensor]
    W_gate: Float[Tensor, "d_model d_mlp"] | None = None
    b_gate: Float[Tensor, " d_mlp"] | None = None
    b_post: Float[Tensor, " d_mlp"] | None = None
    up_fn: Callable[[Tensor], Tensor] | None = None
    act_norm: Norm | None = None
    hook: str | None = None

    @property
    def gated(self) -> bool:
        return self.W_gate is not None


RoutingOrder = Literal["softmax_topk", "topk_softmax"]
"""Mixtral/OLMoE: softmax over all experts, then the top k (optionally renormalised); GPT-OSS:
top k of the router logits, then a softmax over those k."""


@dataclass(frozen=True)
class Experts:
    """A mixture of experts: a router choosing `per_token` gated-MLP experts per token.

    Attributes:
        weights_hook / indices_hook: the clean run's routing hooks (`hook_expert_weights`, which
            holds the softmax over all experts for `softmax_topk` and the scattered chosen weights
            for `topk_softmax`; `hook_expert_indices`, the chosen experts), both flattened over
            `(batch pos)`.
        renormalize: divide the chosen weights by their sum (`norm_topk_prob`).
    """

    experts: tuple[MLP, ...]
    W_router: Float[Tensor, "d_model n_experts"]
    b_router: Float[Tensor, " n_experts"] | None
    per_token: int
    order: RoutingOrder
    renormalize: bool
    weights_hook: str
    indices_hook: str


@dataclass(frozen=True)
class Block:
    """One transformer block.

    Attributes:
        ln1 / ln2: the norms before attention and MLP (pre-norm), or on their outputs when
            `post_norm` (OLMo 2/3: ln1 and ln2 normalise each sublayer's output before the add).
        ln1_post / ln2_post: Gemma 2/3 "sandwich" norms on the sublayer outputs, or None.
        mlp: the MLP, the experts, or None (attention-only).
        parallel: attention and MLP both read the block input (GPT-J, NeoX).
    """

    index: int
    ln1: Norm
    ln2: Norm | None
    ln1_post: Norm | None
    ln2_post: Norm | None
    attn: Attention
    mlp: MLP | Experts | None
    parallel: bool
    post_norm: bool


@dataclass(frozen=True)
class ModelAccess:
    """Everything the CD-T rules read from a model."""

    blocks: tuple[Block, ...]
    ln_final: Norm
    W_U: Float[Tensor, "d_model vocab"]
    b_U: Float[Tensor, " vocab"] | None
    logits_soft_cap: float | None
    d_model: int
    d_head: int
    n_heads: int
    dtype: torch.dtype
    device: torch.device

    @property
    def n_layers(self) -> int:
        return len(self.blocks)


def model_access(model: object, n_positions: int | None = None) -> ModelAccess:
    """The access layer of a model (dispatch on its class); unsupported settings are refused first.

    `n_positions`: the sequence length about to be decomposed; the bridge computes its rotary
    tables for it (a HookedTransformer has them from its last forward pass).
    """
    from circuit_transfer.models.backend import HookedTransformer, TransformerBridge

    if isinstance(model, HookedTransformer):
        from circuit_transfer.models.access_hooked import hooked_access

        return hooked_access(model)
    if isinstance(model, TransformerBridge):
        from circuit_transfer.models.access_bridge import bridge_access

        return bridge_access(model, n_positions)
    raise NotImplementedError(
        f"no model-access builder for {type(model).__name__}, so no CD-T on it: CD-T needs a "
        "HookedTransformer or a TransformerBridge"
    )


def final_norm(model: object) -> Norm:
    """The final norm of a model on either backend, as it is applied (Gemma's `1 + w` on the
    bridge), without building the whole access: the views' direct read-out needs only this."""
    from circuit_transfer.models.backend import TransformerBridge

    if isinstance(model, TransformerBridge):
        from circuit_transfer.models.access_bridge import bridge_final_norm

        return bridge_final_norm(model)
    from circuit_transfer.models.access_hooked import hooked_final_norm

    return hooked_final_norm(model)
