"""Batched CD-T: decompose attention heads' outputs and push the relevant parts to the logits.

For each source head s at layer L, `beta_s = z - mu` (at the source positions), everything else is
irrelevant. Only beta is propagated; every term that depends on gamma is recovered from one cached
clean run as `full - beta` (docs/method.md §3), so the cost per source is about one forward pass from
its layer up. All sources of a layer and all examples are pushed together as rows
`[src, batch, ...]`, split into chunks of at most `chunk_size` rows to bound memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import cast

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import utilities as utils

from circuit_transfer.cdt import rules as R
from circuit_transfer.cdt.result import DecompositionResult, Head
from circuit_transfer.cdt.support import check_supported
from circuit_transfer.models.access import MLP, ModelAccess, Norm, model_access
from circuit_transfer.models.backend import HookedTransformer

RECORDABLE = (
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_rot_q",
    "attn.hook_rot_k",
    "attn.hook_z",
    "attn.hook_pattern",
    "mlp.hook_pre",
    "mlp.hook_pre_linear",
    "mlp.hook_post",
)
"""Per-block hook suffixes whose relevant part can be recorded (`blocks.{l}.` + suffix)."""

_CPU_BUDGET_BYTES = 1 << 30


def effective_attention_mask(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None,
) -> Int[Tensor, "batch pos"] | None:
    """The padding mask `model(tokens, attention_mask=...)` uses (TL infers one for left padding)."""
    if attention_mask is not None:
        return attention_mask.to(tokens.device)
    if model.tokenizer is not None and model.tokenizer.padding_side == "left":
        return utils.get_attention_mask(model.tokenizer, tokens, model.cfg.default_prepend_bos)
    return None


def default_chunk_size(model: HookedTransformer, n_pos: int) -> int:
    """Rows (sources x examples) per chunk so that the intermediate tensors fit a memory budget.

    The budget is 1 GiB on CPU and half the free memory on CUDA; a row holds a handful of
    residual-, MLP- and head-sized activations plus two attention patterns.
    """
    cfg = model.cfg
    d_mlp = cfg.d_mlp or 0
    floats = n_pos * (12 * cfg.d_model + 6 * d_mlp + 8 * cfg.n_heads * cfg.d_head + 4 * cfg.n_heads * n_pos)
    row_bytes = floats * torch.finfo(cfg.dtype).bits // 8
    device = next(model.parameters()).device
    budget = torch.cuda.mem_get_info(device)[0] // 2 if device.type == "cuda" else _CPU_BUDGET_BYTES
    return max(1, budget // row_bytes)


def _cache_names(model: HookedTransformer, first_layer: int, record: Sequence[str]) -> set[str]:
    """Hook names whose clean activations the rules read (from `first_layer` on)."""
    per_block = (
        "ln1.hook_scale",
        "ln1.hook_normalized",
        "ln2.hook_scale",
        "ln2.hook_normalized",
        "attn.hook_q",
        "attn.hook_k",
        "attn.hook_v",
        "attn.hook_z",
        "attn.hook_pattern",
        "hook_attn_out",
        "mlp.hook_pre",
        "mlp.hook_pre_linear",
        "mlp.hook_mid",
        "mlp.hook_post",
        "mlp.ln.hook_scale",
        "mlp.ln.hook_normalized",
        "hook_mlp_out",
    )
    last = model.cfg.n_layers - 1
    names = {f"blocks.{layer}.{suffix}" for layer in range(first_layer, last + 1) for suffix in per_block}
    names |= {f"blocks.{last}.hook_resid_post", "ln_final.hook_scale", "ln_final.hook_normalized"}
    names |= set(record)
    return names & set(model.hook_dict)


def _check_record(model: HookedTransformer, record: Sequence[str], rules: R.Rules) -> None:
    for name in record:
        parts = name.split(".", 2)
        if (
            len(parts) != 3
            or parts[0] != "blocks"
            or parts[2] not in RECORDABLE
            or name not in model.hook_dict
        ):
            raise ValueError(
                f"cannot record {name!r}: supported are blocks.{{l}}.{{{', '.join(RECORDABLE)}}}"
            )
        if parts[2] == "attn.hook_pattern" and rules.attention == "frozen":
            raise ValueError("the frozen attention rule does not decompose hook_pattern")


def _source_mask(
    source_positions: Sequence[int] | Bool[Tensor, "batch pos"] | None,
    batch: int,
    n_pos: int,
    device: torch.device,
) -> Bool[Tensor, "batch pos"]:
    if source_positions is None:
        return torch.ones(batch, n_pos, dtype=torch.bool, device=device)
    if isinstance(source_positions, Tensor) and source_positions.dtype == torch.bool:
        return source_positions.to(device)
    mask = torch.zeros(batch, n_pos, dtype=torch.bool, device=device)
    mask[:, list(source_positions)] = True
    return mask


class _Propagator:
    """Pushes relevant parts through the blocks for one chunk of rows `[src, batch, ...]`."""

    def __init__(
        self,
        access: ModelAccess,
        cache: dict[str, Tensor],
        rules: R.Rules,
        position_ids: Int[Tensor, "batch pos"],
        score_mask: Bool[Tensor, "mask_batch query key"],
        record: Callable[[str, Tensor], None],
    ):
        self.access = access
        self.cache = cache
        self.rules = rules
        self.position_ids = position_ids
        self.score_mask = score_mask
        self.record = record

    def _c(self, name: str) -> Tensor | None:
        return self.cache.get(name)

    def _norm(self, n: Norm, beta: Float[Tensor, "src batch pos d"]) -> Float[Tensor, "src batch pos d"]:
        """The norm rule with this norm's clean scale and normalised input from the cache."""
        if n.kind == "none":
            return beta
        return R.norm(
            n, beta, self._c(f"{n.hook}.hook_scale"), self._c(f"{n.hook}.hook_normalized"), self.rules
        )

    def from_source(
        self, layer: int, src_heads: list[int], beta_z: Float[Tensor, "src batch pos d_head"]
    ) -> Float[Tensor, "src batch pos d_model"]:
        """Relevant part of the last `hook_resid_post` when source head `src_heads[i]` of `layer` is row i."""
        blk = self.access.blocks[layer]
        name = f"blocks.{layer}.attn.hook_z"
        z = beta_z.new_zeros(*beta_z.shape[:3], self.access.n_heads, beta_z.shape[-1])
        z[torch.arange(len(src_heads)), :, :, src_heads] = beta_z
        self.record(name, z)
        W_O = blk.attn.W_O[src_heads]
        w_beta = einops.einsum(
            beta_z, W_O, "src batch pos d_head, src d_head d_model -> src batch pos d_model"
        )
        resid = self.attention_output(layer, w_beta)
        # The source layer's MLP reads resid_pre (irrelevant) in parallel blocks: its beta is 0.
        resid = (
            self.post(layer, resid) if blk.mlp is None or blk.parallel else self.after_attention(layer, resid)
        )
        for later in range(layer + 1, self.access.n_layers):
            resid = self.block(later, resid)
        return resid

    def block(
        self, layer: int, resid_pre: Float[Tensor, "src batch pos d_model"]
    ) -> Float[Tensor, "src batch pos d_model"]:
        """Relevant part of `blocks.{layer}.hook_resid_post` from that of its `hook_resid_pre`."""
        blk = self.access.blocks[layer]
        self.record(f"blocks.{layer}.hook_resid_pre", resid_pre)
        attn_out = self.attention(layer, self._norm(blk.ln1, resid_pre))
        if blk.mlp is None:
            return self.post(layer, resid_pre + attn_out)
        if blk.parallel:
            return self.post(layer, resid_pre + attn_out + self.mlp(layer, resid_pre))
        return self.after_attention(layer, resid_pre + attn_out)

    def after_attention(
        self, layer: int, resid_mid: Float[Tensor, "src batch pos d_model"]
    ) -> Float[Tensor, "src batch pos d_model"]:
        """From `hook_resid_mid` (sequential blocks) through the MLP to `hook_resid_post`."""
        self.record(f"blocks.{layer}.hook_resid_mid", resid_mid)
        return self.post(layer, resid_mid + self.mlp(layer, resid_mid))

    def post(
        self, layer: int, resid_post: Float[Tensor, "src batch pos d_model"]
    ) -> Float[Tensor, "src batch pos d_model"]:
        """Record and return the relevant part of `hook_resid_post`."""
        self.record(f"blocks.{layer}.hook_resid_post", resid_post)
        return resid_post

    def attention(
        self, layer: int, x: Float[Tensor, "src batch pos d_model"]
    ) -> Float[Tensor, "src batch pos d_model"]:
        """Attention rule: Q/K/V by the linear rule, rotary on the parts, relevant or frozen pattern."""
        attn = self.access.blocks[layer].attn
        p = f"blocks.{layer}.attn."
        q_full, k_full, v_full = (cast(Tensor, self._c(p + n)) for n in ("hook_q", "hook_k", "hook_v"))
        v = self._project(x, attn.W_V, attn.b_V, v_full)
        self.record(p + "hook_v", v)
        if self.rules.attention == "decomposed":
            q = self._project(x, attn.W_Q, attn.b_Q, q_full)
            k = self._project(x, attn.W_K, attn.b_K, k_full)
            self.record(p + "hook_q", q)
            self.record(p + "hook_k", k)
            if attn.rotary is not None:
                q = R.rotate(q, attn.rotary, self.position_ids)
                k = R.rotate(k, attn.rotary, self.position_ids)
                self.record(p + "hook_rot_q", q)
                self.record(p + "hook_rot_k", k)
            if attn.repeat > 1:
                k = einops.repeat(
                    k, "src batch pos kv d_head -> src batch pos (kv group) d_head", group=attn.repeat
                )
            scores = einops.einsum(
                q, k, "src batch query head d_head, src batch key head d_head -> src batch head query key"
            )
            mask = einops.rearrange(self.score_mask, "batch query key -> batch 1 query key")
            pattern = R.masked_softmax(scores / attn.scale, mask)
            self.record(p + "hook_pattern", pattern)
        else:
            pattern = cast(Tensor, self._c(p + "hook_pattern"))
        if attn.repeat > 1:
            v = einops.repeat(
                v, "src batch pos kv d_head -> src batch pos (kv group) d_head", group=attn.repeat
            )
        pattern_axes = "src batch head query key" if pattern.ndim == 5 else "batch head query key"
        z = einops.einsum(
            pattern, v, f"{pattern_axes}, src batch key head d_head -> src batch query head d_head"
        )
        self.record(p + "hook_z", z)
        return self.attention_output(
            layer,
            einops.einsum(
                z, attn.W_O, "src batch pos head d_head, head d_head d_model -> src batch pos d_model"
            ),
        )

    def attention_output(
        self, layer: int, w_beta: Float[Tensor, "src batch pos d_model"]
    ) -> Float[Tensor, "src batch pos d_model"]:
        """Linear rule for `W_O` (summed over heads) with the shared `b_O`."""
        b_O = self.access.blocks[layer].attn.b_O
        full = cast(Tensor, self._c(f"blocks.{layer}.hook_attn_out"))
        out = R.linear(w_beta, _minus(full, b_O), b_O, self.rules)
        self.record(f"blocks.{layer}.hook_attn_out", out)
        return out

    def _project(
        self,
        x: Float[Tensor, "src batch pos d_model"],
        W: Float[Tensor, "head d_model d_head"],
        b: Float[Tensor, "head d_head"] | None,
        full: Float[Tensor, "batch pos head d_head"],
    ) -> Float[Tensor, "src batch pos head d_head"]:
        w_beta = einops.einsum(
            x, W, "src batch pos d_model, head d_model d_head -> src batch pos head d_head"
        )
        return R.linear(w_beta, _minus(full, b), b, self.rules)

    def mlp(
        self, layer: int, resid: Float[Tensor, "src batch pos d_model"]
    ) -> Float[Tensor, "src batch pos d_model"]:
        """ln2 then the MLP: linear rule for W_in/W_out, linearize (or the gated rule) for f."""
        blk = self.access.blocks[layer]
        mlp = cast(MLP, blk.mlp)
        p = f"blocks.{layer}."
        c = self._c
        x = self._norm(cast(Norm, blk.ln2), resid)
        pre_full = cast(Tensor, c(p + "mlp.hook_pre"))
        if mlp.gated:
            W_gate = cast(Tensor, mlp.W_gate)
            gate = einops.einsum(x, W_gate, "src batch pos d_model, d_model d_mlp -> src batch pos d_mlp")
            up = einops.einsum(x, mlp.W_in, "src batch pos d_model, d_model d_mlp -> src batch pos d_mlp")
            self.record(p + "mlp.hook_pre", gate)
            self.record(p + "mlp.hook_pre_linear", up)
            up_full = cast(Tensor, c(p + "mlp.hook_pre_linear"))
            # f(g) * u recomputed (not hook_post - b_in), so a zero beta stays exactly zero
            product = mlp.act_fn(pre_full) * up_full
            beta_product = R.gated_product(mlp.act_fn, gate, up, pre_full, up_full, product)
            post = R.linear(beta_product, product, mlp.b_post, self.rules)
        else:
            w_pre = einops.einsum(x, mlp.W_in, "src batch pos d_model, d_model d_mlp -> src batch pos d_mlp")
            pre = R.linear(w_pre, _minus(pre_full, mlp.b_in), mlp.b_in, self.rules)
            self.record(p + "mlp.hook_pre", pre)
            if mlp.act_norm is not None:
                mid = R.linearize(mlp.act_fn, pre, pre_full, cast(Tensor, c(p + "mlp.hook_mid")))
                post = self._norm(mlp.act_norm, mid)
            else:
                post = R.linearize(mlp.act_fn, pre, pre_full, cast(Tensor, c(p + "mlp.hook_post")))
        self.record(p + "mlp.hook_post", post)
        w_out = einops.einsum(post, mlp.W_out, "src batch pos d_mlp, d_mlp d_model -> src batch pos d_model")
        out = R.linear(w_out, _minus(cast(Tensor, c(p + "hook_mlp_out")), mlp.b_out), mlp.b_out, self.rules)
        self.record(p + "hook_mlp_out", out)
        return out


