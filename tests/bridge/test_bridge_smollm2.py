"""Real model through the bridge: SmolLM2-135M (Llama layout, GQA 9/3, RMSNorm, SwiGLU, 30 layers).

Its logits and CD-T head scores on a few real NusaX sentences equal the HookedTransformer's of the
same (cached, dequantised) weights; both are unprocessed, so no per-row constant to account for.
"""

from __future__ import annotations

import pytest
import torch

from circuit_transfer.data import load_split
from circuit_transfer.discovery import head_relevance
from circuit_transfer.models import load_model
from circuit_transfer.models.backend import HAS_HOOKED
from circuit_transfer.tasks import balanced_sample, get_task

pytestmark = [
    pytest.mark.slow,
    pytest.mark.bridge,
    pytest.mark.skipif(not HAS_HOOKED, reason="compares with HookedTransformer (TransformerLens 3.x)"),
]


@pytest.fixture(scope="module")
def both():
    return {
        backend: load_model("smollm2-135m", device="cpu", backend=backend) for backend in ("hooked", "bridge")
    }


def test_smollm2_bridge_logits_equal_hooked(both, data_dir) -> None:
    texts = [ex.text for ex in load_split("nusax-senti", "ind", "test", data_dir)[:3]]
    enc = both["bridge"].tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        hooked, bridge = (both[b](enc["input_ids"], attention_mask=enc["attention_mask"]) for b in both)
    real = enc["attention_mask"].bool()
    err = float((bridge - hooked)[real].abs().max() / hooked[real].abs().max())
    assert err <= 1e-5, err


def test_smollm2_bridge_cdt_head_scores_equal_hooked(both, data_dir) -> None:
    """Discovery's CD-T scores of all 270 heads (stabilised, as SmolLM2 needs) on three short
    sentences, one per label: the bridge's equal the hooked backend's to 1e-4 relative."""
    task = get_task("nusax-senti")
    rows = sorted(load_split("nusax-senti", "ind", "valid", data_dir), key=lambda ex: len(ex.text))[:60]
    examples = balanced_sample(rows, 1, seed=0, n_labels=3)
    scores = {
        b: head_relevance(model, task, examples, estimator="cdt", stabilize=True, max_len=48)
        for b, model in both.items()
    }
    hooked = scores["hooked"].scores
    assert hooked.shape == (30, 9) and hooked.abs().max() > 0
    err = float((scores["bridge"].scores - hooked).abs().max() / hooked.abs().max())
    assert err <= 1e-4, err
