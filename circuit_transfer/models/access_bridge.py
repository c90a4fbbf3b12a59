"""Build the model-access layer (`circuit_transfer.models.access`) from a `TransformerBridge`.

The bridge runs the Hugging Face model itself, so everything here is read from the HF modules it
wraps and from the HF config, not from TransformerLens's conversion: the weights are views of
the HF parameters (`q_proj.weight` `[n_heads * d_head, d_model]` -> `W_Q [head, d_model, d_head]`,
K and V per KV group, `o_proj.weight` -> `W_O [head, d_head, d_model]`; fused projections as row
blocks, GPT-2's Conv1D transposed), the attention scale is
the module's own `scaling` (Gemma's `query_pre_attn_scalar`), the rotary tables are what the HF
rotary module returns for positions `0 .. n_positions - 1` (per layer type: Gemma 3's local and
global bases; none for GPT-2's learned positions, which enter upstream of every source), the
window is the layer's `sliding_window` from `layer_types`. Where HF differs
from TransformerLens's converted weights the rule follows HF: Gemma's RMSNorm multiplies by
`1 + weight` (TransformerLens adds the 1 into its weights when converting).

Only the architectures in `ARCHITECTURES` are mapped (each checked against the hooked backend
and the HF forward pass in tests/bridge); any other is refused by name before any compute.
The clean run reads the bridge's own hooks (`enable_compatibility_mode` gives the legacy names;
tests/bridge checks each one the engine reads against the hooked backend).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from circuit_transfer.models.access import MLP, NO_NORM, Attention, Block, ModelAccess, Norm, QKNorm, Rotary
from circuit_transfer.models.backend import TransformerBridge

ARCHITECTURES = {
    "GPT2LMHeadModel",
    "GPTNeoForCausalLM",
    "GPTNeoXForCausalLM",
    "ApertusForCausalLM",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "Olmo2ForCausalLM",
    "Olmo3ForCausalLM",
    "Phi3ForCausalLM",
}
"""HF architectures whose bridge the CD-T engine reads: the Llama layout (q/k/v/o projections, fused
or not, rotary, RMSNorm, a gated MLP or Apertus's plain one) and GPT-2 (fused `c_attn`, learned
positions, LayerNorm, GELU MLP), GPT-Neo (unscaled scores, local layers) and NeoX (per-head fused
`query_key_value`, partial rotary, parallel blocks). Not OPT: its bridge flattens batch and
position in the MLP hooks."""

PLAIN_RMS_NORMS = {
    "ApertusRMSNorm",
    "LlamaRMSNorm",
    "MistralRMSNorm",
    "Qwen2RMSNorm",
    "Qwen3RMSNorm",
    "Olmo2RMSNorm",
    "Olmo3RMSNorm",
    "Phi3RMSNorm",
}
"""HF RMSNorm classes computing `x / rms(x) * weight`."""

OFFSET_RMS_NORMS = {"GemmaRMSNorm", "Gemma2RMSNorm", "Gemma3RMSNorm"}
"""HF RMSNorm classes computing `x / rms(x) * (1 + weight)` (Gemma)."""

POST_NORM = {"Olmo2ForCausalLM", "Olmo3ForCausalLM"}
"""Architectures whose norms normalise each sublayer's output before the residual add (no input norms)."""

UNSCALED = {"GPTNeoForCausalLM"}
"""Architectures whose attention scores are `q . k` unscaled."""

ALL_HEAD_QK_NORM = {"Olmo2ForCausalLM", "Olmo3ForCausalLM"}
"""Architectures whose QK-norm runs over all heads at once (`[n_heads * d_head]`), not per head."""


def architecture(bridge: TransformerBridge) -> str:
    """The HF architecture name of the model the bridge wraps."""
    archs = getattr(bridge.original_model.config, "architectures", None) or [
        type(bridge.original_model).__name__
    ]
    return archs[0]