def _minus(full: Tensor, bias: Tensor | None) -> Tensor:
    """W applied to the full input: the clean output minus its bias (when there is one)."""
    return full if bias is None else full - bias


@torch.no_grad()
def decompose_heads(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    heads: Sequence[Head],
    baseline: Float[Tensor, "n_layers n_heads d_head"]
    | Float[Tensor, "n_layers n_heads pos d_head"]
    | None = None,
    attention: R.AttentionRule = "decomposed",
    bias: R.BiasRule = "magnitude",
    record: Sequence[str] = (),
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    source_positions: Sequence[int] | Bool[Tensor, "batch pos"] | None = None,
    chunk_size: int | None = None,
    logits_positions: Int[Tensor, "batch"] | None = None,
    unembed_columns: Int[Tensor, "k"] | None = None,
    stabilize: bool = False,
) -> DecompositionResult:
    """Decompose each head's `hook_z` against a baseline and propagate its relevant part to the logits.

    Args:
        model: a HookedTransformer; unsupported config settings raise NotImplementedError first.
        tokens: token ids.
        heads: sources as (layer, head), any layers, any order; results follow this order.
        baseline: mu per head (`[n_layers, n_heads, d_head]`) or per head and position
            (`[n_layers, n_heads, pos, d_head]`, aligned with `tokens`); None for zero.
        attention: "decomposed" (relevant pattern from relevant scores) or "frozen".
        bias: "magnitude" (biases shared by |W beta| / (|W beta| + |W gamma|)) or "irrelevant".
        record: hook names (`blocks.{l}.` + one of RECORDABLE) whose parts to return.
        attention_mask: 1 for real tokens, as for `model(tokens, attention_mask=...)`.
        source_positions: positions (ints, or a bool mask `[batch, pos]`) where beta_s = z - mu;
            0 elsewhere. Default: all positions.
        chunk_size: max rows (sources x examples) propagated at once; default from a memory budget.
        logits_positions: one position per example; logits are then `[n_sources, batch, vocab]`.
        unembed_columns: vocabulary ids to return logits for (all when None).
        stabilize: apply CD-T's opposite-sign stability rule after every linear map. It bounds
            |beta| by |full| elementwise; without it beta can outgrow the activation and overflow
            over deep models with gated MLPs and massive activations (SmolLM2-135M, early-layer
            sources: a RuntimeWarning names them).

    Returns:
        DecompositionResult with beta per source; gamma is full - beta.
    """
    check_supported(model)
    rules = R.Rules(attention=attention, bias=bias, stabilize=stabilize)
    if attention not in ("decomposed", "frozen") or bias not in ("magnitude", "irrelevant"):
        raise ValueError(f"unknown rule attention={attention!r} bias={bias!r}")
    cfg = model.cfg
    heads = [(int(layer), int(head)) for layer, head in heads]
    if not heads:
        raise ValueError("no source heads given")
    for layer, head in heads:
        if not (0 <= layer < cfg.n_layers and 0 <= head < cfg.n_heads):
            raise ValueError(
                f"head {(layer, head)} out of range for {cfg.n_layers} layers x {cfg.n_heads} heads"
            )
    record = list(record)
    _check_record(model, record, rules)
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    batch, n_pos = tokens.shape
    mask = effective_attention_mask(model, tokens, attention_mask)
    first_layer = min(layer for layer, _ in heads)
    names = _cache_names(model, first_layer, record)
    _, cache = model.run_with_cache(
        tokens, attention_mask=mask, return_type=None, names_filter=lambda name: name in names
    )
    full = dict(cache.cache_dict)
    access = model_access(model)
    score_mask = R.attention_mask_matrix(cfg.attention_dir, mask, n_pos, device)
    position_ids = R.position_ids(mask, batch, n_pos, device)
    source_mask = _source_mask(source_positions, batch, n_pos, device)
    mu = (
        torch.zeros(cfg.n_layers, cfg.n_heads, cfg.d_head, device=device, dtype=cfg.dtype)
        if baseline is None
        else baseline.to(device, cfg.dtype)
    )

    final_norm = access.ln_final
    last_resid = full[f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
    W_U, b_U = access.W_U, access.b_U
    if unembed_columns is not None:
        columns = unembed_columns.to(device)
        W_U, b_U = W_U[:, columns], None if b_U is None else b_U[columns]
    final_full = R.norm_output(final_norm, full.get("ln_final.hook_normalized"), last_resid)
    full_logits = _select(final_full, logits_positions) @ W_U
    if b_U is not None:
        full_logits = full_logits + b_U

    n_src = len(heads)
    beta_logits = torch.zeros((n_src, *full_logits.shape), device=device, dtype=full_logits.dtype)
    beta_rec = {
        name: torch.zeros((n_src, *full[name].shape), device=device, dtype=full[name].dtype)
        for name in record
    }
    rows = chunk_size or default_chunk_size(model, n_pos)
    ex_step = min(batch, rows)
    src_step = max(1, rows // ex_step)
    for layer in sorted({layer for layer, _ in heads}):
        layer_src = [i for i, (src_layer, _) in enumerate(heads) if src_layer == layer]
        for ex0 in range(0, batch, ex_step):
            ex = slice(ex0, ex0 + ex_step)
            sliced = {name: act[ex] for name, act in full.items()}
            positions = None if logits_positions is None else logits_positions[ex].to(device)
            for s0 in range(0, len(layer_src), src_step):
                src = layer_src[s0 : s0 + src_step]

                def rec(name: str, beta: Tensor, src: list[int] = src, ex: slice = ex) -> None:
                    if name in beta_rec:
                        beta_rec[name][src, ex] = beta

                prop = _Propagator(
                    access,
                    sliced,
                    rules,
                    position_ids[ex],
                    score_mask[ex] if score_mask.shape[0] == batch else score_mask,
                    rec,
                )
                src_heads = [heads[i][1] for i in src]
                beta_z = _source_beta(
                    sliced[f"blocks.{layer}.attn.hook_z"], mu[layer, src_heads], src_heads, source_mask[ex]
                )
                resid = prop.from_source(layer, src_heads, beta_z)
                x = R.norm(
                    final_norm,
                    _select(resid, positions),
                    _select(sliced.get("ln_final.hook_scale"), positions),
                    _select(sliced.get("ln_final.hook_normalized"), positions),
                    rules,
                )
                beta_logits[src, ex] = R.linear(x @ W_U, _minus(full_logits[ex], b_U), b_U, rules)
    bad = [heads[i] for i in range(n_src) if not bool(beta_logits[i].isfinite().all())]
    if bad:
        warnings.warn(
            f"CD-T beta overflowed (inf/NaN logits) for sources {bad}: the rules let beta outgrow the "
            "full activation over many layers (gated MLPs make it quadratic); try stabilize=True.",
            RuntimeWarning,
            stacklevel=2,
        )
    return DecompositionResult(
        heads=heads,
        beta_logits=beta_logits,
        full_logits=full_logits,
        beta=beta_rec,
        full={name: full[name] for name in record},
    )


def _source_beta(
    z: Float[Tensor, "batch pos head d_head"],
    mu: Float[Tensor, "src d_head"] | Float[Tensor, "src pos d_head"],
    src_heads: list[int],
    source_mask: Bool[Tensor, "batch pos"],
) -> Float[Tensor, "src batch pos d_head"]:
    """beta_s = z - mu at the source positions, 0 elsewhere (gamma_s = mu there, z elsewhere)."""
    z_src = einops.rearrange(z[:, :, src_heads], "batch pos src d_head -> src batch pos d_head")
    mu = (
        einops.rearrange(mu, "src d_head -> src 1 1 d_head")
        if mu.ndim == 2
        else einops.rearrange(mu, "src pos d_head -> src 1 pos d_head")
    )
    return (z_src - mu) * einops.rearrange(source_mask, "batch pos -> 1 batch pos 1")


def _select(x: Tensor | None, positions: Int[Tensor, "batch"] | None) -> Tensor | None:
    """Pick one position per example (axis -2 is pos, the axis before is batch)."""
    if x is None or positions is None:
        return x
    index = positions.to(x.device).view(*([1] * (x.ndim - 3)), -1, 1, 1).expand(*x.shape[:-2], 1, x.shape[-1])
    return x.gather(-2, index).squeeze(-2)
