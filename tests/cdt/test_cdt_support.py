"""Configurations the engine does not implement are refused up front, naming the config field."""

from __future__ import annotations

import pytest
import torch
from cdt_models import BASE
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuit_transfer.cdt import check_supported, decompose_heads

UNSUPPORTED = {
    "positional_embedding_type": dict(positional_embedding_type="relative_positional_bias"),
    "act_fn": dict(gated_mlp=True, act_fn="solu_ln"),
}
"""What stays refused (T5's relative bias: encoder-decoder only; a gated SoLU-LN: no model has it).
Every other config field TransformerLens 3.9's decoder configs use is implemented (cdt_models.MODERN)."""


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
