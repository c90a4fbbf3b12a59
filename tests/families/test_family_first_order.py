"""First order against autograd on every family (docs/method.md §3c), with tests/cdt's engine-independent
checker: with the frozen attention rule and every bias given to gamma, beta_logits / eps for a
source whose beta is eps * v equals the logits' JVP along v at that head's output, computed by
autograd through the model itself with patterns, norm scales and routing frozen."""

from __future__ import annotations

import pytest
from first_order import first_order_gap  # tests/cdt/first_order.py
from test_family_cdt import HEADS, families


@pytest.mark.parametrize("name", families())
def test_first_order_equals_autograd(name, cdt_family):
    model, tokens = cdt_family(name)
    for head in HEADS:
        gap, scale = first_order_gap(model, tokens, head)
        assert scale > 1e-3, head  # the source reaches the logits
        assert gap <= 1e-4 * scale, (head, gap, scale)
