"""HookedTransformerConfig fields read from a Hugging Face config, for the families that
TransformerLens 3.9 only knows by checkpoint name.

TransformerLens builds the configs of Gemma 1/2/3, OLMo and OLMo 2 from hard-coded tables keyed
by the official hub name (`google/gemma-2-2b`, `allenai/OLMo-2-1124-7B`, ...), so a local
directory of those families (a fine-tuned or a freshly built model) has no config there. The
functions below read the same fields from the HF config itself, mirroring TransformerLens's tables
field for field; the weights are still converted by TransformerLens's own `convert_*_weights`.

Llama and Phi are mapped here too: TransformerLens's Llama branch ignores `head_dim`, and its Phi
branch reads a field transformers 5 moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import PretrainedConfig

# The causal mask is an n_ctx x n_ctx buffer per layer (SmolLM2 declares 8192: 2 GiB of masks).
# Rotary models have no positional weights, so their context is capped here; raise it if needed.
MAX_ROTARY_CTX = 2048

Fields = dict[str, Any]
"""Keyword arguments of HookedTransformerConfig (without model_name, device, dtype)."""


def rope_parameters(hf_config: PretrainedConfig, layer_type: str | None = None) -> dict[str, Any]:
    """The rotary settings (transformers 5 `rope_parameters`, or the older flat fields).

    Args:
        layer_type: "full_attention" or "sliding_attention" for configs with per-layer-type
            rotary settings (Gemma 3); ignored by configs with one setting for every layer.
    """
    params = getattr(hf_config, "rope_parameters", None) or {}
    if layer_type is not None and layer_type in params:
        params = params[layer_type] or {}
    elif "full_attention" in params:
        params = params["full_attention"] or {}
    scaling = getattr(hf_config, "rope_scaling", None) or {}
    out = {**scaling, **params}
    theta = getattr(hf_config, "rope_theta", None)
    if "rope_theta" not in out and theta is not None:
        out["rope_theta"] = theta
    return out


def _rope_type(params: dict[str, Any]) -> str:
    return params.get("rope_type") or params.get("type") or "default"


def _refuse_rope(hf_config: PretrainedConfig, params: dict[str, Any], allowed: tuple[str, ...]) -> None:
    if _rope_type(params) not in allowed:
        raise NotImplementedError(
            f"{type(hf_config).__name__}: rope type {_rope_type(params)!r} is not supported "
            f"(supported: {', '.join(allowed)})"
        )


def _d_head(hf_config: PretrainedConfig) -> int:
    return getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads


def _kv_heads(hf_config: PretrainedConfig) -> int | None:
    """n_key_value_heads as TransformerLens wants it: None unless the model really groups queries."""
    n_kv = getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads
    return n_kv if n_kv != hf_config.num_attention_heads else None


def _require_full_kv(hf_config: PretrainedConfig) -> None:
    """OLMo 1/2: TransformerLens's converters read K/V with one head per query head."""
    if _kv_heads(hf_config) is not None:
        raise NotImplementedError(
            f"{type(hf_config).__name__} with num_key_value_heads={hf_config.num_key_value_heads} != "
            f"num_attention_heads={hf_config.num_attention_heads}: TransformerLens 3.9's converter "
            "for this family has no grouped-query attention"
        )


def _decoder_common(hf_config: PretrainedConfig) -> Fields:
    return dict(
        d_model=hf_config.hidden_size,
        d_head=_d_head(hf_config),
        n_heads=hf_config.num_attention_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=min(hf_config.max_position_embeddings, MAX_ROTARY_CTX),
        d_vocab=hf_config.vocab_size,
        positional_embedding_type="rotary",
        rotary_dim=_d_head(hf_config),
        rotary_adjacent_pairs=False,
        gated_mlp=True,
    )


def _attn_types(hf_config: PretrainedConfig) -> list[str]:
    """Per layer, "local" (sliding window) or "global", from HF's `layer_types`."""
    return ["local" if t == "sliding_attention" else "global" for t in hf_config.layer_types]


def llama_fields(hf_config: PretrainedConfig) -> Fields:
    """LlamaForCausalLM: RMSNorm, rotary, SwiGLU, GQA (SmolLM2 is one)."""
    if getattr(hf_config, "attention_bias", False) or getattr(hf_config, "mlp_bias", False):
        raise NotImplementedError("Llama models with attention or MLP biases are not supported")
    params = rope_parameters(hf_config)
    _refuse_rope(hf_config, params, ("default",))
    return dict(
        _decoder_common(hf_config),
        n_key_value_heads=_kv_heads(hf_config),  # TL uses GQA iff this is set
        act_fn=hf_config.hidden_act,
        eps=hf_config.rms_norm_eps,
        normalization_type="RMS",
        final_rms=True,
        rotary_base=float(params.get("rope_theta", 10000.0)),
    )


