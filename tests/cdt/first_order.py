"""The implementation-independent first-order check of CD-T (docs/method.md §3c), reusable on any model.

With the frozen attention rule and every bias given to gamma, a source whose relevant part is
`eps * v` at one head's `hook_z` must give `beta_logits / eps` equal to the Jacobian-vector product
of the logits along v at that head's output, computed by autograd on the model itself with every
attention pattern, norm scale (QK-norm scales included) and router weight replaced by its clean,
detached value. Nothing of the engine's code is used for the JVP: the model's own forward pass is
differentiated (hooks only freeze the listed quantities), so every rule is checked against the
real architecture. Completeness alone cannot do this: an engine that sets gamma = full - beta
satisfies it whatever its rules are.

What it covers: with the patterns frozen, every rule on the value path and the residual stream
(norms and their scales, post and sandwich norms, W_O, MLPs, experts and routing, clip on v, the
logits soft-cap). The q/k path (QK-norm, rotary, clip on q/k, log-n, masks, the score soft-cap)
only shapes the relevant pattern of the decomposed rule; it is covered by the two-part reference
(its beta + gamma equals the clean run, and the engine equals it).

    from first_order import first_order_gap
    gap, scale = first_order_gap(model, tokens, head=(1, 2))
    assert gap <= 1e-4 * scale
"""

from __future__ import annotations

import torch
from torch import Tensor

from circuit_transfer.cdt import decompose_heads

FROZEN_SUFFIXES = ("hook_pattern", "hook_scale", "hook_expert_weights", "hook_expert_indices")
"""Hook names (by suffix) whose clean values are held constant in the JVP."""


def logits_jvp(model, tokens: Tensor, head: tuple[int, int], v: Tensor) -> Tensor:
    """d logits / dt at t = 0 when `blocks.{l}.attn.hook_z[:, :, h] += t * v`, frozen quantities detached."""
    layer, h = head
    frozen = lambda name: name.endswith(FROZEN_SUFFIXES)  # noqa: E731
    _, cache = model.run_with_cache(tokens, names_filter=frozen)
    clean = {name: act.detach() for name, act in cache.items()}

    def logits_at(t: Tensor) -> Tensor:
        def shift(z: Tensor, hook) -> Tensor:
            z = z.clone()
            z[:, :, h] = z[:, :, h] + t * v
            return z

        def freeze(act: Tensor, hook) -> Tensor:
            value = clean[hook.name]
            # use_split_qkv_input: ln1 runs on q, k and v inputs with n_heads / n_kv copies of
            # the residual; the cache kept the last call, and every copy has the same scale
            return value if value.shape == act.shape else value[:, :, :1].expand_as(act)

        hooks = [(f"blocks.{layer}.attn.hook_z", shift)] + [(name, freeze) for name in clean]
        return model.run_with_hooks(tokens, fwd_hooks=hooks)

    zero = torch.zeros((), dtype=v.dtype, device=v.device)
    with torch.enable_grad():
        _, tangent = torch.autograd.functional.jvp(logits_at, zero, torch.ones_like(zero))
    return tangent


def first_order_gap(
    model, tokens: Tensor, head: tuple[int, int], eps: float = 1e-6, seed: int = 0
) -> tuple[float, float]:
    """Max |beta_logits / eps - JVP| over the logits, and max |JVP| (the scale to compare with).

    `tokens` must be one example (`[1, pos]`): the baseline mu = z - eps * v is then exact. The
    model should be float64 so that O(eps) dominates rounding.
    """
    if tokens.shape[0] != 1:
        raise ValueError("first_order_gap takes one example: tokens of shape [1, pos]")
    layer, h = head
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(1, tokens.shape[1], cfg.d_head, generator=gen, dtype=cfg.dtype)
    _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.attn.hook_z")
    z = cache[f"blocks.{layer}.attn.hook_z"]
    mu = torch.zeros(cfg.n_layers, cfg.n_heads, tokens.shape[1], cfg.d_head, dtype=cfg.dtype)
    mu[layer, h] = z[0, :, h] - eps * v[0]
    out = decompose_heads(model, tokens, [head], mu, attention="frozen", bias="irrelevant")
    jvp = logits_jvp(model, tokens, head, v)
    gap = (out.beta_logits[0] / eps - jvp).abs().max()
    return float(gap), float(jvp.abs().max())
