"""First order against autograd (docs/method.md §3c) on every family, old and new (tests/cdt/first_order.py)."""

from __future__ import annotations

import pytest
import torch
from cdt_models import FAMILIES, build_model, random_tokens
from first_order import first_order_gap

# one source per layer below the last, so every later rule sits between source and logits
HEADS = [(0, 1), (1, 3)]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_beta_over_eps_is_the_jvp_of_the_logits(family: str) -> None:
    model = build_model(family, 3, dtype=torch.float64)
    tokens = random_tokens(model, batch=1, seed=3)
    for head in HEADS:
        gap, scale = first_order_gap(model, tokens, head)
        assert scale > 1e-3, (family, head)  # the source reaches the logits
        assert gap <= 1e-4 * scale, (family, head, gap, scale)
