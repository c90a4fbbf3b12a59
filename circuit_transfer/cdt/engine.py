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
from circuit_transfer.models.access import MLP, Experts, ModelAccess, Norm, model_access
from circuit_transfer.models.backend import Model

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
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None,
) -> Int[Tensor, "batch pos"] | None:
    """The padding mask `model(tokens, attention_mask=...)` uses (TL infers one for left padding)."""
    if attention_mask is not None:
        return attention_mask.to(tokens.device)
    if model.tokenizer is not None and model.tokenizer.padding_side == "left":
        return utils.get_attention_mask(model.tokenizer, tokens, model.cfg.default_prepend_bos)
    return None


def default_chunk_size(model: Model, n_pos: int) -> int:
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


def _cache_names(model: Model, first_layer: int, record: Sequence[str]) -> set[str]:
    """Hook names whose clean activations the rules read (from `first_layer` on)."""
    per_block = (
        "hook_resid_pre",
        "hook_resid_mid",
        "ln1.hook_scale",
        "ln1.hook_normalized",
        "ln1_post.hook_scale",
        "ln1_post.hook_normalized",
        "ln2_post.hook_scale",
        "ln2_post.hook_normalized",
        "mlp.hook_expert_weights",
        "mlp.hook_expert_indices",
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
    names |= {"hook_pos_embed"} | {
        f"blocks.{layer}.hook_resid_post" for layer in range(first_layer, last + 1)
    }
    names |= set(record)
    return names & set(model.hook_dict)


def _check_record(model: Model, record: Sequence[str], rules: R.Rules) -> None:
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
        score_masks: list[Bool[Tensor, "mask_batch query key"]],
        record: Callable[[str, Tensor], None],
    ):
        self.access = access
        self.cache = cache
        self.rules = rules
        self.position_ids = position_ids
        self.score_masks = score_masks
        self.record = record

    def _c(self, name: str) -> Tensor | None:
        return self.cache.get(name)

    def _norm(
        self, n: Norm, beta: Float[Tensor, "src batch pos d"], full_in: Tensor | None = None
    ) -> Float[Tensor, "src batch pos d"]:
        """The norm rule with this norm's clean scale and normalised input from the cache."""
        if n.kind == "none":
            return beta
        scale, normalized = self._c(f"{n.hook}.hook_scale"), self._c(f"{n.hook}.hook_normalized")
        if scale is not None and scale.ndim == 4:  # use_attn_in / use_split_qkv_input: one copy per head
            scale, normalized = scale[:, :, 0], cast(Tensor, normalized)[:, :, 0]
        return R.norm(n, beta, scale, normalized, self.rules, full_in)

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
        p = f"blocks.{layer}."
        self.record(p + "hook_resid_pre", resid_pre)
        attn_in = (
            resid_pre if blk.post_norm else self._norm(blk.ln1, resid_pre, self._c(p + "hook_resid_pre"))
        )
        attn_out = self.attention(layer, attn_in)
        if blk.mlp is None:
            return self.post(layer, resid_pre + attn_out)
        if blk.parallel:
            return self.post(layer, resid_pre + attn_out + self.mlp(layer, resid_pre, p + "hook_resid_pre"))
        return self.after_attention(layer, resid_pre + attn_out)

    def after_attention(
        self, layer: int, resid_mid: Float[Tensor, "src batch pos d_model"]
    ) -> Float[Tensor, "src batch pos d_model"]:
        """From `hook_resid_mid` (sequential blocks) through the MLP to `hook_resid_post`."""
        self.record(f"blocks.{layer}.hook_resid_mid", resid_mid)
        return self.post(layer, resid_mid + self.mlp(layer, resid_mid, f"blocks.{layer}.hook_resid_mid"))

    def post(
        self, layer: int, resid_post: Float[Tensor, "src batch pos d_model"]
    ) -> Float[Tensor, "src batch pos d_model"]:
        """Record and return the relevant part of `hook_resid_post` (after the residual sum's
        stability rule, where the rules place one)."""
        name = f"blocks.{layer}.hook_resid_post"
        if self.rules.stabilizes("resid"):
            resid_post = R.stabilize_signs(resid_post, cast(Tensor, self._c(name)).expand_as(resid_post))
        self.record(name, resid_post)
        return resid_post

    def _qk(
        self, layer: int, x: Float[Tensor, "src batch pos d_model"], which: str
    ) -> Float[Tensor, "src batch pos head d_head"]:
        """Relevant q or k as the scores see it: projection, QK-norm, clip, rotary, log-n scale."""
        attn = self.access.blocks[layer].attn
        p = f"blocks.{layer}.attn."
        W, b = (attn.W_Q, attn.b_Q) if which == "q" else (attn.W_K, attn.b_K)
        full = cast(Tensor, self._c(p + f"hook_{which}"))
        # shortformer positions join the q/k input (not beta): they land in W gamma = full - b - W beta
        beta = self._project(x, W, b, full)
        self.record(p + f"hook_{which}", beta)
        if attn.qk_norm is not None:
            n = attn.qk_norm.q if which == "q" else attn.qk_norm.k
            beta, full = R.qk_norm(n, beta, full, attn.qk_norm.per_head, self.rules)
        beta, _ = R.clip(beta, full, attn.clip_qkv)
        if attn.rotary is not None:
            beta = R.rotate(beta, attn.rotary, self.position_ids)
            self.record(p + f"hook_rot_{which}", beta)
        if which == "q":
            logn = R.logn_scale(attn.logn_train_length, beta.shape[2], beta.device, beta.dtype)
            if logn is not None:
                beta = beta * einops.rearrange(logn, "pos -> pos 1 1")
        return beta

    def attention(
        self, layer: int, x: Float[Tensor, "src batch pos d_model"]
    ) -> Float[Tensor, "src batch pos d_model"]:
        """Attention rule: Q/K/V by the linear rule (then QK-norm, clip, rotary), relevant or frozen pattern.

        In the decomposed rule the relevant scores get the layer's own mask and soft-cap; what
        adds to the scores without coming from q and k (ALiBi, a GPT-OSS sink) is irrelevant.
        """
        attn = self.access.blocks[layer].attn
        p = f"blocks.{layer}.attn."
        v_full = cast(Tensor, self._c(p + "hook_v"))
        v = self._project(x, attn.W_V, attn.b_V, v_full)
        self.record(p + "hook_v", v)
        v, _ = R.clip(v, v_full, attn.clip_qkv)
        if self.rules.attention == "decomposed":
            q, k = self._qk(layer, x, "q"), self._qk(layer, x, "k")
            if attn.repeat > 1:
                k = einops.repeat(
                    k, "src batch pos kv d_head -> src batch pos (kv group) d_head", group=attn.repeat
                )
            scores = einops.einsum(
                q, k, "src batch query head d_head, src batch key head d_head -> src batch head query key"
            )
            mask = einops.rearrange(self.score_masks[layer], "batch query key -> batch 1 query key")
            pattern = R.masked_softmax(R.soft_cap(scores / attn.scale, attn.soft_cap), mask)
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
        """Linear rule for `W_O` (summed over heads) with the shared `b_O`, then any output norm."""
        blk = self.access.blocks[layer]
        b_O = blk.attn.b_O
        out_norms = [n for n in (blk.ln1_post, blk.ln1 if blk.post_norm else None) if n is not None]
        if out_norms:  # hook_attn_out is after the norms: W_O of the full z, recomputed
            z_full = cast(Tensor, self._c(f"blocks.{layer}.attn.hook_z"))
            w_full = einops.einsum(
                z_full, blk.attn.W_O, "batch pos head d_head, head d_head d_model -> batch pos d_model"
            )
        else:
            w_full = _minus(cast(Tensor, self._c(f"blocks.{layer}.hook_attn_out")), b_O)
        out = R.linear(w_beta, w_full, b_O, self.rules, "attn_out")
        for n in out_norms:
            out = self._norm(n, out)
        self.record(f"blocks.{layer}.hook_attn_out", out)
        return out

    def _project(
        self,
        x: Float[Tensor, "src batch pos d_model"],
        W: Float[Tensor, "head d_model d_head"],
        b: Tensor | None,
        full: Float[Tensor, "batch pos head d_head"],
    ) -> Float[Tensor, "src batch pos head d_head"]:
        w_beta = einops.einsum(
            x, W, "src batch pos d_model, head d_model d_head -> src batch pos head d_head"
        )
        return R.linear(w_beta, _minus(full, b), b, self.rules, "qkv")

    def mlp(
        self, layer: int, resid: Float[Tensor, "src batch pos d_model"], resid_hook: str
    ) -> Float[Tensor, "src batch pos d_model"]:
        """ln2 then the MLP (or the experts), then any output norm.

        Linear rule for W_in/W_out, linearize (or the gated rule) for f. `resid_hook` names the
        clean MLP-block input (for the input-share LayerNorm bias and the experts).
        """
        blk = self.access.blocks[layer]
        p = f"blocks.{layer}."
        c = self._c
        ln2 = cast(Norm, blk.ln2)
        resid_full = cast(Tensor, c(resid_hook))
        x = resid if blk.post_norm else self._norm(ln2, resid, resid_full)
        out_norms = [n for n in (blk.ln2_post, ln2 if blk.post_norm else None) if n is not None]
        if isinstance(blk.mlp, Experts):
            x_full = (
                resid_full
                if blk.post_norm
                else R.norm_output(ln2, c(f"{ln2.hook}.hook_normalized"), resid_full)
            )
            out = self.experts(blk.mlp, x, x_full, cast(Tensor, c(p + "mlp.routing")))
        else:
            out = self.dense_mlp(layer, cast(MLP, blk.mlp), x, bool(out_norms))
        for n in out_norms:
            out = self._norm(n, out)
        self.record(p + "hook_mlp_out", out)
        return out

    def dense_mlp(
        self, layer: int, mlp: MLP, x: Float[Tensor, "src batch pos d_model"], normed_out: bool
    ) -> Float[Tensor, "src batch pos d_model"]:
        """A dense MLP, reading its clean pre-activations from the cache."""
        p = f"blocks.{layer}."
        c = self._c
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
            post = R.linear(beta_product, product, mlp.b_post, self.rules, "mlp_in")
        else:
            w_pre = einops.einsum(x, mlp.W_in, "src batch pos d_model, d_model d_mlp -> src batch pos d_mlp")
            pre = R.linear(w_pre, _minus(pre_full, mlp.b_in), mlp.b_in, self.rules, "mlp_in")
            self.record(p + "mlp.hook_pre", pre)
            if mlp.act_norm is not None:
                mid_full = cast(Tensor, c(p + "mlp.hook_mid"))
                mid = R.linearize(mlp.act_fn, pre, pre_full, mid_full)
                post = self._norm(mlp.act_norm, mid, mid_full)
            else:
                post = R.linearize(mlp.act_fn, pre, pre_full, cast(Tensor, c(p + "mlp.hook_post")))
        self.record(p + "mlp.hook_post", post)
        w_out = einops.einsum(post, mlp.W_out, "src batch pos d_mlp, d_mlp d_model -> src batch pos d_model")
        if normed_out:  # hook_mlp_out is after the output norm: W_out of the full post, recomputed
            w_full = einops.einsum(
                cast(Tensor, c(p + "mlp.hook_post")),
                mlp.W_out,
                "batch pos d_mlp, d_mlp d_model -> batch pos d_model",
            )
        else:
            w_full = _minus(cast(Tensor, c(p + "hook_mlp_out")), mlp.b_out)
        return R.linear(w_out, w_full, mlp.b_out, self.rules, "mlp_out")

    def experts(
        self,
        moe: Experts,
        x: Float[Tensor, "src batch pos d_model"],
        x_full: Float[Tensor, "batch pos d_model"],
        routing: Float[Tensor, "batch pos n_experts"],
    ) -> Float[Tensor, "src batch pos d_model"]:
        """Mixture of experts with the routing frozen from the clean run.

        A choice, like the frozen attention pattern: the router's top-k selection is piecewise
        constant and its weights are a softmax of the full input, so we give the clean choice and
        the clean weights to both parts (they act as constants, as a norm's scale does); each
        chosen expert is a gated MLP decomposed by the gated rule, and the relevant parts add over
        the chosen experts weighted by the clean routing weights. Completeness holds because the
        full output is the same weighted sum. Only the tokens routed to an expert are computed.
        """
        out = torch.zeros_like(x)
        for e, expert in enumerate(moe.experts):
            batch_idx, pos_idx = torch.nonzero(routing[..., e], as_tuple=True)
            if batch_idx.numel() == 0:
                continue
            beta = _expert(expert, x[:, batch_idx, pos_idx], x_full[batch_idx, pos_idx], self.rules)
            out[:, batch_idx, pos_idx] += routing[batch_idx, pos_idx, e, None] * beta
        return out


