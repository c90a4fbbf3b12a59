"""Slow, faithful CD-T for one source: carries beta AND gamma, applying each rule to both parts.

This is the cross-check for the batched engine. Unlike the engine it never recovers gamma as
`full - beta`: gamma is propagated by its own rule (e.g. `gamma' = f(gamma)`), heads are looped one
by one, the full pattern is recomputed from its own Q and K, and norms compute their scale from
`beta + gamma`. So `beta + gamma == run_with_cache` is a real test of the rules here, and
`engine == reference` then shows the engine's shortcuts are exact.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuit_transfer.cdt.rules import Rules
from circuit_transfer.models.access import MLP, ModelAccess, Norm, Rotary, model_access

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


def _norm_pair(n: Norm | None, beta: Tensor, gamma: Tensor, rules: Rules) -> Pair:
    if n is None or n.kind == "none":
        return beta, gamma
    full = beta + gamma
    if n.centres:
        beta = beta - beta.mean(-1, keepdim=True)
        gamma = gamma - gamma.mean(-1, keepdim=True)
        full = full - full.mean(-1, keepdim=True)
    scale = (full.pow(2).mean(-1, keepdim=True) + n.eps).sqrt()
    beta, gamma = beta / scale, gamma / scale
    if n.weight is None:
        return beta, gamma
    return _linear_pair(beta * n.weight, gamma * n.weight, n.bias, rules)


def _rotation(rotary: Rotary, d_head: int, positions: Tensor) -> Tensor:
    """Rotary as explicit matrices `[batch, pos, d_head, d_head]` (x_rot @ R), built from the tables."""
    dim = rotary.dim
    pair = torch.zeros(dim, dim, dtype=rotary.cos.dtype, device=rotary.cos.device)
    for i in range(dim):
        if rotary.adjacent_pairs:
            partner, sign = (i + 1, -1.0) if i % 2 == 0 else (i - 1, 1.0)
        else:
            partner, sign = (i + dim // 2, -1.0) if i < dim // 2 else (i - dim // 2, 1.0)
        pair[partner, i] = sign  # output i takes sign * x[partner]
    cos, sin = rotary.cos[positions], rotary.sin[positions]  # [batch, pos, dim]
    rot = torch.diag_embed(cos) + pair * sin[..., None, :]
    full = (
        torch.eye(d_head, dtype=rot.dtype, device=rot.device).expand(*rot.shape[:2], d_head, d_head).clone()
    )
    full[..., :dim, :dim] = rot
    return full


def _alibi(slopes: Tensor, n_pos: int) -> Tensor:
    """ALiBi bias `[head, query, key]`: slope * (key - query) for keys at or before the query."""
    distance = torch.arange(n_pos)[None, :] - torch.arange(n_pos)[:, None]
    return slopes[:, None, None] * distance.clamp(max=0).to(slopes.device, torch.float32)


def _attention_pair(
    access: ModelAccess,
    layer: int,
    x: Pair,
    score_mask: Bool[Tensor, "mask_batch query key"],
    positions: Int[Tensor, "batch pos"],
    rules: Rules,
) -> list[Pair]:
    """Per-head (beta_z, gamma_z) of one block, heads in a plain loop."""
    attn = access.blocks[layer].attn
    n_pos = x[0].shape[1]
    alibi = _alibi(attn.alibi_slopes, n_pos) if attn.alibi_slopes is not None else None
    rotation = _rotation(attn.rotary, access.d_head, positions) if attn.rotary is not None else None
    z_pairs = []
    for h in range(attn.n_heads):
        g = h // attn.repeat
        (q_b, q_g), (k_b, k_g), (v_b, v_g) = (
            _linear_pair(x[0] @ W[i], x[1] @ W[i], None if b is None else b[i], rules)
            for W, b, i in ((attn.W_Q, attn.b_Q, h), (attn.W_K, attn.b_K, g), (attn.W_V, attn.b_V, g))
        )
        if rotation is not None:
            q_b, q_g, k_b, k_g = (
                (t[..., None, :] @ rotation.to(t.dtype))[..., 0, :] for t in (q_b, q_g, k_b, k_g)
            )
        q, k = q_b + q_g, k_b + k_g
        full_scores = q @ k.transpose(-1, -2) / attn.scale
        if alibi is not None:
            full_scores = full_scores + alibi[h]
        full_pattern = torch.softmax(full_scores.masked_fill(~score_mask, float("-inf")), dim=-1).nan_to_num(
            0.0
        )
        if rules.attention == "decomposed":
            beta_scores = q_b @ k_b.transpose(-1, -2) / attn.scale
            beta_pattern = torch.softmax(
                beta_scores.masked_fill(~score_mask, float("-inf")), dim=-1
            ).nan_to_num(0.0)
            gamma_pattern = full_pattern - beta_pattern
            z_pairs.append((beta_pattern @ v_b, beta_pattern @ v_g + gamma_pattern @ (v_b + v_g)))
        else:
            z_pairs.append((full_pattern @ v_b, full_pattern @ v_g))
    return z_pairs


def _attention_out_pair(access: ModelAccess, layer: int, z_pairs: list[Pair], rules: Rules) -> Pair:
    attn = access.blocks[layer].attn
    w_beta = sum(z_b @ attn.W_O[h] for h, (z_b, _) in enumerate(z_pairs))
    w_gamma = sum(z_g @ attn.W_O[h] for h, (_, z_g) in enumerate(z_pairs))
    return _linear_pair(w_beta, w_gamma, attn.b_O, rules)


def _mlp_pair(access: ModelAccess, layer: int, resid: Pair, rules: Rules) -> Pair:
    blk = access.blocks[layer]
    mlp = blk.mlp
    assert isinstance(mlp, MLP)
    x_b, x_g = _norm_pair(blk.ln2, *resid, rules)
    f = mlp.act_fn
    if mlp.W_gate is not None:
        g_b, g_g = x_b @ mlp.W_gate, x_g @ mlp.W_gate
        u_b, u_g = x_b @ mlp.W_in, x_g @ mlp.W_in
        gamma_post = f(g_g) * u_g
        beta_post = f(g_b + g_g) * (u_b + u_g) - gamma_post
        post = _linear_pair(beta_post, gamma_post, mlp.b_post, rules)
    else:
        pre_b, pre_g = _linear_pair(x_b @ mlp.W_in, x_g @ mlp.W_in, mlp.b_in, rules)
        post = (f(pre_b + pre_g) - f(pre_g), f(pre_g))
        post = _norm_pair(mlp.act_norm, *post, rules)
    return _linear_pair(post[0] @ mlp.W_out, post[1] @ mlp.W_out, mlp.b_out, rules)


@torch.no_grad()
def reference_decompose(
    model: object,
    tokens: Int[Tensor, "batch pos"],
    head: tuple[int, int],
    baseline: Float[Tensor, "*mu_lead d_head"],
    rules: Rules = Rules(),
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    cache: Any = None,
) -> dict[str, Pair]:
    """(beta, gamma) at every residual hook of one source head and at `"logits"`.

    `baseline` is mu of the source head, broadcastable to its `hook_z` slice `[batch, pos, d_head]`.
    Only activations up to the source's `hook_z` are read from `cache` (the clean run of `tokens`,
    an ActivationCache or a dict by hook name; computed when not given).

    Keys: `blocks.{l}.hook_resid_post`, `blocks.{l}.hook_attn_out`, `blocks.{l}.hook_mlp_out`,
    `blocks.{l}.attn.hook_z` (layer >= the source's) and `"logits"`.
    """
    layer, source = head
    if cache is None:
        _, cache = model.run_with_cache(tokens, attention_mask=attention_mask)  # type: ignore[attr-defined]
    access = model_access(model)
    n_layers, n_heads = access.n_layers, access.n_heads
    batch, n_pos = tokens.shape
    positions = (
        torch.arange(n_pos, device=tokens.device).expand(batch, n_pos)
        if attention_mask is None
        else (attention_mask.cumsum(1) - 1).clamp(min=0)
    )
    out: dict[str, Pair] = {}

    z = cache[f"blocks.{layer}.attn.hook_z"]
    z_pairs = []
    for h in range(n_heads):
        beta = z[:, :, h] - baseline if h == source else torch.zeros_like(z[:, :, h])
        z_pairs.append((beta, z[:, :, h] - beta))
    out[f"blocks.{layer}.attn.hook_z"] = (
        torch.stack([b for b, _ in z_pairs], 2),
        torch.stack([g for _, g in z_pairs], 2),
    )
    resid_pre = cache[f"blocks.{layer}.hook_resid_pre"]
    resid = (torch.zeros_like(resid_pre), resid_pre)
    for current in range(layer, n_layers):
        blk = access.blocks[current]
        if current > layer:
            x = _norm_pair(blk.ln1, *resid, rules)
            mask = _score_mask(blk.attn.mask, attention_mask, n_pos, tokens.device)
            z_pairs = _attention_pair(access, current, x, mask, positions, rules)
            out[f"blocks.{current}.attn.hook_z"] = (
                torch.stack([b for b, _ in z_pairs], 2),
                torch.stack([g for _, g in z_pairs], 2),
            )
        attn_out = _attention_out_pair(access, current, z_pairs, rules)
        out[f"blocks.{current}.hook_attn_out"] = attn_out
        if blk.mlp is None:
            resid = (resid[0] + attn_out[0], resid[1] + attn_out[1])
        elif blk.parallel:
            mlp_out = _mlp_pair(access, current, resid, rules)
            out[f"blocks.{current}.hook_mlp_out"] = mlp_out
            resid = (resid[0] + attn_out[0] + mlp_out[0], resid[1] + attn_out[1] + mlp_out[1])
        else:
            mid = (resid[0] + attn_out[0], resid[1] + attn_out[1])
            mlp_out = _mlp_pair(access, current, mid, rules)
            out[f"blocks.{current}.hook_mlp_out"] = mlp_out
            resid = (mid[0] + mlp_out[0], mid[1] + mlp_out[1])
        out[f"blocks.{current}.hook_resid_post"] = resid
    final = _norm_pair(access.ln_final, *resid, rules)
    out["logits"] = _linear_pair(final[0] @ access.W_U, final[1] @ access.W_U, access.b_U, rules)
    return out


def _score_mask(
    kind: str, attention_mask: Int[Tensor, "batch pos"] | None, n_pos: int, device: torch.device
) -> Bool[Tensor, "mask_batch query key"]:
    """Which keys each query sees: all (bidirectional) or earlier ones, and real tokens only."""
    if kind == "bidirectional":
        return torch.ones(1, n_pos, n_pos, dtype=torch.bool, device=device)
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=device).tril()[None]
    return causal if attention_mask is None else causal & attention_mask.bool()[:, None, :]
