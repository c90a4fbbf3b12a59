"""Which `HookedTransformerConfig` settings the CD-T engine handles, checked before any compute.

The engine re-implements the forward pass of every block for the relevant part beta, so any
config field that changes that forward pass must be either implemented or refused. Refusal is a
`NotImplementedError` naming the field: never a silent wrong answer.

| field | status |
|---|---|
| normalization_type LN / LNPre / RMS / RMSPre / None, final_rms | supported (dispatch on the module) |
| fold_ln / center_writing_weights / center_unembed (weights only) | supported |
| positional_embedding_type standard (learned, upstream: irrelevant) | supported |
| positional_embedding_type rotary, rotary_dim (partial), rotary_adjacent_pairs, rotary_base | supported (the model's own `apply_rotary`) |
| use_NTK_by_parts_rope, use_yarn_rope, rotary_scaling_factor, use_dynamic_ntk_rope | supported (they only change the sin/cos tables) |
| positional_embedding_type alibi | supported (bias goes to the irrelevant scores) |
| positional_embedding_type shortformer / relative_positional_bias | NotImplementedError |
| n_key_value_heads (GQA), ungroup_grouped_query_attention | supported |
| use_attn_scale, attn_scale, scale_attn_by_inverse_layer_idx | supported (via `attn.attn_scale`) |
| attention_dir causal / bidirectional | supported |
| parallel_attn_mlp, attn_only, gated_mlp, d_vocab_out, post_embedding_ln (upstream) | supported |
| act_fn: any of TransformerLens's (gelu*, silu, relu, relu2, solu, solu_ln, xielu) | supported (generic "linearize" rule) |
| gated_mlp with a `*_ln` act_fn | NotImplementedError (act_fn) |
| use_attn_result, use_hook_mlp_in, use_hook_tokens (hooks only) | supported |
| use_attn_in, use_split_qkv_input | NotImplementedError |
| attn_scores_soft_cap, output_logits_soft_cap (when > 0) | NotImplementedError |
| num_experts (MoE) | NotImplementedError |
| use_local_attn (attn_types, window_size) | NotImplementedError |
| use_qk_norm, clip_qkv, use_logn_attn, use_attention_sinks | NotImplementedError |
| use_normalization_before_and_after, post-norm / OLMo original_architecture | NotImplementedError |
| load_in_4bit, n_devices > 1 | NotImplementedError |
"""

from __future__ import annotations

from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

from circuit_transfer.models.backend import HookedTransformer

_QK_NORM_ARCHITECTURES = {"OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM"}
_SUPPORTED_POSITIONS = {"standard", "rotary", "alibi"}


def _refuse(field: str, value: object) -> None:
    raise NotImplementedError(
        f"CD-T engine does not implement HookedTransformerConfig.{field}={value!r}; "
        "refusing rather than returning a wrong decomposition."
    )


def check_supported(model: HookedTransformer) -> None:
    """Raise NotImplementedError naming the first config field the engine cannot handle."""
    if not isinstance(model, HookedTransformer):
        raise NotImplementedError(f"CD-T engine needs a HookedTransformer, got {type(model).__name__}")
    cfg = model.cfg
    flags = {
        "use_attn_in": cfg.use_attn_in,
        "use_split_qkv_input": cfg.use_split_qkv_input,
        "use_local_attn": cfg.use_local_attn,
        "use_qk_norm": cfg.use_qk_norm,
        "use_logn_attn": cfg.use_logn_attn,
        "use_attention_sinks": cfg.use_attention_sinks,
        "use_normalization_before_and_after": cfg.use_normalization_before_and_after,
        "load_in_4bit": getattr(cfg, "load_in_4bit", False),
    }
    for field, value in flags.items():
        if value:
            _refuse(field, value)
    if cfg.clip_qkv is not None:
        _refuse("clip_qkv", cfg.clip_qkv)
    if cfg.num_experts is not None:
        _refuse("num_experts", cfg.num_experts)
    if cfg.attn_scores_soft_cap > 0:
        _refuse("attn_scores_soft_cap", cfg.attn_scores_soft_cap)
    if cfg.output_logits_soft_cap > 0:
        _refuse("output_logits_soft_cap", cfg.output_logits_soft_cap)
    if cfg.positional_embedding_type not in _SUPPORTED_POSITIONS:
        _refuse("positional_embedding_type", cfg.positional_embedding_type)
    if cfg.attention_dir not in ("causal", "bidirectional"):
        _refuse("attention_dir", cfg.attention_dir)
    if cfg.original_architecture in POST_NORM_ARCHITECTURES | _QK_NORM_ARCHITECTURES:
        _refuse("original_architecture", cfg.original_architecture)
    if cfg.gated_mlp and cfg.is_layer_norm_activation():
        _refuse("act_fn", cfg.act_fn)
    if cfg.n_devices > 1:
        _refuse("n_devices", cfg.n_devices)
