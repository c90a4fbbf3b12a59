"""Which `HookedTransformerConfig` settings the CD-T engine handles, checked before any compute.

The engine re-implements the forward pass of every block for the relevant part beta, so any
config field that changes that forward pass must be either implemented or refused. Refusal is a
`NotImplementedError` naming the field: never a silent wrong answer. Every decoder family that
TransformerLens 3.9's own configs describe is implemented (docs/method.md §3, §3b).

| field | status |
|---|---|
| normalization_type LN / LNPre / RMS / RMSPre / None, final_rms | supported (the norm rule) |
| fold_ln / center_writing_weights / center_unembed (weights only) | supported |
| positional_embedding_type standard (learned, upstream: irrelevant) | supported |
| positional_embedding_type shortformer | supported (positions join the q/k input as irrelevant, like a bias) |
| positional_embedding_type rotary, rotary_dim (partial), rotary_adjacent_pairs, rotary_base | supported (each layer's own tables) |
| rotary_base_local, use_NTK_by_parts_rope, use_yarn_rope, rotary_scaling_factor, use_dynamic_ntk_rope | supported (they only change a layer's sin/cos tables) |
| positional_embedding_type alibi | supported (the bias goes to the irrelevant scores) |
| positional_embedding_type relative_positional_bias (T5, encoder-decoder) | NotImplementedError |
| n_key_value_heads (GQA), ungroup_grouped_query_attention | supported |
| use_attn_scale, attn_scale, scale_attn_by_inverse_layer_idx | supported |
| attention_dir causal / bidirectional | supported |
| use_local_attn, attn_types, window_size (GPT-Neo, Mistral, Gemma 2/3, GPT-OSS) | supported (the layer's own mask, in the relevant scores too) |
| use_qk_norm (Qwen3, Gemma 3); OLMo 2/3 / OLMoE all-head QK-norm | supported (divide by the clean scale) |
| clip_qkv (OLMo, OLMoE) | supported (a clamp: the linearize rule) |
| use_logn_attn (Qwen-1) | supported (a constant per position on q) |
| attn_scores_soft_cap (Gemma 2) | supported (the same cap on the relevant scores) |
| output_logits_soft_cap (Gemma 2) | supported (the linearize rule on the logits) |
| use_attention_sinks (GPT-OSS) | supported (the sink logit goes to the irrelevant scores) |
| use_normalization_before_and_after (Gemma 2/3 sandwich norms) | supported (the norm rule on each sublayer's output) |
| post-norm blocks (OLMo 2/3: original_architecture in POST_NORM_ARCHITECTURES) | supported |
| parallel_attn_mlp, attn_only, gated_mlp, d_vocab_out, post_embedding_ln (upstream) | supported |
| num_experts, experts_per_token, norm_topk_prob (Mixtral, OLMoE, GPT-OSS) | supported (routing frozen from the clean run) |
| act_fn: any of TransformerLens's (gelu*, silu, relu, relu2, solu, solu_ln, xielu) | supported (generic "linearize" rule) |
| gated_mlp with a `*_ln` act_fn | NotImplementedError (act_fn; no TransformerLens model has it) |
| use_attn_result, use_hook_mlp_in, use_hook_tokens, use_attn_in, use_split_qkv_input (hooks only) | supported |
| load_in_4bit, n_devices > 1 | NotImplementedError (quantised or split weights) |
"""

from __future__ import annotations

from circuit_transfer.models.backend import HookedTransformer, Model, TransformerBridge

_SUPPORTED_POSITIONS = {"standard", "rotary", "alibi", "shortformer"}


def _refuse(field: str, value: object) -> None:
    raise NotImplementedError(
        f"CD-T engine does not implement HookedTransformerConfig.{field}={value!r}; "
        "refusing rather than returning a wrong decomposition."
    )


def check_supported(model: Model) -> None:
    """Raise NotImplementedError naming the first config field the engine cannot handle.

    A TransformerBridge is checked by its HF architecture (`access_bridge.check_bridge_supported`).
    """
    if isinstance(model, TransformerBridge):
        from circuit_transfer.models.access_bridge import check_bridge_supported

        check_bridge_supported(model)
        return
    if not isinstance(model, HookedTransformer):
        raise NotImplementedError(
            f"CD-T engine needs a HookedTransformer or a TransformerBridge, got {type(model).__name__}"
        )
    cfg = model.cfg
    if getattr(cfg, "load_in_4bit", False):
        _refuse("load_in_4bit", True)
    if cfg.positional_embedding_type not in _SUPPORTED_POSITIONS:
        _refuse("positional_embedding_type", cfg.positional_embedding_type)
    if cfg.attention_dir not in ("causal", "bidirectional"):
        _refuse("attention_dir", cfg.attention_dir)
    if cfg.gated_mlp and cfg.is_layer_norm_activation():
        _refuse("act_fn", cfg.act_fn)
    if cfg.n_devices > 1:
        _refuse("n_devices", cfg.n_devices)