def check_bridge_supported(bridge: TransformerBridge) -> None:
    """Raise NotImplementedError naming what the CD-T engine cannot read from this bridge."""
    arch = architecture(bridge)
    if arch not in ARCHITECTURES:
        raise NotImplementedError(
            f"CD-T on the TransformerBridge has no mapping for {arch} (mapped: {', '.join(sorted(ARCHITECTURES))}); "
            "load the model with backend='hooked' (TransformerLens 3.x), or score heads with "
            "estimator='attribution'"
        )
    config = bridge.original_model.config
    if getattr(config, "use_bidirectional_attention", None):
        raise NotImplementedError(
            f"CD-T on the bridge: {arch} with use_bidirectional_attention is not mapped"
        )
    if getattr(config, "mlp_bias", False):
        raise NotImplementedError(
            f"CD-T on the bridge: {arch} with mlp_bias=True is not mapped (the gated-MLP rule has no "
            "gate/up biases); use backend='hooked'"
        )


def _hf(component: nn.Module) -> nn.Module:
    """The HF module behind a bridge component (the bridge also swaps its wrappers into the HF
    tree: `LlamaAttention.q_proj` is a `LinearBridge` there), or the module itself if unwrapped."""
    module = getattr(component, "original_component", None)
    return component if module is None else module


def _nonzero(bias: Tensor | None) -> Tensor | None:
    return bias if bias is not None and bool(bias.any()) else None


def _norm(module: nn.Module, hook: str | None) -> Norm:
    """The Norm of an HF norm module (by class: plain RMS, Gemma's 1 + weight, LayerNorm)."""
    name = type(module).__name__
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if name in PLAIN_RMS_NORMS:
        return Norm("RMS", module.weight, None, float(eps), hook, module.weight.shape[0])
    if name in OFFSET_RMS_NORMS:
        return Norm("RMS", 1 + module.weight, None, float(eps), hook, module.weight.shape[0])
    if isinstance(module, nn.LayerNorm):
        return Norm("LN", module.weight, _nonzero(module.bias), module.eps, hook, module.weight.shape[0])
    raise NotImplementedError(f"CD-T on the bridge has no rule for the HF norm {name}")


def bridge_final_norm(bridge: TransformerBridge) -> Norm:
    """The Norm of the bridge's final norm (`models.access.final_norm`)."""
    return _norm(_hf(bridge.ln_final), "ln_final")


def _heads(
    weight: Float[Tensor, "n_d_head d_model"], bias: Tensor | None, n: int, d_head: int
) -> tuple[Float[Tensor, "n d_model d_head"], Float[Tensor, "n d_head"] | None]:
    """A `[n * d_head, d_model]` projection as `W [n, d_model, d_head]` and `b [n, d_head]` (views)."""
    W = weight.view(n, d_head, -1).transpose(1, 2)
    b = _nonzero(bias)
    return W, None if b is None else b.view(n, d_head)


def _out_in(module: nn.Module) -> Float[Tensor, "d_out d_in"]:
    """A projection's weight as `nn.Linear` holds it, `[d_out, d_in]` (GPT-2's Conv1D: transposed)."""
    return module.weight.T if isinstance(module, Conv1D) else module.weight


def _qkv(
    attn: nn.Module, n_heads: int, n_kv: int, d_head: int
) -> list[tuple[Float[Tensor, "n d_model d_head"], Float[Tensor, "n d_head"] | None]]:
    """(W, b) per head of the q, k and v projections (k and v per KV group): separate linears,
    the row blocks `[q; k; v]` of a fused `qkv_proj` (Phi-3) or `c_attn` (GPT-2), or NeoX's
    `query_key_value`, whose rows interleave them per head (`[q_h; k_h; v_h]` for each head h)."""
    if hasattr(attn, "query_key_value"):
        fused = _hf(attn.query_key_value)
        W = fused.weight.view(n_heads, 3, d_head, -1).transpose(2, 3)
        b = [None] * 3 if fused.bias is None else fused.bias.view(n_heads, 3, d_head).unbind(1)
        return [(W[:, i], _nonzero(b[i])) for i in range(3)]
    counts = (n_heads, n_kv, n_kv)
    fused = next((getattr(attn, n) for n in ("qkv_proj", "c_attn") if hasattr(attn, n)), None)
    if fused is None:
        linears = [_hf(getattr(attn, f"{part}_proj")) for part in "qkv"]
        parts = [(linear.weight, linear.bias) for linear in linears]
    else:
        fused = _hf(fused)
        sizes = [n * d_head for n in counts]
        biases = [None] * 3 if fused.bias is None else fused.bias.split(sizes)
        parts = list(zip(_out_in(fused).split(sizes), biases, strict=True))
    return [_heads(weight, bias, n, d_head) for (weight, bias), n in zip(parts, counts, strict=True)]