def _expert(
    mlp: MLP, x: Float[Tensor, "src token d_model"], x_full: Float[Tensor, "token d_model"], rules: R.Rules
) -> Float[Tensor, "src token d_model"]:
    """One gated expert on its tokens, its clean pre-activations recomputed from the clean input."""
    W_gate = cast(Tensor, mlp.W_gate)
    gate_w, gate_full_w = x @ W_gate, x_full @ W_gate
    up_w, up_full_w = x @ mlp.W_in, x_full @ mlp.W_in
    gate = R.linear(gate_w, gate_full_w, mlp.b_gate, rules, "gate_up")
    up = R.linear(up_w, up_full_w, mlp.b_in, rules, "gate_up")
    gate_full, up_full = _plus(gate_full_w, mlp.b_gate), _plus(up_full_w, mlp.b_in)
    product = mlp.act_fn(gate_full) * (up_full if mlp.up_fn is None else mlp.up_fn(up_full))
    beta_product = R.gated_product(mlp.act_fn, gate, up, gate_full, up_full, product, mlp.up_fn)
    post = R.linear(beta_product, product, mlp.b_post, rules, "mlp_in")
    post_full = _plus(product, mlp.b_post)
    return R.linear(post @ mlp.W_out, post_full @ mlp.W_out, mlp.b_out, rules, "mlp_out")


