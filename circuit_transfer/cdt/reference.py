"""Slow, faithful CD-T for one source: carries beta AND gamma, applying each rule to both parts.

This is the cross-check for the batched engine. Unlike the engine it never recovers gamma as
`full - beta`: gamma is propagated by its own rule (e.g. `gamma' = f(gamma)`), heads are looped one
by one, the full pattern is recomputed from its own Q and K, and norms compute their scale from
`beta + gamma`. So `beta + gamma == run_with_cache` is a real test of the rules here, and
`engine == reference` then shows the engine's shortcuts are exact.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuit_transfer.cdt.rules import Rules, Site
from circuit_transfer.models.access import MLP, Experts, ModelAccess, Norm, Rotary, model_access

Pair = tuple[Tensor, Tensor]
"""(beta, gamma) of one activation."""


def _add(*pairs: Pair) -> Pair:
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)  # type: ignore[return-value]


def _stabilize_pair(beta: Tensor, gamma: Tensor) -> Pair:
    opposite = beta * gamma < 0
    total = beta + gamma
    beta_larger = beta.abs() > gamma.abs()
    return (
        torch.where(opposite, torch.where(beta_larger, total, 0.0), beta),
        torch.where(opposite, torch.where(beta_larger, 0.0, total), gamma),
    )


def _share_pair(beta: Tensor, gamma: Tensor, bias: Tensor, rel: Tensor, irrel: Tensor) -> Pair:
    total = rel + irrel
    share = torch.where(total > 0, rel / total, torch.full_like(total, 0.5))
    return beta + bias * share, gamma + bias * (1 - share)


def _linear_pair(w_beta: Tensor, w_gamma: Tensor, bias: Tensor | None, rules: Rules, site: Site) -> Pair:
    if bias is not None:
        if rules.bias == "magnitude":
            w_beta, w_gamma = _share_pair(w_beta, w_gamma, bias, w_beta.abs(), w_gamma.abs())
        else:
            w_gamma = w_gamma + bias
    return _stabilize_pair(w_beta, w_gamma) if rules.stabilizes(site) else (w_beta, w_gamma)


def _norm_pair(n: Norm | None, beta: Tensor, gamma: Tensor, rules: Rules) -> Pair:
    if n is None or n.kind == "none":
        return beta, gamma
    beta_in, gamma_in = beta, gamma
    full = beta + gamma
    if n.centres:
        beta = beta - beta.mean(-1, keepdim=True)
        gamma = gamma - gamma.mean(-1, keepdim=True)
        full = full - full.mean(-1, keepdim=True)
    scale = (full.pow(2).mean(-1, keepdim=True) + n.eps).sqrt()
    beta, gamma = beta / scale, gamma / scale
    if n.weight is None:
        return beta, gamma
    if n.bias is None or rules.ln_bias == "output" or rules.bias == "irrelevant":
        return _linear_pair(beta * n.weight, gamma * n.weight, n.bias, rules, "norm")
    pair = _share_pair(beta * n.weight, gamma * n.weight, n.bias, beta_in.abs(), gamma_in.abs())
    return _stabilize_pair(*pair) if rules.stabilizes("norm") else pair


def _qk_norm_pair(n: Norm, beta: Tensor, gamma: Tensor, per_head: bool, rules: Rules) -> Pair:
    """QK-norm on `[batch, pos, head, d_head]` parts: per head, or over all heads at once."""
    if per_head:
        return _norm_pair(n, beta, gamma, rules)
    flat = _norm_pair(n, beta.flatten(-2), gamma.flatten(-2), rules)
    return flat[0].reshape(beta.shape), flat[1].reshape(gamma.shape)


def _nonlinear_pair(f, beta: Tensor, gamma: Tensor) -> Pair:
    """The linearize rule: gamma' = f(gamma), beta' = f(beta + gamma) - f(gamma)."""
    return f(beta + gamma) - f(gamma), f(gamma)


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
    pos_embed: Tensor | None,
    rules: Rules,
) -> list[Pair]:
    """Per-head (beta_z, gamma_z) of one block, heads in a plain loop."""
    attn = access.blocks[layer].attn
    n_pos = x[0].shape[1]
    alibi = _alibi(attn.alibi_slopes, n_pos) if attn.alibi_slopes is not None else None
    rotation = _rotation(attn.rotary, access.d_head, positions) if attn.rotary is not None else None
    # shortformer: learned positions join the q and k inputs (not v), all irrelevant
    qk_x = x if pos_embed is None else (x[0], x[1] + pos_embed)
    per_head: list[list[Pair]] = [[], [], []]
    for h in range(attn.n_heads):
        g = h // attn.repeat
        for i, (W, b, j, inp) in enumerate(
            ((attn.W_Q, attn.b_Q, h, qk_x), (attn.W_K, attn.b_K, g, qk_x), (attn.W_V, attn.b_V, g, x))
        ):
            per_head[i].append(
                _linear_pair(inp[0] @ W[j], inp[1] @ W[j], None if b is None else b[j], rules, "qkv")
            )
    q, k, v = ((torch.stack([p[0] for p in ps], 2), torch.stack([p[1] for p in ps], 2)) for ps in per_head)
    if attn.qk_norm is not None:
        q = _qk_norm_pair(attn.qk_norm.q, *q, attn.qk_norm.per_head, rules)
        k = _qk_norm_pair(attn.qk_norm.k, *k, attn.qk_norm.per_head, rules)
    if attn.clip_qkv is not None:
        clamp = lambda t: t.clamp(-attn.clip_qkv, attn.clip_qkv)  # noqa: E731
        q, k, v = (_nonlinear_pair(clamp, *t) for t in (q, k, v))
    if rotation is not None:
        q, k = (
            tuple((t[..., None, :] @ rotation[:, :, None].to(t.dtype))[..., 0, :] for t in pair)
            for pair in (q, k)
        )
    if attn.logn_train_length is not None and n_pos > attn.logn_train_length:
        pos = torch.arange(1, n_pos + 1, dtype=torch.float32)  # TransformerLens's precision
        logn = torch.where(pos > attn.logn_train_length, pos.log() / math.log(attn.logn_train_length), 1.0)
        q = tuple(t * logn.to(t.dtype)[:, None, None] for t in q)
    z_pairs = []
    for h in range(attn.n_heads):
        q_b, q_g, k_b, k_g, v_b, v_g = (
            q[0][:, :, h],
            q[1][:, :, h],
            k[0][:, :, h],
            k[1][:, :, h],
            v[0][:, :, h],
            v[1][:, :, h],
        )
        full_scores = _cap((q_b + q_g) @ (k_b + k_g).transpose(-1, -2) / attn.scale, attn.soft_cap)
        if alibi is not None:
            full_scores = full_scores + alibi[h]
        full_scores = full_scores.masked_fill(~score_mask, float("-inf"))
        if attn.sinks is not None:  # the sink joins the softmax as one more key, then is dropped
            sink = attn.sinks[h].to(full_scores.dtype).expand(*full_scores.shape[:-1], 1)
            full_pattern = torch.softmax(torch.cat([full_scores, sink], -1), dim=-1)[..., :-1]
        else:
            full_pattern = torch.softmax(full_scores, dim=-1).nan_to_num(0.0)
        if rules.attention == "decomposed":
            beta_scores = _cap(q_b @ k_b.transpose(-1, -2) / attn.scale, attn.soft_cap)
            beta_pattern = torch.softmax(
                beta_scores.masked_fill(~score_mask, float("-inf")), dim=-1
            ).nan_to_num(0.0)
            gamma_pattern = full_pattern - beta_pattern
            z_pairs.append((beta_pattern @ v_b, beta_pattern @ v_g + gamma_pattern @ (v_b + v_g)))
        else:
            z_pairs.append((full_pattern @ v_b, full_pattern @ v_g))
    return z_pairs


def _cap(x: Tensor, cap: float | None) -> Tensor:
    return x if cap is None else cap * torch.tanh(x / cap)


def _attention_out_pair(access: ModelAccess, layer: int, z_pairs: list[Pair], rules: Rules) -> Pair:
    blk = access.blocks[layer]
    attn = blk.attn
    w_beta = sum(z_b @ attn.W_O[h] for h, (z_b, _) in enumerate(z_pairs))
    w_gamma = sum(z_g @ attn.W_O[h] for h, (_, z_g) in enumerate(z_pairs))
    out = _linear_pair(w_beta, w_gamma, attn.b_O, rules, "attn_out")
    out = _norm_pair(blk.ln1_post, *out, rules)
    return _norm_pair(blk.ln1, *out, rules) if blk.post_norm else out


def _gated_pair(mlp: MLP, x: Pair, rules: Rules) -> Pair:
    """gamma' = f(g_gamma) * h(u_gamma), beta' = f(g) h(u) - gamma' (biases by the linear rule)."""
    W_gate = mlp.W_gate
    assert W_gate is not None
    g_b, g_g = _linear_pair(x[0] @ W_gate, x[1] @ W_gate, mlp.b_gate, rules, "gate_up")
    u_b, u_g = _linear_pair(x[0] @ mlp.W_in, x[1] @ mlp.W_in, mlp.b_in, rules, "gate_up")
    up = mlp.up_fn or (lambda t: t)
    gamma_post = mlp.act_fn(g_g) * up(u_g)
    beta_post = mlp.act_fn(g_b + g_g) * up(u_b + u_g) - gamma_post
    post = _linear_pair(beta_post, gamma_post, mlp.b_post, rules, "mlp_in")
    return _linear_pair(post[0] @ mlp.W_out, post[1] @ mlp.W_out, mlp.b_out, rules, "mlp_out")


