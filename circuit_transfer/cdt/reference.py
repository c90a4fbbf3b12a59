"""Slow, faithful CD-T for one source: carries beta AND gamma, applying each rule to both parts.

This is the cross-check for the batched engine. Unlike the engine it never recovers gamma as
`full - beta`: gamma is propagated by its own rule (e.g. `gamma' = f(gamma)`), heads are looped one
by one, the full pattern is recomputed from its own Q and K, and norms compute their scale from
`beta + gamma`. So `beta + gamma == run_with_cache` is a real test of the rules here, and
`engine == reference` then shows the engine's shortcuts are exact.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.components import AbstractAttention, LayerNorm, LayerNormPre, RMSNorm, RMSNormPre

from circuit_transfer.cdt.rules import Rules

Pair = tuple[Tensor, Tensor]
"""(beta, gamma) of one activation."""


def _linear_pair(w_beta: Tensor, w_gamma: Tensor, bias: Tensor | None, rules: Rules) -> Pair:
    if bias is not None:
        if rules.bias == "magnitude":
            rel, irrel = w_beta.abs(), w_gamma.abs()
            total = rel + irrel
            share = torch.where(total > 0, rel / total, torch.full_like(total, 0.5))
            w_beta, w_gamma = w_beta + bias * share, w_gamma + bias * (1 - share)
        else:
            w_gamma = w_gamma + bias
    if rules.stabilize:
        opposite = w_beta * w_gamma < 0
        total = w_beta + w_gamma
        beta_larger = w_beta.abs() > w_gamma.abs()
        w_beta, w_gamma = (
            torch.where(opposite, torch.where(beta_larger, total, 0.0), w_beta),
            torch.where(opposite, torch.where(beta_larger, 0.0, total), w_gamma),
        )
    return w_beta, w_gamma


def _norm_pair(module: nn.Module, beta: Tensor, gamma: Tensor, eps: float, rules: Rules) -> Pair:
    if isinstance(module, nn.Identity):
        return beta, gamma
    full = beta + gamma
    if isinstance(module, LayerNorm | LayerNormPre):
        beta = beta - beta.mean(-1, keepdim=True)
        gamma = gamma - gamma.mean(-1, keepdim=True)
        full = full - full.mean(-1, keepdim=True)
    scale = (full.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    beta, gamma = beta / scale, gamma / scale
    if isinstance(module, LayerNormPre | RMSNormPre):
        return beta, gamma
    assert isinstance(module, LayerNorm | RMSNorm)
    bias = module.b if isinstance(module, LayerNorm) else None
    return _linear_pair(beta * module.w, gamma * module.w, bias, rules)


def _attention_pair(
    model: HookedTransformer,
    layer: int,
    x: Pair,
    score_mask: Bool[Tensor, "batch query key"],
    attention_mask: Int[Tensor, "batch pos"] | None,
    rules: Rules,
) -> list[Pair]:
    """Per-head (beta_z, gamma_z) of one block, heads in a plain loop."""
    attn = model.blocks[layer].attn
    cfg = model.cfg
    n_pos = x[0].shape[1]
    alibi = (
        AbstractAttention.create_alibi_bias(cfg.n_heads, n_pos, x[0].device)
        if cfg.positional_embedding_type == "alibi"
        else None
    )
    z_pairs = []
    for h in range(cfg.n_heads):
        q_b, q_g = _linear_pair(x[0] @ attn.W_Q[h], x[1] @ attn.W_Q[h], attn.b_Q[h], rules)
        k_b, k_g = _linear_pair(x[0] @ attn.W_K[h], x[1] @ attn.W_K[h], attn.b_K[h], rules)
        v_b, v_g = _linear_pair(x[0] @ attn.W_V[h], x[1] @ attn.W_V[h], attn.b_V[h], rules)
        if cfg.positional_embedding_type == "rotary":
            q_b, q_g, k_b, k_g = (
                attn.apply_rotary(t[:, :, None], 0, attention_mask)[:, :, 0] for t in (q_b, q_g, k_b, k_g)
            )
        q, k = q_b + q_g, k_b + k_g
        full_scores = q @ k.transpose(-1, -2) / attn.attn_scale
        if alibi is not None:
            full_scores = full_scores + alibi[h]
        full_pattern = torch.softmax(full_scores.masked_fill(~score_mask, float("-inf")), dim=-1).nan_to_num(
            0.0
        )
        if rules.attention == "decomposed":
            beta_scores = q_b @ k_b.transpose(-1, -2) / attn.attn_scale
            beta_pattern = torch.softmax(
                beta_scores.masked_fill(~score_mask, float("-inf")), dim=-1
            ).nan_to_num(0.0)
            gamma_pattern = full_pattern - beta_pattern
            z_pairs.append((beta_pattern @ v_b, beta_pattern @ v_g + gamma_pattern @ (v_b + v_g)))
        else:
            z_pairs.append((full_pattern @ v_b, full_pattern @ v_g))
    return z_pairs


def _attention_out_pair(model: HookedTransformer, layer: int, z_pairs: list[Pair], rules: Rules) -> Pair:
    attn = model.blocks[layer].attn
    w_beta = sum(z_b @ attn.W_O[h] for h, (z_b, _) in enumerate(z_pairs))
    w_gamma = sum(z_g @ attn.W_O[h] for h, (_, z_g) in enumerate(z_pairs))
    return _linear_pair(w_beta, w_gamma, attn.b_O, rules)


def _mlp_pair(model: HookedTransformer, layer: int, resid: Pair, rules: Rules) -> Pair:
    blk = model.blocks[layer]
    mlp, eps = blk.mlp, model.cfg.eps
    x_b, x_g = _norm_pair(blk.ln2, *resid, eps, rules)
    f = mlp.act_fn
    if model.cfg.gated_mlp:
        g_b, g_g = x_b @ mlp.W_gate, x_g @ mlp.W_gate
        u_b, u_g = x_b @ mlp.W_in, x_g @ mlp.W_in
        gamma_post = f(g_g) * u_g
        beta_post = f(g_b + g_g) * (u_b + u_g) - gamma_post
        post = _linear_pair(beta_post, gamma_post, mlp.b_in, rules)
    else:
        pre_b, pre_g = _linear_pair(x_b @ mlp.W_in, x_g @ mlp.W_in, mlp.b_in, rules)
        post = (f(pre_b + pre_g) - f(pre_g), f(pre_g))
        if model.cfg.is_layer_norm_activation():
            post = _norm_pair(mlp.ln, *post, eps, rules)
    return _linear_pair(post[0] @ mlp.W_out, post[1] @ mlp.W_out, mlp.b_out, rules)


@torch.no_grad()
def reference_decompose(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    head: tuple[int, int],
    baseline: Float[Tensor, "*mu_lead d_head"],
    rules: Rules = Rules(),
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    cache: ActivationCache | None = None,
) -> dict[str, Pair]:
    """(beta, gamma) at every residual hook of one source head and at `"logits"`.

    `baseline` is mu of the source head, broadcastable to its `hook_z` slice `[batch, pos, d_head]`.
    Only activations up to the source's `hook_z` are read from `cache` (the clean run of `tokens`;
    computed when not given).

    Keys: `blocks.{l}.hook_resid_post`, `blocks.{l}.hook_attn_out`, `blocks.{l}.hook_mlp_out`,
    `blocks.{l}.attn.hook_z` (layer >= the source's) and `"logits"`.
    """
    cfg = model.cfg
    layer, source = head
    if cache is None:
        _, cache = model.run_with_cache(tokens, attention_mask=attention_mask)
    n_pos = tokens.shape[1]
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=tokens.device).tril()
    if cfg.attention_dir == "bidirectional":
        causal = torch.ones_like(causal)
    score_mask = (
        causal[None]
        if attention_mask is None or cfg.attention_dir == "bidirectional"
        else causal[None] & attention_mask.bool()[:, None, :]
    )
    out: dict[str, Pair] = {}

    z = cache[f"blocks.{layer}.attn.hook_z"]
    z_pairs = []
    for h in range(cfg.n_heads):
        beta = z[:, :, h] - baseline if h == source else torch.zeros_like(z[:, :, h])
        z_pairs.append((beta, z[:, :, h] - beta))
    out[f"blocks.{layer}.attn.hook_z"] = (
        torch.stack([b for b, _ in z_pairs], 2),
        torch.stack([g for _, g in z_pairs], 2),
    )
    resid_pre = cache[f"blocks.{layer}.hook_resid_pre"]
    resid = (torch.zeros_like(resid_pre), resid_pre)
    for current in range(layer, cfg.n_layers):
        blk = model.blocks[current]
        if current > layer:
            x = _norm_pair(blk.ln1, *resid, cfg.eps, rules)
            z_pairs = _attention_pair(model, current, x, score_mask, attention_mask, rules)
            out[f"blocks.{current}.attn.hook_z"] = (
                torch.stack([b for b, _ in z_pairs], 2),
                torch.stack([g for _, g in z_pairs], 2),
            )
        attn_out = _attention_out_pair(model, current, z_pairs, rules)
        out[f"blocks.{current}.hook_attn_out"] = attn_out
        if cfg.attn_only:
            resid = (resid[0] + attn_out[0], resid[1] + attn_out[1])
        elif cfg.parallel_attn_mlp:
            mlp_out = _mlp_pair(model, current, resid, rules)
            out[f"blocks.{current}.hook_mlp_out"] = mlp_out
            resid = (resid[0] + attn_out[0] + mlp_out[0], resid[1] + attn_out[1] + mlp_out[1])
        else:
            mid = (resid[0] + attn_out[0], resid[1] + attn_out[1])
            mlp_out = _mlp_pair(model, current, mid, rules)
            out[f"blocks.{current}.hook_mlp_out"] = mlp_out
            resid = (mid[0] + mlp_out[0], mid[1] + mlp_out[1])
        out[f"blocks.{current}.hook_resid_post"] = resid
    final = _norm_pair(getattr(model, "ln_final", nn.Identity()), *resid, cfg.eps, rules)
    out["logits"] = _linear_pair(
        final[0] @ model.unembed.W_U, final[1] @ model.unembed.W_U, model.unembed.b_U, rules
    )
    return out