def _rotary_tables(
    bridge: TransformerBridge, n_positions: int, layer_type: str | None
) -> tuple[Tensor, Tensor] | None:
    """(sin, cos) `[n_positions, rotary_dim]` from the HF rotary module (HF's layout `cat(f, f)`:
    x_i pairs with x_{i + dim/2}, as TransformerLens's non-adjacent rotary); None without one
    (GPT-2: learned positions, in the embedding, upstream of every source)."""
    rotary = getattr(bridge.original_model.base_model, "rotary_emb", None)
    if rotary is None:
        return None
    rotary = _hf(rotary)
    device = next(bridge.parameters()).device
    dtype = bridge.original_model.dtype
    position_ids = torch.arange(n_positions, device=device)[None]
    x = torch.zeros((), device=device, dtype=dtype)
    kwargs = (
        {"layer_type": layer_type} if "layer_type" in inspect.signature(rotary.forward).parameters else {}
    )
    cos, sin = rotary(x, position_ids, **kwargs)
    return sin[0].to(dtype), cos[0].to(dtype)


def _window(config: object, layer: int) -> int | None:
    """The layer's sliding window: per `layer_types` where the config has them (GPT-Neo:
    `attention_layers` and `window_size`), else all layers."""
    if getattr(config, "attention_layers", None) is not None:
        return config.window_size if config.attention_layers[layer] == "local" else None
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and layer_types[layer] != "sliding_attention":
        return None
    return window


def _attention(bridge: TransformerBridge, layer: int, rotary: Rotary | None) -> Attention:
    arch = architecture(bridge)
    config = bridge.original_model.config
    attn = _hf(bridge.blocks[layer].attn)
    n_heads = config.num_attention_heads
    d_head = attn.head_dim if hasattr(attn, "head_dim") else attn.head_size  # NeoX: head_size
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    (W_Q, b_Q), (W_K, b_K), (W_V, b_V) = _qkv(attn, n_heads, n_kv, d_head)
    o_proj = _hf(
        next(getattr(attn, n) for n in ("o_proj", "c_proj", "dense", "out_proj") if hasattr(attn, n))
    )
    W_O = _out_in(o_proj).view(-1, n_heads, d_head).permute(1, 2, 0)
    qk_norm = None
    if getattr(attn, "q_norm", None) is not None:
        qk_norm = QKNorm(
            _norm(_hf(attn.q_norm), None),
            _norm(_hf(attn.k_norm), None),
            per_head=arch not in ALL_HEAD_QK_NORM,
        )
    soft_cap = getattr(config, "attn_logit_softcapping", None)
    return Attention(
        W_Q=W_Q,
        b_Q=b_Q,
        W_K=W_K,
        b_K=b_K,
        W_V=W_V,
        b_V=b_V,
        W_O=W_O,
        b_O=_nonzero(o_proj.bias),
        repeat=n_heads // n_kv,
        scale=1.0 if arch in UNSCALED else 1 / float(attn.scaling),
        mask="causal",
        window=_window(config, layer),
        position="absolute" if rotary is None else "rotary",
        rotary=rotary,
        alibi_slopes=None,
        pos_embed_hook=None,
        qk_norm=qk_norm,
        clip_qkv=None,
        logn_train_length=None,
        soft_cap=soft_cap if soft_cap else None,
        sinks=None,
    )


