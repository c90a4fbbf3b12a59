"""Every decoder family TransformerLens 3.9 converts: a random local HF directory loads through
`load_model` (TransformerLens's own weight conversion, unprocessed) and gives the HF logits."""

from __future__ import annotations

import pytest
import torch
from hf_families import FAMILIES, TEXTS, WINDOW

from circuit_transfer.models import SpecKind, load_model, resolve_spec


@pytest.mark.parametrize("name", list(FAMILIES))
def test_logits_equal_transformers(name, hf_family, family_tokenizer):
    family = FAMILIES[name]
    path, hf_model = hf_family(name)
    assert resolve_spec(str(path)) == (SpecKind.HF_DIR, str(path))
    assert type(hf_model).__name__ == family.architecture
    model = load_model(path, device="cpu")

    assert model.cfg.original_architecture == family.architecture
    for field, value in family.expect.items():  # the family's feature is really switched on
        assert getattr(model.cfg, field) == value, field
    assert model.cfg.normalization_type in ("LN", "RMS")  # unprocessed: norm weights are parameters
    for n, p in model.named_parameters():  # nothing left as uninitialised memory
        assert torch.isfinite(p).all(), n
    if model.cfg.positional_embedding_type == "alibi":  # BLOOM's W_pos: no HF weight, unused
        assert not model.pos_embed.W_pos.any()

    tokens = family_tokenizer(TEXTS[:2], return_tensors="pt", padding=True)["input_ids"]
    length = min(len(family_tokenizer(t)["input_ids"]) for t in TEXTS[:2])
    tokens = tokens[:, :length]  # padding-free
    assert length > 2 * WINDOW  # sliding windows are shorter than the sequence
    with torch.no_grad():
        ours = model(tokens)
        theirs = hf_model(input_ids=tokens).logits
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() < 1e-4
    assert theirs.std().item() > 0.1  # a model whose logits carry signal, not a constant
