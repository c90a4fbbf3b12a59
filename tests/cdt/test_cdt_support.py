"""Configurations the engine does not implement are refused up front, naming the config field."""

from __future__ import annotations

import pytest
import torch
from cdt_models import BASE
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuit_transfer.cdt import check_supported, decompose_heads

UNSUPPORTED = {
    "attn_scores_soft_cap": dict(attn_scores_soft_cap=30.0),
    "output_logits_soft_cap": dict(output_logits_soft_cap=30.0),
    "num_experts": dict(num_experts=4, experts_per_token=2, gated_mlp=True),
    "use_local_attn": dict(use_local_attn=True, attn_types=["global", "local", "global"], window_size=4),
    "use_qk_norm": dict(use_qk_norm=True, normalization_type="RMS"),
    "clip_qkv": dict(clip_qkv=8.0),
    "use_logn_attn": dict(use_logn_attn=True, positional_embedding_type="rotary", rotary_dim=8),
    "use_normalization_before_and_after": dict(
        use_normalization_before_and_after=True, normalization_type="RMS"
    ),
    "positional_embedding_type": dict(positional_embedding_type="shortformer"),
    "use_attn_in": dict(use_attn_in=True),
    "use_split_qkv_input": dict(use_split_qkv_input=True),
    "use_attention_sinks": dict(use_attention_sinks=True),
    "original_architecture": dict(original_architecture="Olmo2ForCausalLM"),
}


@pytest.mark.parametrize("field", list(UNSUPPORTED))
def test_unsupported_config_raises_naming_the_field(field: str) -> None:
    cfg = HookedTransformerConfig(**{**BASE, **UNSUPPORTED[field]}, device="cpu")
    model = HookedTransformer(cfg)
    with pytest.raises(NotImplementedError, match=field):
        check_supported(model)
    with pytest.raises(NotImplementedError, match=field):
        decompose_heads(model, torch.zeros(1, 4, dtype=torch.long), [(0, 0)])


def test_bad_arguments_raise_value_errors() -> None:
    model = HookedTransformer(HookedTransformerConfig(**BASE, device="cpu"))
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="out of range"):
        decompose_heads(model, tokens, [(3, 0)])
    with pytest.raises(ValueError, match="cannot record"):
        decompose_heads(model, tokens, [(0, 0)], record=["blocks.0.ln1.hook_scale"])
    with pytest.raises(ValueError, match="frozen"):
        decompose_heads(model, tokens, [(0, 0)], attention="frozen", record=["blocks.1.attn.hook_pattern"])
    with pytest.raises(
        (ValueError, TypeError)
    ):  # TypeError: the runtime type checker catches it first in tests
        decompose_heads(model, tokens, [(0, 0)], attention="linear")
