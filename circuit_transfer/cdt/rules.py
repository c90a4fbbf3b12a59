"""CD-T propagation rules for the relevant part beta, given the full activations of a clean run.

Every rule returns the relevant part beta' of a component's output; the irrelevant part is
always `gamma' = full' - beta'`, so completeness (`beta + gamma == full`) holds by construction
and only beta is carried (docs/method.md §3). Where a rule needs gamma it is recovered as
`full - beta` from cached activations of the clean run.

Tensors carrying beta have leading axes `src batch` (one row per source and example); cached full
activations have only `batch` and broadcast over `src`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuit_transfer.models.access import Norm, Rotary

AttentionRule = Literal["decomposed", "frozen"]
BiasRule = Literal["magnitude", "irrelevant"]
Stabilize = Literal["none", "linear", "cdt"]
"""Where the opposite-sign stability rule applies: nowhere, after every linear map (our option),
or where the CD_Circuit code applies it (after the MLP's input projection, after W_out and after
each block's residual sum)."""
LayerNormBias = Literal["output", "input"]
"""How a LayerNorm's bias is shared: by the magnitude of the normalised, weighted parts (ours), or
by the magnitude of the norm's input parts (CD_Circuit's)."""
Site = Literal["linear", "qkv", "attn_out", "gate_up", "mlp_in", "mlp_out", "norm", "unembed", "resid"]
"""Where a linear map (or a residual sum) sits, for the stability rule's placement. `mlp_in` is a
plain MLP's W_in, or a gated MLP's product (where its bias is added); the gate and up projections
(`gate_up`) are never stabilised: the gated rule takes their parts as they are. `linear` is any
other linear map."""

_CDT_SITES = frozenset({"mlp_in", "mlp_out", "resid"})


@dataclass(frozen=True)
class Rules:
    """Which CD-T rule variants to apply.

    Attributes:
        attention: "decomposed" (CD-T's default: relevant pattern from relevant scores) or
            "frozen" (the clean pattern applied to the relevant values).
        bias: "magnitude" (each bias shared by |W beta| / (|W beta| + |W gamma|)) or
            "irrelevant" (every bias goes to gamma).
        stabilize: the opposite-sign stability rule (where beta and gamma have opposite signs, the
            sum goes to the larger part and the other becomes 0): "none", "linear" (our option:
            after every linear map; True means this) or "cdt" (CD_Circuit's placement).
        ln_bias: "output" (ours) or "input" (CD_Circuit's), see LayerNormBias.
    """

    attention: AttentionRule = "decomposed"
    bias: BiasRule = "magnitude"
    stabilize: Stabilize | bool = "none"
    ln_bias: LayerNormBias = "output"

    def __post_init__(self) -> None:
        if isinstance(self.stabilize, bool):
            object.__setattr__(self, "stabilize", "linear" if self.stabilize else "none")
        if self.attention not in ("decomposed", "frozen") or self.bias not in ("magnitude", "irrelevant"):
            raise ValueError(f"unknown rule attention={self.attention!r} bias={self.bias!r}")
        if self.stabilize not in ("none", "linear", "cdt") or self.ln_bias not in ("output", "input"):
            raise ValueError(f"unknown rule stabilize={self.stabilize!r} ln_bias={self.ln_bias!r}")

    def stabilizes(self, site: Site) -> bool:
        """Whether the stability rule applies after the map at `site`."""
        if self.stabilize == "linear":
            return site not in ("resid", "gate_up")
        return self.stabilize == "cdt" and site in _CDT_SITES


CDT_REFERENCE = Rules(attention="decomposed", bias="magnitude", stabilize="cdt", ln_bias="input")
"""The authors' propagation (CD_Circuit, github.com/adelaidehsu/CD_Circuit) on GPT-2-style models:
the decomposed attention rule, biases shared by magnitude, LayerNorm biases shared by the input
parts, and the stability rule after W_in, W_out and each block's residual sum. Their code also
hard-codes LayerNorm eps 1e-8 and adds 1e-8 to every share denominator; those two break
completeness, so this preset keeps the model's eps and exact shares (docs/method.md §3c)."""

PRESETS = {"cdt-reference": CDT_REFERENCE}


def stabilize_signs(
    beta: Float[Tensor, "*shape"], full: Float[Tensor, "*full_shape"]
) -> Float[Tensor, "*shape"]:
    """The stability rule: where beta and gamma = full - beta disagree in sign, the larger takes all.

    Computed as `full` clipped to the interval between 0 and beta, which is the same rule: where
    beta and gamma agree in sign, |beta| <= |full| on beta's side, so the clip returns beta; where
    they disagree, full lies strictly between -|gamma| and |beta| on the larger part's side, so
    the clip returns full when beta is the larger part and 0 when gamma is. Three elementwise
    passes instead of nine (the rule ran after every linear map and dominated CD-T's time on
    SmolLM2). `full` may broadcast against beta.
    """
    return torch.clamp(full, min=beta.clamp(max=0), max=beta.clamp(min=0))


def _share(rel: Tensor, total: Tensor) -> Tensor:
    """rel / total, and an even split where both parts are 0."""
    return torch.where(total > 0, rel / total, 0.5)


def linear(
    w_beta: Float[Tensor, "*shape"],
    w_full: Float[Tensor, "*full_shape"],
    bias: Float[Tensor, "*bias_shape"] | None,
    rules: Rules,
    site: Site = "linear",
) -> Float[Tensor, "*shape"]:
    """Linear rule for `y = W h + b`: beta' = W beta + b |W beta| / (|W beta| + |W gamma|).

    Args:
        w_beta: W applied to the relevant input (no bias).
        w_full: W applied to the full input (no bias), i.e. the clean output minus b; broadcasts
            against w_beta. W gamma is `w_full - w_beta`.
        bias: b, or None when b is identically zero (then there is nothing to share).
        rules: bias rule ("irrelevant" gives all of b to gamma) and the stability option.
        site: where the map sits (for the stability rule's placement).
    """
    beta = w_beta
    if bias is not None and rules.bias == "magnitude":
        rel = w_beta.abs()
        beta = w_beta + bias * _share(rel, rel + (w_full - w_beta).abs())
    if rules.stabilizes(site):
        full = w_full if bias is None else w_full + bias
        beta = stabilize_signs(beta, full.expand_as(beta))
    return beta


def norm(
    n: Norm,
    beta: Float[Tensor, "*lead d"],
    scale: Float[Tensor, "*full_lead 1"] | None,
    normalized: Float[Tensor, "*full_lead d"] | None,
    rules: Rules,
    full_in: Float[Tensor, "*full_lead d"] | None = None,
) -> Float[Tensor, "*lead d"]:
    """Normalisation rule: 1/sigma of the full input acts as a constant on both parts.

    LayerNorm centres beta by its own mean, divides by the clean run's scale (which includes the
    model's eps), multiplies by w and shares b by magnitude (of the weighted output parts, or of
    the input parts with `rules.ln_bias == "input"`); LayerNormPre stops before w; RMSNorm does
    not centre; RMSNormPre only divides; no normalisation passes beta through.

    Args:
        n: the norm (kind, weight, bias).
        beta: relevant part of the norm's input.
        scale: the clean run's scale of this norm (its `hook_scale`).
        normalized: the clean run's normalised input (its `hook_normalized`; read by the norms
            with a weight, for the bias share and the stability rule).
        rules: bias rules and stability option.
        full_in: the clean input of the norm (read only for the input-share LayerNorm bias).
    """
    if n.kind == "none":
        return beta
    if scale is None:
        raise ValueError(f"norm {n.hook or n.kind} needs the clean run's scale")
    beta_in = beta
    if n.centres:
        beta = beta - beta.mean(-1, keepdim=True)
    beta_hat = beta / scale
    if n.weight is None:
        return beta_hat
    if normalized is None:
        raise ValueError(f"norm {n.hook or n.kind} needs the clean run's normalised input")
    if n.bias is None or rules.ln_bias == "output" or rules.bias == "irrelevant":
        return linear(beta_hat * n.weight, normalized * n.weight, n.bias, rules, "norm")
    if full_in is None:
        raise ValueError(f"the input-share LayerNorm bias needs the clean input of norm {n.hook}")
    rel = beta_in.abs()
    out = beta_hat * n.weight + n.bias * _share(rel, rel + (full_in - beta_in).abs())
    if rules.stabilizes("norm"):
        out = stabilize_signs(out, (normalized * n.weight + n.bias).expand_as(out))
    return out


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
    up_fn: Callable[[Tensor], Tensor] | None = None,
) -> Float[Tensor, "*lead d"]:
    """Gated-MLP rule (SwiGLU, GeGLU): gamma' = f(g_gamma) * h(u_gamma), beta' = f(g) * h(u) - gamma'.

    Our choice (the papers leave it open; docs/method.md §3): the irrelevant part is what the gate would produce from
    irrelevant inputs alone, the same "linearize" idea as for a plain nonlinearity applied to the
    pair (g, u); all interaction terms go to beta. h is the identity except for GPT-OSS's experts
    (a clamp plus 1); `full_product` is f(full_gate) * h(full_up).
    """
    gamma_up = full_up - beta_up
    gamma_product = act_fn(full_gate - beta_gate) * (gamma_up if up_fn is None else up_fn(gamma_up))
    return full_product - gamma_product