def gemma_fields(hf_config: PretrainedConfig) -> Fields:
    """Gemma 1, 2 and 3 (text): RMSNorm with (1 + w), embeddings scaled by sqrt(d_model), GeGLU.

    Gemma 2 adds sandwich norms, attention and logit soft-caps and interleaved sliding-window
    layers; Gemma 3 adds QK-norm and a second rotary base on the sliding-window layers.
    """
    arch = type(hf_config).__name__
    is_gemma1 = arch == "GemmaConfig"
    is_gemma3 = arch == "Gemma3TextConfig"
    full = rope_parameters(hf_config, "full_attention")
    _refuse_rope(hf_config, full, ("default", "linear") if is_gemma3 else ("default",))
    act = getattr(hf_config, "hidden_activation", None) or hf_config.hidden_act
    n_kv = getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads
    fields = dict(
        _decoder_common(hf_config),
        n_key_value_heads=n_kv,  # TL's Gemma converter always writes the grouped _W_K/_W_V
        act_fn=act,
        eps=hf_config.rms_norm_eps,
        normalization_type="RMS",
        final_rms=True,
        rotary_base=float(full.get("rope_theta", 10000.0)),
        use_attn_scale=True,
    )
    if is_gemma1:
        return fields
    fields.update(
        attn_scale=float(hf_config.query_pre_attn_scalar) ** 0.5,
        use_normalization_before_and_after=True,
    )
    if "sliding_attention" in hf_config.layer_types and hf_config.sliding_window:
        fields.update(
            use_local_attn=True, window_size=hf_config.sliding_window, attn_types=_attn_types(hf_config)
        )
    if getattr(hf_config, "attn_logit_softcapping", None):
        fields["attn_scores_soft_cap"] = float(hf_config.attn_logit_softcapping)
    if getattr(hf_config, "final_logit_softcapping", None):
        fields["output_logits_soft_cap"] = float(hf_config.final_logit_softcapping)
    if is_gemma3:
        fields["use_qk_norm"] = True
        local = rope_parameters(hf_config, "sliding_attention")
        _refuse_rope(hf_config, local, ("default",))
        fields["rotary_base_local"] = float(local.get("rope_theta", 10000.0))
        if _rope_type(full) == "linear":
            fields["rotary_scaling_factor"] = float(full["factor"])
    return fields


def olmo_fields(hf_config: PretrainedConfig) -> Fields:
    """OLMo 1: non-parametric LayerNorm (weight 1, bias 0 as parameters), SwiGLU, optional clip_qkv."""
    _require_full_kv(hf_config)
    params = rope_parameters(hf_config)
    _refuse_rope(hf_config, params, ("default",))
    return dict(
        _decoder_common(hf_config),
        act_fn=hf_config.hidden_act,
        eps=1e-5,  # OlmoLayerNorm's fixed eps
        normalization_type="LN",
        rotary_base=float(params.get("rope_theta", 10000.0)),
        clip_qkv=getattr(hf_config, "clip_qkv", None),
    )


def olmo2_fields(hf_config: PretrainedConfig) -> Fields:
    """OLMo 2: post-norm blocks (the norm on each sublayer's output), QK-norm over all heads."""
    _require_full_kv(hf_config)
    params = rope_parameters(hf_config)
    _refuse_rope(hf_config, params, ("default",))
    return dict(
        _decoder_common(hf_config),
        act_fn=hf_config.hidden_act,
        eps=hf_config.rms_norm_eps,
        normalization_type="RMS",
        rotary_base=float(params.get("rope_theta", 10000.0)),
    )


def phi_fields(hf_config: PretrainedConfig) -> Fields:
    """Phi (1, 1.5, 2): parallel attention and MLP off one LayerNorm, partial rotary, biases.

    TransformerLens's own Phi branch reads `partial_rotary_factor`, which transformers 5 moved
    into `rope_parameters`, so the fields are read here (the same values as TransformerLens's).
    """
    _require_full_kv(hf_config)
    if getattr(hf_config, "qk_layernorm", False):
        raise NotImplementedError("PhiConfig.qk_layernorm=True: TransformerLens 3.9's Phi converter drops it")
    params = rope_parameters(hf_config)
    _refuse_rope(hf_config, params, ("default",))
    d_head = _d_head(hf_config)
    return dict(
        _decoder_common(hf_config),
        act_fn=hf_config.hidden_act,
        eps=hf_config.layer_norm_eps,
        normalization_type="LN",
        rotary_base=float(params.get("rope_theta", 10000.0)),
        rotary_dim=round(params.get("partial_rotary_factor", 1.0) * d_head),
        gated_mlp=False,
        use_attn_scale=True,
        parallel_attn_mlp=True,
    )


NAME_BASED: dict[str, Callable[[PretrainedConfig], Fields]] = {
    "LlamaForCausalLM": llama_fields,
    "GemmaForCausalLM": gemma_fields,
    "Gemma2ForCausalLM": gemma_fields,
    "Gemma3ForCausalLM": gemma_fields,
    "OlmoForCausalLM": olmo_fields,
    "Olmo2ForCausalLM": olmo2_fields,
    "PhiForCausalLM": phi_fields,
}
"""HF architecture -> the function reading its HookedTransformerConfig fields from the HF config."""