def _minus(full: Tensor, bias: Tensor | None) -> Tensor:
    """W applied to the full input: the clean output minus its bias (when there is one)."""
    return full if bias is None else full - bias


def _plus(w_full: Tensor, bias: Tensor | None) -> Tensor:
    """The clean output from W applied to the full input, plus the bias (when there is one)."""
    return w_full if bias is None else w_full + bias


def _routing(access: ModelAccess, full: dict[str, Tensor], batch: int, n_pos: int) -> dict[str, Tensor]:
    """The clean run's routing weights per MoE layer, `[batch, pos, n_experts]` (0 for experts not chosen),
    as `blocks.{l}.mlp.routing`."""
    out = {}
    for blk in access.blocks:
        moe = blk.mlp
        if not isinstance(moe, Experts) or moe.weights_hook not in full:
            continue
        weights = full[moe.weights_hook].reshape(batch, n_pos, -1)
        indices = full[moe.indices_hook].reshape(batch, n_pos, -1)
        chosen = weights.gather(-1, indices)
        if moe.renormalize:
            chosen = chosen / chosen.sum(-1, keepdim=True)
        dense = torch.zeros_like(weights).scatter(-1, indices, chosen)
        out[f"blocks.{blk.index}.mlp.routing"] = dense.to(access.dtype)
    return out