def masked_softmax(
    scores: Float[Tensor, "*lead query key"], mask: Bool[Tensor, "*mask_lead query key"]
) -> Float[Tensor, "*lead query key"]:
    """Softmax over keys with TransformerLens's masking: masked scores are -inf, all-masked rows give 0."""
    pattern = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.nan_to_num(pattern, nan=0.0)


def attention_mask_matrix(
    attention_dir: str,
    attention_mask: Int[Tensor, "batch pos"] | None,
    n_pos: int,
    device: torch.device,
    window: int | None = None,
) -> Bool[Tensor, "mask_batch query key"]:
    """The boolean mask TransformerLens applies to a layer's scores: causal, padding (keys only),
    and for local attention only the last `window` keys (the query's own included)."""
    if attention_dir == "bidirectional":
        return torch.ones(1, n_pos, n_pos, dtype=torch.bool, device=device)
    query = torch.arange(n_pos, device=device)[:, None]
    key = torch.arange(n_pos, device=device)[None, :]
    allowed = key <= query
    if window is not None:
        allowed = allowed & (key > query - window)
    allowed = einops.rearrange(allowed, "query key -> 1 query key")
    if attention_mask is None:
        return allowed
    return allowed & einops.rearrange(attention_mask.bool(), "batch key -> batch 1 key")


