"""The circuitsvis views on a TransformerBridge: the same patterns and token contributions as on the
HookedTransformer of the same weights (both unprocessed), and the views render. The token
contributions read the final norm through the model-access layer: on a Gemma bridge its weight
is applied as `1 + w`, which the HF parameter alone does not say."""

from __future__ import annotations

import pytest
import torch
from hf_families import TEXTS

from circuit_transfer.discovery.circuit import Circuit
from circuit_transfer.models import load_model
from circuit_transfer.models.backend import HAS_HOOKED
from circuit_transfer.tasks import get_task
from circuit_transfer.views.attention import circuit_attention, circuit_patterns
from circuit_transfer.views.contributions import contributions_view, token_contributions
from circuit_transfer.views.inputs import prepare_prompt

pytestmark = pytest.mark.bridge
TASK = get_task("nusax-senti", label_words=[" ini", " sangat", " dan"])  # words of TEXTS


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_views_render_on_the_bridge(family, hf_dir):
    bridge = load_model(hf_dir(family), device="cpu", backend="bridge")
    circuit = Circuit(heads=((0, 1), (1, 2)), n_layers=bridge.cfg.n_layers, n_heads=bridge.cfg.n_heads)
    for view in (
        circuit_attention(bridge, circuit, TEXTS[0], TASK),
        contributions_view(bridge, circuit, TEXTS[1], TASK, per_head=True),
    ):
        assert view.parts and all(str(part) for _, part in view.parts)


@pytest.mark.skipif(not HAS_HOOKED, reason="compares with HookedTransformer (TransformerLens 3.x)")
@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])  # GQA; final norm 1 + w; LayerNorm, Conv1D
def test_view_numbers_equal_the_hooked_backend(family, hf_dir):
    models = [load_model(hf_dir(family), device="cpu", backend=b) for b in ("hooked", "bridge")]
    circuit = Circuit(heads=((0, 1), (1, 2)), n_layers=models[0].cfg.n_layers, n_heads=models[0].cfg.n_heads)
    tokens = prepare_prompt(models[0], TASK, TEXTS[0]).tokens
    hooked, bridge = (circuit_patterns(m, circuit, tokens) for m in models)
    torch.testing.assert_close(bridge, hooked, rtol=0, atol=1e-5)
    hooked, bridge = (token_contributions(m, circuit, TEXTS[1], TASK) for m in models)
    assert hooked.per_head.abs().max() > 0
    torch.testing.assert_close(bridge.per_head, hooked.per_head, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(bridge.head_direct, hooked.head_direct, rtol=1e-4, atol=1e-6)
