"""CD-T propagation rules for the relevant part beta, given the full activations of a clean run.

Every rule returns the relevant part beta' of a component's output; the irrelevant part is
always `gamma' = full' - beta'`, so completeness (`beta + gamma == full`) holds by construction
and only beta is carried (method.md §3). Where a rule needs gamma it is recovered as
`full - beta` from cached activations of the clean run.

Tensors carrying beta have leading axes `src batch` (one row per source and example); cached full
activations have only `batch` and broadcast over `src`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre

AttentionRule = Literal["decomposed", "frozen"]
BiasRule = Literal["magnitude", "irrelevant"]


@dataclass(frozen=True)
class Rules:
    """Which CD-T rule variants to apply.

    Attributes:
        attention: "decomposed" (CD-T default: relevant pattern from relevant scores) or
            "frozen" (the clean pattern applied to the relevant values).
        bias: "magnitude" (each bias shared by |W beta| / (|W beta| + |W gamma|)) or
            "irrelevant" (every bias goes to gamma).
        stabilize: CD-T's optional numerical-stability rule after each linear map: where beta and
            gamma have opposite signs, the sum goes to the larger part and the other becomes 0.
    """

    attention: AttentionRule = "decomposed"
    bias: BiasRule = "magnitude"
    stabilize: bool = False


def stabilize_signs(beta: Float[Tensor, "*shape"], full: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """CD-T's stability rule: where beta and gamma = full - beta disagree in sign, the larger takes all."""
    gamma = full - beta
    beta_wins = torch.where(beta.abs() > gamma.abs(), full, torch.zeros_like(full))
    return torch.where(beta * gamma < 0, beta_wins, beta)


def linear(
    w_beta: Float[Tensor, "*shape"],
    w_full: Float[Tensor, "*full_shape"],
    bias: Float[Tensor, "*bias_shape"] | None,
    rules: Rules,
) -> Float[Tensor, "*shape"]:
    """Linear rule for `y = W h + b`: beta' = W beta + b |W beta| / (|W beta| + |W gamma|).

    Args:
        w_beta: W applied to the relevant input (no bias).
        w_full: W applied to the full input (no bias), i.e. the clean output minus b; broadcasts
            against w_beta. W gamma is `w_full - w_beta`.
        bias: b, or None when b is identically zero (then there is nothing to share).
        rules: bias rule ("irrelevant" gives all of b to gamma) and the stability option.
    """
    beta = w_beta
    if bias is not None and rules.bias == "magnitude":
        rel = w_beta.abs()
        total = rel + (w_full - w_beta).abs()
        share = torch.where(total > 0, rel / total, 0.5)
        beta = w_beta + bias * share
    if rules.stabilize:
        full = w_full if bias is None else w_full + bias
        beta = stabilize_signs(beta, full.expand_as(beta))
    return beta


def norm(
    module: nn.Module,
    beta: Float[Tensor, "*lead d"],
    scale: Float[Tensor, "*full_lead 1"] | None,
    normalized: Float[Tensor, "*full_lead d"] | None,
    rules: Rules,
) -> Float[Tensor, "*lead d"]:
    """Normalisation rule: 1/sigma of the full input acts as a constant on both parts.

    LayerNorm centres beta by its own mean, divides by the clean run's scale (which includes the
    model's eps), multiplies by w and shares b by magnitude; LayerNormPre stops before w; RMSNorm
    does not centre; RMSNormPre only divides; no normalisation (Identity) passes beta through.

    Args:
        module: the model's norm module (dispatch is on its class, so folded and unfolded models
            both work).
        beta: relevant part of the norm's input.
        scale: the clean run's `hook_scale` of this norm.
        normalized: the clean run's `hook_normalized` of this norm (read by the norms with a
            weight, for the bias share and the stability rule).
        rules: bias rule and stability option.
    """
    if isinstance(module, nn.Identity):
        return beta
    if scale is None:
        raise ValueError(f"norm module {type(module).__name__} needs the cached hook_scale")
    if isinstance(module, LayerNorm | LayerNormPre):
        beta = beta - beta.mean(-1, keepdim=True)
    elif not isinstance(module, RMSNorm | RMSNormPre):
        raise NotImplementedError(f"CD-T has no rule for norm module {type(module).__name__}")
    beta_hat = beta / scale
    if isinstance(module, LayerNormPre | RMSNormPre):
        return beta_hat
    if normalized is None:
        raise ValueError(f"norm module {type(module).__name__} needs the cached hook_normalized")
    bias = nonzero(module.b) if isinstance(module, LayerNorm) else None
    return linear(beta_hat * module.w, normalized * module.w, bias, rules)


def linearize(
    act_fn: Callable[[Tensor], Tensor],
    beta_pre: Float[Tensor, "*lead d"],
    full_pre: Float[Tensor, "*full_lead d"],
    full_post: Float[Tensor, "*full_lead d"],
) -> Float[Tensor, "*lead d"]:
    """Nonlinearity rule ("linearize"): gamma' = f(gamma), beta' = f(full) - f(gamma).

    `full_post = f(full_pre)` is taken from the clean run. f acts on the last axis, so the rule also
    covers the vector-valued SoLU.
    """
    return full_post - act_fn(full_pre - beta_pre)


def gated_product(
    act_fn: Callable[[Tensor], Tensor],
    beta_gate: Float[Tensor, "*lead d"],
    beta_up: Float[Tensor, "*lead d"],
    full_gate: Float[Tensor, "*full_lead d"],
    full_up: Float[Tensor, "*full_lead d"],
    full_product: Float[Tensor, "*full_lead d"],
) -> Float[Tensor, "*lead d"]:
    """Gated-MLP rule (SwiGLU, GeGLU): gamma' = f(g_gamma) * u_gamma, beta' = f(g) * u - gamma'.

    Our choice (method.md leaves it open): the irrelevant part is what the gate would produce from
    irrelevant inputs alone, the same "linearize" idea as for a plain nonlinearity applied to the
    pair (g, u); all interaction terms go to beta.
    """
    gamma_product = act_fn(full_gate - beta_gate) * (full_up - beta_up)
    return full_product - gamma_product


def masked_softmax(
    scores: Float[Tensor, "*lead query key"], mask: Bool[Tensor, "*mask_lead query key"]
) -> Float[Tensor, "*lead query key"]:
    """Softmax over keys with TransformerLens's masking: masked scores are -inf, all-masked rows give 0."""
    pattern = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.nan_to_num(pattern, nan=0.0)


def nonzero(bias: Tensor) -> Tensor | None:
    """The bias itself, or None when it is identically zero (no share to compute)."""
    return bias if bool(bias.any()) else None


def attention_mask_matrix(
    attention_dir: str, attention_mask: Int[Tensor, "batch pos"] | None, n_pos: int, device: torch.device
) -> Bool[Tensor, "batch query key"]:
    """The boolean mask TransformerLens applies to attention scores: causal and padding (keys only)."""
    if attention_dir == "bidirectional":
        return torch.ones(1, n_pos, n_pos, dtype=torch.bool, device=device)
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=device).tril()
    if attention_mask is None:
        return einops.rearrange(causal, "query key -> 1 query key")
    return causal & einops.rearrange(attention_mask.bool(), "batch key -> batch 1 key")