def _mlp_pair(access: ModelAccess, layer: int, resid: Pair, rules: Rules, routing: Tensor | None) -> Pair:
    blk = access.blocks[layer]
    mlp = blk.mlp
    x = resid if blk.post_norm else _norm_pair(blk.ln2, *resid, rules)
    if isinstance(mlp, Experts):
        assert routing is not None
        outs = [_gated_pair(e, x, rules) for e in mlp.experts]  # every expert on every token (slow)
        out = (
            sum(routing[..., e, None] * o[0] for e, o in enumerate(outs)),
            sum(routing[..., e, None] * o[1] for e, o in enumerate(outs)),
        )
    elif isinstance(mlp, MLP) and mlp.W_gate is not None:
        out = _gated_pair(mlp, x, rules)
    else:
        assert isinstance(mlp, MLP)
        pre_b, pre_g = _linear_pair(x[0] @ mlp.W_in, x[1] @ mlp.W_in, mlp.b_in, rules, "mlp_in")
        post = _nonlinear_pair(mlp.act_fn, pre_b, pre_g)
        post = _norm_pair(mlp.act_norm, *post, rules)
        out = _linear_pair(post[0] @ mlp.W_out, post[1] @ mlp.W_out, mlp.b_out, rules, "mlp_out")
    out = _norm_pair(blk.ln2_post, *out, rules)
    return _norm_pair(blk.ln2, *out, rules) if blk.post_norm else out


