"""Head masks on every family's converted model: MaskedAdamW training (weight decay, clipping, a
cosine schedule) leaves every masked entry bit-identical and moves the circuit's own entries.

The per-parameter policies (QK-norm, sandwich and post-norms, sinks, MoE router and experts) are
proved on HookedTransformerConfig models with a resume in tests/masking; this checks that they hold
on the parameter layouts TransformerLens's converters really produce.
"""

from __future__ import annotations

import pytest
import torch
from hf_families import FAMILIES, TEXTS

from circuit_transfer.masking import MaskPolicy, masked_training
from circuit_transfer.models import load_model
from circuit_transfer.optim import MaskedAdamW, OptimConfig

HEADS = [(0, 1), (1, 2)]
CONFIG = OptimConfig(lr=1e-2, weight_decay=0.1, max_grad_norm=1.0, schedule="cosine")


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_masked_entries_bit_identical_after_training(name, hf_family, family_tokenizer):
    path, _ = hf_family(name)
    model = load_model(path, device="cpu")
    tokens = family_tokenizer(TEXTS, return_tensors="pt", padding=True)["input_ids"][:, :8]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with masked_training(model, HEADS, MaskPolicy(b_O="any-head")) as tset:
        opt = MaskedAdamW(model, CONFIG, total_steps=3, masks=tset.masks)
        for _ in range(3):
            model(tokens, return_type="loss").backward()
            opt.step()
    after = {n: p.detach() for n, p in model.named_parameters()}
    for n, mask in tset.masks.items():
        frozen = mask == 0
        assert torch.equal(_bits(after[n][frozen]), _bits(before[n][frozen])), n
    changed = {n for n in after if not torch.equal(_bits(after[n]), _bits(before[n]))}
    assert {"blocks.0.attn.W_Q", "blocks.1.attn.W_O"} <= changed
    norms = {n for n in after if ".ln" in n or n.startswith("ln_final") or "_norm." in n}
    assert norms <= changed  # every norm (pre, post, sandwich, QK, BLOOM's embed.ln) trains by default
    frozen_kinds = (".mlp.", "embed.", "unembed.")  # MLPs, MoE routers and experts, embeddings
    assert not any(kind in n for n in changed - norms for kind in frozen_kinds), sorted(changed)
    for n in after:  # per-head tensors: only the circuit's heads moved
        if n.endswith(("attn.W_Q", "attn.W_O", "attn.sinks")):
            layer = int(n.split(".")[1])
            ours = [h for h in range(model.cfg.n_heads) if (layer, h) in HEADS]
            others = [h for h in range(model.cfg.n_heads) if (layer, h) not in HEADS]
            assert not ours or after[n][ours].ne(before[n][ours]).any(), n
            assert torch.equal(after[n][others], before[n][others]), n
