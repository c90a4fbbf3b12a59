"""Build the model-access layer (`circuit_transfer.models.access`) from a `HookedTransformer`.

The only module that reads TransformerLens's component classes for the CD-T rules. Dispatch is
on the components the model actually holds (so folded and unfolded models both work) and on the
config fields that change their forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from circuit_transfer.models.backend import (
    HookedTransformer,
    LayerNorm,
    LayerNormPre,
    RMSNorm,
    RMSNormPre,
    require_hooked,
)

require_hooked("circuit_transfer.models.access_hooked")  # TL 4.x: only the bridge builder applies

from transformer_lens.components.mlps.gpt_oss_moe import GPT_OSS_ALPHA, GPT_OSS_LIMIT, GptOssMoE  # noqa: E402
from transformer_lens.components.mlps.moe import MoE  # noqa: E402
from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES  # noqa: E402

from circuit_transfer.models.access import (  # noqa: E402
    MLP,
    NO_NORM,
    Attention,
    Block,
    Experts,
    ModelAccess,
    Norm,
    QKNorm,
    Rotary,
)

OLMO_QK_NORM_ARCHITECTURES = {"OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM"}
"""Architectures whose QK-norm runs over all heads at once (TransformerLens's OLMo branch)."""


def _nonzero(bias: Tensor | None) -> Tensor | None:
    return bias if bias is not None and bool(bias.any()) else None


def _norm(module: nn.Module | None, hook: str | None) -> Norm:
    """The Norm for a TransformerLens norm module (dispatch on its class)."""
    if module is None or isinstance(module, nn.Identity):
        return NO_NORM
    if isinstance(module, LayerNorm):
        return Norm("LN", module.w, _nonzero(module.b), module.eps, hook, module.length)
    if isinstance(module, RMSNorm):
        return Norm("RMS", module.w, None, module.eps, hook, module.length)
    if isinstance(module, LayerNormPre):
        return Norm("LNPre", None, None, module.eps, hook, module.cfg.d_model)
    if isinstance(module, RMSNormPre):
        return Norm("RMSPre", None, None, module.eps, hook, module.cfg.d_model)
    raise NotImplementedError(f"CD-T has no rule for norm module {type(module).__name__}")


def hooked_final_norm(model: HookedTransformer) -> Norm:
    """The Norm of the model's final norm (`models.access.final_norm`)."""
    return _norm(getattr(model, "ln_final", None), "ln_final")


def _attention(model: HookedTransformer, layer: int) -> Attention:
    cfg = model.cfg
    attn = model.blocks[layer].attn
    grouped = cfg.n_key_value_heads is not None and not cfg.ungroup_grouped_query_attention
    if grouped:
        W_K, b_K, W_V, b_V, repeat = attn._W_K, attn._b_K, attn._W_V, attn._b_V, attn.repeat_kv_heads
    else:
        W_K, b_K, W_V, b_V, repeat = attn.W_K, attn.b_K, attn.W_V, attn.b_V, 1
    position = {"standard": "absolute"}.get(cfg.positional_embedding_type, cfg.positional_embedding_type)
    rotary = (
        Rotary(cfg.rotary_dim, cfg.rotary_adjacent_pairs, attn.rotary_sin, attn.rotary_cos)
        if position == "rotary"
        else None
    )
    alibi = attn.create_alibi_multipliers(cfg.n_heads, W_K.device) if position == "alibi" else None
    qk_norm = None
    if cfg.use_qk_norm or cfg.original_architecture in OLMO_QK_NORM_ARCHITECTURES:
        qk_norm = QKNorm(_norm(attn.q_norm, None), _norm(attn.k_norm, None), per_head=bool(cfg.use_qk_norm))
    # TransformerLens scales only in eval mode
    logn = (cfg.train_seq_length or cfg.n_ctx) if cfg.use_logn_attn and not attn.training else None
    soft_cap = cfg.attn_scores_soft_cap if cfg.attn_scores_soft_cap > 0 else None
    return Attention(
        W_Q=attn.W_Q,
        b_Q=_nonzero(attn.b_Q),
        W_K=W_K,
        b_K=_nonzero(b_K),
        W_V=W_V,
        b_V=_nonzero(b_V),
        W_O=attn.W_O,
        b_O=_nonzero(attn.b_O),
        repeat=repeat,
        scale=float(attn.attn_scale),
        mask=cfg.attention_dir,
        window=cfg.window_size if attn.attn_type == "local" else None,
        position=position,
        rotary=rotary,
        alibi_slopes=alibi,
        pos_embed_hook="hook_pos_embed" if position == "shortformer" else None,
        qk_norm=qk_norm,
        clip_qkv=cfg.clip_qkv,
        logn_train_length=logn,
        soft_cap=soft_cap,
        sinks=attn.sinks if cfg.use_attention_sinks else None,
    )


def _gpt_oss_gate(gate: Tensor) -> Tensor:
    gate = gate.clamp(max=GPT_OSS_LIMIT)
    return gate * torch.sigmoid(gate * GPT_OSS_ALPHA)


def _gpt_oss_up(up: Tensor) -> Tensor:
    return up.clamp(min=-GPT_OSS_LIMIT, max=GPT_OSS_LIMIT) + 1


def _linear_weight(linear: nn.Linear) -> Tensor:
    """An `nn.Linear`'s weight in TransformerLens's right-multiplying layout `[d_in, d_out]`."""
    return linear.weight.T


def _experts(model: HookedTransformer, layer: int) -> Experts:
    moe = model.blocks[layer].mlp
    prefix = f"blocks.{layer}.mlp"
    if isinstance(moe, GptOssMoE):
        experts = tuple(
            MLP(
                W_in=_linear_weight(e.W_in),
                b_in=_nonzero(e.W_in.bias),
                W_out=_linear_weight(e.W_out),
                b_out=_nonzero(e.W_out.bias),
                act_fn=_gpt_oss_gate,
                W_gate=_linear_weight(e.W_gate),
                b_gate=_nonzero(e.W_gate.bias),
                up_fn=_gpt_oss_up,
            )
            for e in moe.experts
        )
        order, renormalize = "topk_softmax", False
    else:
        experts = tuple(
            MLP(
                W_in=_linear_weight(e.W_in),
                b_in=None,
                W_out=_linear_weight(e.W_out),
                b_out=None,
                act_fn=e.act_fn,
                W_gate=_linear_weight(e.W_gate),
            )
            for e in moe.experts
        )
        order, renormalize = "softmax_topk", bool(model.cfg.norm_topk_prob)
    return Experts(
        experts=experts,
        W_router=_linear_weight(moe.W_gate),
        b_router=_nonzero(moe.W_gate.bias),
        per_token=moe.experts_per_token,
        order=order,
        renormalize=renormalize,
        weights_hook=f"{prefix}.hook_expert_weights",
        indices_hook=f"{prefix}.hook_expert_indices",
    )


def _mlp(model: HookedTransformer, layer: int) -> MLP | Experts | None:
    cfg = model.cfg
    if cfg.attn_only:
        return None
    mlp = model.blocks[layer].mlp
    if isinstance(mlp, MoE | GptOssMoE):
        return _experts(model, layer)
    prefix = f"blocks.{layer}.mlp"
    act_fn: Callable[[Tensor], Tensor] = mlp.act_fn
    if cfg.gated_mlp:
        if cfg.is_layer_norm_activation():
            raise NotImplementedError(f"CD-T has no rule for a gated MLP with act_fn={cfg.act_fn!r}")
        return MLP(
            W_in=mlp.W_in,
            b_in=None,
            W_out=mlp.W_out,
            b_out=_nonzero(mlp.b_out),
            act_fn=act_fn,
            W_gate=mlp.W_gate,
            b_post=_nonzero(mlp.b_in),
            hook=prefix,
        )
    act_norm = _norm(mlp.ln, f"{prefix}.ln") if cfg.is_layer_norm_activation() else None
    return MLP(
        W_in=mlp.W_in,
        b_in=_nonzero(mlp.b_in),
        W_out=mlp.W_out,
        b_out=_nonzero(mlp.b_out),
        act_fn=act_fn,
        act_norm=act_norm,
        hook=prefix,
    )


def hooked_access(model: HookedTransformer) -> ModelAccess:
    """The access layer of a HookedTransformer (its live parameters, no copies)."""
    cfg = model.cfg
    blocks = []
    for layer, blk in enumerate(model.blocks):
        p = f"blocks.{layer}."
        blocks.append(
            Block(
                index=layer,
                ln1=_norm(blk.ln1, p + "ln1"),
                ln2=None if cfg.attn_only else _norm(blk.ln2, p + "ln2"),
                ln1_post=_norm(blk.ln1_post, p + "ln1_post") if hasattr(blk, "ln1_post") else None,
                ln2_post=_norm(blk.ln2_post, p + "ln2_post") if hasattr(blk, "ln2_post") else None,
                attn=_attention(model, layer),
                mlp=_mlp(model, layer),
                parallel=bool(cfg.parallel_attn_mlp),
                post_norm=cfg.original_architecture in POST_NORM_ARCHITECTURES,
            )
        )
    soft_cap = cfg.output_logits_soft_cap
    return ModelAccess(
        blocks=tuple(blocks),
        ln_final=hooked_final_norm(model),
        W_U=model.unembed.W_U,
        b_U=_nonzero(model.unembed.b_U),
        logits_soft_cap=soft_cap if soft_cap is not None and soft_cap > 0 else None,
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        n_heads=cfg.n_heads,
        dtype=cfg.dtype,
        device=model.W_U.device,
    )
