"""Every family's converted model records whether its HF embeddings are tied, and the real parameter
count (`models.params`) counts TransformerLens's untied unembedding copy once."""

from __future__ import annotations

import pytest
from hf_families import FAMILIES

from circuit_transfer.models import load_model
from circuit_transfer.models.params import count_parameters


@pytest.mark.parametrize("name", list(FAMILIES))
def test_tie_flag_and_real_count(name, hf_family):
    path, hf_model = hf_family(name)
    model = load_model(path, device="cpu")
    tied = bool(hf_model.config.tie_word_embeddings)
    assert model.cfg.tie_word_embeddings == tied
    held = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == held - (model.unembed.W_U.numel() if tied else 0)
