"""build_tiny_model: shape from the spec, seeded initialisation, a working forward pass."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from circuit_transfer.models import TinyModelSpec, build_tiny_model


def test_config_follows_the_spec(tiny_model):
    cfg = tiny_model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp) == (2, 64, 4, 16, 128)
    assert cfg.model_name == "tiny"
    assert cfg.normalization_type == "LN"  # real LayerNorm weights, not folded
    assert cfg.d_vocab == len(tiny_model.tokenizer)
    assert isinstance(tiny_model.tokenizer, PreTrainedTokenizerFast)


def test_default_spec_is_frozen_and_small():
    spec = TinyModelSpec()
    with pytest.raises(AttributeError):
        spec.n_layers = 3  # type: ignore[misc]
    assert spec.n_ctx >= 256


def test_seed_fixes_the_weights_and_leaves_global_rng_alone(indonesian_texts):
    spec = TinyModelSpec(n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=64, vocab_size=300)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_tiny_model(indonesian_texts[:100], spec, seed=1, device="cpu")
    after = torch.rand(1)
    b = build_tiny_model(indonesian_texts[:100], spec, seed=1, device="cpu")
    c = build_tiny_model(indonesian_texts[:100], spec, seed=2, device="cpu")
    assert before == after
    assert torch.equal(a.W_E, b.W_E) and torch.equal(a.W_in, b.W_in)
    assert not torch.equal(a.W_E, c.W_E)


def test_forward_on_padded_batch(tiny_model):
    enc = tiny_model.tokenizer(["saya suka makanan ini", "buruk"], return_tensors="pt", padding=True)
    logits = tiny_model(enc["input_ids"], attention_mask=enc["attention_mask"])
    assert logits.shape == (*enc["input_ids"].shape, tiny_model.cfg.d_vocab)
    assert torch.isfinite(logits).all()


def test_needs_texts():
    with pytest.raises(ValueError, match="texts"):
        build_tiny_model([])