def _mlp(bridge: TransformerBridge, layer: int) -> MLP:
    mlp = _hf(bridge.blocks[layer].mlp)
    hook = f"blocks.{layer}.mlp"
    plain = {
        "c_fc": ("c_proj", "act"),  # GPT-2, GPT-Neo
        "dense_h_to_4h": ("dense_4h_to_h", "act"),  # NeoX
        "up_proj": ("down_proj", "act_fn"),  # Apertus
    }
    if not hasattr(mlp, "gate_proj") and not hasattr(mlp, "gate_up_proj"):
        name_in = next(name for name in plain if hasattr(mlp, name))
        name_out, name_act = plain[name_in]
        up, down = _hf(getattr(mlp, name_in)), _hf(getattr(mlp, name_out))
        return MLP(
            W_in=_out_in(up).T,
            b_in=_nonzero(up.bias),
            W_out=_out_in(down).T,
            b_out=_nonzero(down.bias),
            act_fn=getattr(mlp, name_act),
            hook=hook,
        )
    if hasattr(mlp, "gate_up_proj"):  # Phi-3: one linear, rows [gate; up]
        fused = _hf(mlp.gate_up_proj)
        gate, up_w = fused.weight.chunk(2)
        biases = [fused.bias]
        act_fn: Callable[[Tensor], Tensor] = mlp.activation_fn
    else:
        linears = [_hf(mlp.gate_proj), _hf(mlp.up_proj)]
        gate, up_w = (linear.weight for linear in linears)
        biases = [linear.bias for linear in linears]
        act_fn = mlp.act_fn
    if any(_nonzero(b) is not None for b in biases):
        raise NotImplementedError(f"CD-T on the bridge: blocks.{layer}.mlp has gate/up biases (not mapped)")
    down = _hf(mlp.down_proj)
    return MLP(
        W_in=up_w.T,
        b_in=None,
        W_out=down.weight.T,
        b_out=_nonzero(down.bias),
        act_fn=act_fn,
        W_gate=gate.T,
        hook=hook,
    )


def bridge_access(bridge: TransformerBridge, n_positions: int | None = None) -> ModelAccess:
    """The access layer of a TransformerBridge (views of the HF parameters).

    Args:
        n_positions: how many positions the rotary tables cover (the sequence length about to be
            decomposed); default the config's `max_position_embeddings`.
    """
    check_bridge_supported(bridge)
    arch = architecture(bridge)
    config = bridge.original_model.config
    n_positions = n_positions or config.max_position_embeddings
    layer_types = getattr(config, "layer_types", None) or [None] * config.num_hidden_layers
    rotaries: dict[str | None, Rotary | None] = {}
    for layer_type in dict.fromkeys(layer_types):
        tables = _rotary_tables(bridge, n_positions, layer_type)
        rotaries[layer_type] = None if tables is None else Rotary(tables[1].shape[-1], False, *tables)
    blocks = []
    for layer, blk in enumerate(bridge.blocks):
        norms = {
            name: _norm(_hf(getattr(blk, name)), f"blocks.{layer}.{name}")
            for name in ("ln1", "ln2", "ln1_post", "ln2_post")
            if hasattr(blk, name)
        }
        blocks.append(
            Block(
                index=layer,
                ln1=norms.get("ln1", NO_NORM),
                ln2=norms.get("ln2", NO_NORM),
                ln1_post=norms.get("ln1_post"),
                ln2_post=norms.get("ln2_post"),
                attn=_attention(bridge, layer, rotaries[layer_types[layer]]),
                mlp=_mlp(bridge, layer),
                parallel=bool(getattr(config, "use_parallel_residual", False)),  # NeoX
                # OLMo 2's output norms: `ln1`/`ln2` in TL 3.9's bridge (post-norm), `ln1_post`/`ln2_post`
                # (sandwich norms without input norms) in TL 4.3's; the same computation
                post_norm=arch in POST_NORM and "ln1" in norms,
            )
        )
    unembed = _hf(bridge.unembed)
    soft_cap = getattr(config, "final_logit_softcapping", None)
    first_attn = blocks[0].attn
    return ModelAccess(
        blocks=tuple(blocks),
        ln_final=bridge_final_norm(bridge),
        W_U=unembed.weight.T,
        b_U=_nonzero(unembed.bias),
        logits_soft_cap=soft_cap if soft_cap else None,
        d_model=config.hidden_size,
        d_head=first_attn.W_Q.shape[-1],
        n_heads=first_attn.n_heads,
        dtype=unembed.weight.dtype,
        device=unembed.weight.device,
    )