def soft_cap(x: Tensor, cap: float | None) -> Tensor:
    """Gemma 2's soft-cap `cap * tanh(x / cap)` (identity without a cap)."""
    return x if cap is None else cap * torch.tanh(x / cap)


def qk_norm(
    n: Norm,
    beta: Float[Tensor, "src batch pos head d_head"],
    full: Float[Tensor, "batch pos head d_head"],
    per_head: bool,
    rules: Rules,
) -> tuple[Float[Tensor, "src batch pos head d_head"], Float[Tensor, "batch pos head d_head"]]:
    """QK-norm (an RMSNorm on q or k, per head or over all heads): the norm rule with the clean
    scale recomputed from the clean q or k. Returns beta' and the clean normalised output."""
    if not per_head:
        heads = full.shape[-2]
        flat_beta = einops.rearrange(beta, "... head d_head -> ... (head d_head)")
        flat_beta, flat_full = qk_norm(
            n, flat_beta[..., None, :], full.flatten(-2)[..., None, :], True, rules
        )
        return (
            einops.rearrange(flat_beta[..., 0, :], "... (head d_head) -> ... head d_head", head=heads),
            einops.rearrange(flat_full[..., 0, :], "... (head d_head) -> ... head d_head", head=heads),
        )
    scale = (full.pow(2).mean(-1, keepdim=True) + n.eps).sqrt()
    normalized = full / scale
    return norm(n, beta, scale, normalized, rules), normalized * cast(Tensor, n.weight)


def clip(
    beta: Float[Tensor, "*lead d"], full: Float[Tensor, "*full_lead d"], bound: float | None
) -> tuple[Float[Tensor, "*lead d"], Float[Tensor, "*full_lead d"]]:
    """`clip_qkv` (OLMo): a clamp to [-c, c] is a nonlinearity, so the linearize rule; also the clean output."""
    if bound is None:
        return beta, full
    clamped = full.clamp(-bound, bound)
    return clamped - (full - beta).clamp(-bound, bound), clamped


def logn_scale(
    train_length: int | None, n_pos: int, device: torch.device, dtype: torch.dtype
) -> Tensor | None:
    """Qwen-1's log-n query scale per position `[pos]` beyond the training length, or None."""
    if train_length is None or n_pos <= train_length:
        return None
    positions = torch.arange(1, n_pos + 1, device=device, dtype=torch.float32)
    scale = torch.where(positions > train_length, positions.log() / math.log(train_length), 1.0)
    return scale.to(dtype)


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