def _routing(experts: Experts, cache, batch: int, n_pos: int, dtype: torch.dtype) -> Tensor:
    """Clean routing weights `[batch, pos, n_experts]` from the clean run's routing hooks."""
    weights = cache[experts.weights_hook].reshape(batch, n_pos, -1)
    indices = cache[experts.indices_hook].reshape(batch, n_pos, -1)
    chosen = torch.gather(weights, -1, indices)
    if experts.renormalize:
        chosen = chosen / chosen.sum(-1, keepdim=True)
    return torch.zeros_like(weights).scatter(-1, indices, chosen).to(dtype)


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
            x = resid if blk.post_norm else _norm_pair(blk.ln1, *resid, rules)
            mask = _score_mask(blk.attn.mask, attention_mask, n_pos, tokens.device, blk.attn.window)
            pos_embed = cache[blk.attn.pos_embed_hook] if blk.attn.pos_embed_hook else None
            z_pairs = _attention_pair(access, current, x, mask, positions, pos_embed, rules)
            out[f"blocks.{current}.attn.hook_z"] = (
                torch.stack([b for b, _ in z_pairs], 2),
                torch.stack([g for _, g in z_pairs], 2),
            )
        attn_out = _attention_out_pair(access, current, z_pairs, rules)
        out[f"blocks.{current}.hook_attn_out"] = attn_out
        routing = (
            _routing(blk.mlp, cache, batch, n_pos, access.dtype) if isinstance(blk.mlp, Experts) else None
        )
        if blk.mlp is None:
            resid = _add(resid, attn_out)
        elif blk.parallel:
            mlp_out = _mlp_pair(access, current, resid, rules, routing)
            out[f"blocks.{current}.hook_mlp_out"] = mlp_out
            resid = _add(resid, attn_out, mlp_out)
        else:
            mid = _add(resid, attn_out)
            mlp_out = _mlp_pair(access, current, mid, rules, routing)
            out[f"blocks.{current}.hook_mlp_out"] = mlp_out
            resid = _add(mid, mlp_out)
        if rules.stabilizes("resid"):
            resid = _stabilize_pair(*resid)
        out[f"blocks.{current}.hook_resid_post"] = resid
    final = _norm_pair(access.ln_final, *resid, rules)
    logits = _linear_pair(final[0] @ access.W_U, final[1] @ access.W_U, access.b_U, rules, "unembed")
    if access.logits_soft_cap is not None:
        logits = _nonlinear_pair(lambda t: _cap(t, access.logits_soft_cap), *logits)
    out["logits"] = logits
    return out


def _score_mask(
    kind: str,
    attention_mask: Int[Tensor, "batch pos"] | None,
    n_pos: int,
    device: torch.device,
    window: int | None,
) -> Bool[Tensor, "mask_batch query key"]:
    """Which keys each query sees: all (bidirectional) or earlier ones (within the window), real tokens only."""
    if kind == "bidirectional":
        return torch.ones(1, n_pos, n_pos, dtype=torch.bool, device=device)
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=device).tril()
    if window is not None:
        causal = causal & ~torch.ones_like(causal).tril(-window)
    causal = causal[None]
    return causal if attention_mask is None else causal & attention_mask.bool()[:, None, :]