@torch.no_grad()
def decompose_heads(
    model: Model,
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
    stabilize: bool | R.Stabilize = False,
    rules: R.Rules | str | None = None,
) -> DecompositionResult:
    """Decompose each head's `hook_z` against a baseline and propagate its relevant part to the logits.

    Args:
        model: a HookedTransformer or a TransformerBridge; unsupported settings raise
            NotImplementedError first.
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
        stabilize: the opposite-sign stability rule: True or "linear" after every linear map
            (ours), "cdt" where the authors' code applies it (see `Rules`). It bounds |beta| by
            |full| elementwise; without it beta can outgrow the activation and overflow over deep
            models with gated MLPs and massive activations (SmolLM2-135M, early-layer sources: a
            RuntimeWarning names them).
        rules: a `Rules` or a preset name ("cdt-reference": the authors' CD_Circuit propagation,
            `rules.CDT_REFERENCE`); when given it replaces attention, bias and stabilize.

    Returns:
        DecompositionResult with beta per source; gamma is full - beta.
    """
    check_supported(model)
    if isinstance(rules, str):
        if rules not in R.PRESETS:
            raise ValueError(f"unknown rules preset {rules!r}: choose one of {sorted(R.PRESETS)}")
        rules = R.PRESETS[rules]
    elif rules is None:
        rules = R.Rules(attention=attention, bias=bias, stabilize=stabilize)
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
    unreached = [name for name in record if name not in full]
    if unreached:  # e.g. the bridge's fused-QKV attention (Phi-3) never fires hook_rot_q/k
        raise ValueError(
            f"cannot record {unreached}: {type(model).__name__}'s forward pass never runs these hooks"
        )
    access = model_access(model, n_positions=n_pos)
    full.update(_routing(access, full, batch, n_pos))
    masks: dict[tuple[str, int | None], Tensor] = {}
    for blk in access.blocks:
        key = (blk.attn.mask, blk.attn.window)
        if key not in masks:
            masks[key] = R.attention_mask_matrix(key[0], mask, n_pos, device, key[1])
    score_masks = [masks[(blk.attn.mask, blk.attn.window)] for blk in access.blocks]
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
    pre_cap = _plus(_select(final_full, logits_positions) @ W_U, b_U)
    full_logits = R.soft_cap(pre_cap, access.logits_soft_cap)

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
                    [m[ex] if m.shape[0] == batch else m for m in score_masks],
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
                    _select(last_resid[ex], positions),
                )
                beta_pre = R.linear(x @ W_U, _minus(pre_cap[ex], b_U), b_U, rules, "unembed")
                beta_logits[src, ex] = (
                    beta_pre
                    if access.logits_soft_cap is None
                    else R.linearize(
                        lambda t: R.soft_cap(t, access.logits_soft_cap),
                        beta_pre,
                        pre_cap[ex],
                        full_logits[ex],
                    )
                )
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
