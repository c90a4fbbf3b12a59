"""CD-T propagation rules for the relevant part beta, given the full activations of a clean run.

Every rule returns the relevant part beta' of a component's output; the irrelevant part is
always `gamma' = full' - beta'`, so completeness (`beta + gamma == full`) holds by construction
and only beta is carried (docs/method.md §3). Where a rule needs gamma it is recovered as
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
from torch import Tensor

from circuit_transfer.models.access import Norm, Rotary

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
    n: Norm,
    beta: Float[Tensor, "*lead d"],
    scale: Float[Tensor, "*full_lead 1"] | None,
    normalized: Float[Tensor, "*full_lead d"] | None,
    rules: Rules,
) -> Float[Tensor, "*lead d"]:
    """Normalisation rule: 1/sigma of the full input acts as a constant on both parts.

    LayerNorm centres beta by its own mean, divides by the clean run's scale (which includes the
    model's eps), multiplies by w and shares b by magnitude; LayerNormPre stops before w; RMSNorm
    does not centre; RMSNormPre only divides; no normalisation passes beta through.

    Args:
        n: the norm (kind, weight, bias).
        beta: relevant part of the norm's input.
        scale: the clean run's scale of this norm (its `hook_scale`).
        normalized: the clean run's normalised input (its `hook_normalized`; read by the norms
            with a weight, for the bias share and the stability rule).
        rules: bias rule and stability option.
    """
    if n.kind == "none":
        return beta
    if scale is None:
        raise ValueError(f"norm {n.hook or n.kind} needs the clean run's scale")
    if n.centres:
        beta = beta - beta.mean(-1, keepdim=True)
    beta_hat = beta / scale
    if n.weight is None:
        return beta_hat
    if normalized is None:
        raise ValueError(f"norm {n.hook or n.kind} needs the clean run's normalised input")
    return linear(beta_hat * n.weight, normalized * n.weight, n.bias, rules)


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

    Our choice (the papers leave it open; docs/method.md §3): the irrelevant part is what the gate would produce from
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


def norm_output(
    n: Norm, normalized: Float[Tensor, "*lead d"] | None, full_in: Float[Tensor, "*lead d"]
) -> Float[Tensor, "*lead d"]:
    """The clean output of a norm, from its cached normalised input (or its input, for no norm)."""
    if n.kind == "none":
        return full_in
    if normalized is None:
        raise ValueError(f"norm {n.hook or n.kind} needs the clean run's normalised input")
    out = normalized if n.weight is None else normalized * n.weight
    return out if n.bias is None else out + n.bias


def position_ids(
    attention_mask: Int[Tensor, "batch pos"] | None, batch: int, n_pos: int, device: torch.device
) -> Int[Tensor, "batch pos"]:
    """Rotary position of each token: its index, or with padding its index among real tokens.

    Matches TransformerLens: left padding shifts positions so the first real token is 0, and
    padding positions get 0.
    """
    if attention_mask is None:
        return torch.arange(n_pos, device=device).expand(batch, n_pos)
    shifted = attention_mask.cumsum(dim=1) - 1
    return shifted.masked_fill(shifted < 0, 0)


def _rotate_every_two(x: Float[Tensor, "*lead dim"], adjacent_pairs: bool) -> Float[Tensor, "*lead dim"]:
    """(x0, x1) -> (-x1, x0) for each rotated pair (adjacent pairs, or halves)."""
    if adjacent_pairs:
        pairs = einops.rearrange(x, "... (d two) -> ... d two", two=2)
        return einops.rearrange(
            torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1), "... d two -> ... (d two)"
        )
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rotate(
    x: Float[Tensor, "*src batch pos head d_head"],
    rotary: Rotary,
    positions: Int[Tensor, "batch pos"],
) -> Float[Tensor, "*src batch pos head d_head"]:
    """Rotary embedding, linear per position: the same rotation applies to each part."""
    if int(positions.max()) >= rotary.cos.shape[0]:
        raise ValueError(
            f"rotary tables cover {rotary.cos.shape[0]} positions, need {int(positions.max()) + 1}: "
            "build the model access after a forward pass of this length"
        )
    cos = einops.rearrange(rotary.cos[positions], "batch pos dim -> batch pos 1 dim")
    sin = einops.rearrange(rotary.sin[positions], "batch pos dim -> batch pos 1 dim")
    x_rot, x_pass = x[..., : rotary.dim], x[..., rotary.dim :]
    rotated = x_rot * cos + _rotate_every_two(x_rot, rotary.adjacent_pairs) * sin
    return torch.cat([rotated, x_pass], dim=-1)
