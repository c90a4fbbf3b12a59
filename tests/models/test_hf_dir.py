"""Local Hugging Face checkpoint directories: tiny random models saved with save_pretrained.

The converted HookedTransformer must give the same logits as the transformers model.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from circuit_transfer.models import SpecKind, load_model, resolve_spec

TEXTS = ["Saya sangat suka makanan di restoran ini.", "Pelayanannya buruk sekali. Sentiment: negative"]


def _llama(vocab: int):
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def _gpt2(vocab: int):
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=128))


def _neox(vocab: int):
    cfg = GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        rotary_pct=0.5,
    )
    return GPTNeoXForCausalLM(cfg)


def _qwen2(vocab: int):
    cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return Qwen2ForCausalLM(cfg)


def _randomise(model: torch.nn.Module) -> None:
    """Perturb every weight, norms and biases included, so no conversion slip hides behind 1s and 0s."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("make", [_llama, _gpt2, _neox, _qwen2], ids=["llama", "gpt2", "neox", "qwen2"])
def test_logits_match_transformers(make, tiny_model, tmp_path):
    tok = tiny_model.tokenizer
    hf_model = make(len(tok)).eval()
    _randomise(hf_model)
    # "llama" in the path: TransformerLens would pick the architecture from the path string.
    path = tmp_path / f"llama-named-{make.__name__.strip('_')}"
    hf_model.save_pretrained(path)
    tok.save_pretrained(path)
    assert resolve_spec(str(path)) == (SpecKind.HF_DIR, str(path))

    model = load_model(path, device="cpu")
    assert model.cfg.normalization_type in ("LN", "RMS")  # unfolded
    assert model.tokenizer.padding_side == "right" and model.tokenizer.pad_token is not None
    enc = model.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        ours = model(enc["input_ids"], attention_mask=enc["attention_mask"])
        theirs = hf_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    real = enc["attention_mask"].bool()
    assert (ours - theirs)[real].abs().max().item() < 1e-4


def test_hf_dir_without_tokenizer_says_so(tiny_model, tmp_path):
    _gpt2(len(tiny_model.tokenizer)).save_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_model(tmp_path / "m", device="cpu")
