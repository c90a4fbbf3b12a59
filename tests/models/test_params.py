"""The real parameter count: tied embeddings counted once, against hand counts and Hugging Face's own."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from circuit_transfer.masking import full_masks, head_grad_masks
from circuit_transfer.models.hf_convert import hooked_from_hf
from circuit_transfer.models.params import changed_entries, count_parameters, tied_copies


def _tiny(tied: bool) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=8, d_head=4, n_heads=2, d_mlp=16, d_vocab=10, n_ctx=6,
        act_fn="gelu", normalization_type="LN", tie_word_embeddings=tied,
    )  # fmt: skip
    return HookedTransformer(cfg)


# Counted by hand for the config above (d_model 8, 2 heads of 4, d_mlp 16, vocab 10, context 6):
#   W_E 10*8 = 80, W_pos 6*8 = 48
#   per layer: ln1 8+8, W_Q/W_K/W_V 3*2*8*4 = 192, b_Q/b_K/b_V 3*2*4 = 24, W_O 2*4*8 = 64, b_O 8,
#              ln2 8+8, W_in 8*16 = 128, b_in 16, W_out 16*8 = 128, b_out 8      -> 600, two layers 1200
#   ln_final 8+8 = 16, W_U 8*10 = 80, b_U 10
UNTIED = 80 + 48 + 1200 + 16 + 80 + 10  # 1434
TIED = UNTIED - 80  # W_U is W_E transposed: one parameter per pair


def test_hand_counted_tiny_models():
    assert count_parameters(_tiny(tied=False)) == UNTIED == sum(p.numel() for p in _tiny(False).parameters())
    tied = _tiny(tied=True)
    assert sum(p.numel() for p in tied.parameters()) == UNTIED  # TransformerLens holds the copy
    assert count_parameters(tied) == TIED


def test_a_pair_is_selected_when_either_copy_is():
    model = _tiny(tied=True)
    none = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    assert count_parameters(model, none) == 0
    assert count_parameters(model, full_masks(model)) == TIED
    only_unembed = {**none, "unembed.W_U": torch.ones_like(model.unembed.W_U)}
    assert count_parameters(model, only_unembed) == 80
    both = {**only_unembed, "embed.W_E": torch.ones_like(model.embed.W_E)}
    assert count_parameters(model, both) == 80
    # W_E[3, 5] and its twin W_U[5, 3] are one parameter; W_U[5, 4] is another
    some = dict(none)
    some["embed.W_E"] = torch.zeros_like(model.embed.W_E).index_put_(
        (torch.tensor([3]), torch.tensor([5])), torch.tensor(1.0)
    )
    some["unembed.W_U"] = torch.zeros_like(model.unembed.W_U)
    some["unembed.W_U"][5, 3] = 1
    some["unembed.W_U"][5, 4] = 1
    assert count_parameters(model, some) == 2
    # head masks never touch the embeddings: the same count tied or not
    heads = [(0, 1), (1, 0)]
    assert (
        count_parameters(model, head_grad_masks(model, heads))
        == count_parameters(_tiny(False), head_grad_masks(_tiny(False), heads))
        == 2 * (3 * 8 * 4 + 3 * 4 + 4 * 8) + 5 * 16
    )  # Q/K/V/O slices and biases of 2 heads + 5 norms


def test_changed_entries_count_a_pair_once():
    model = _tiny(tied=True)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        model.embed.W_E[2, 1] += 1.0
        model.unembed.W_U[1, 2] += 1.0  # the same pair
        model.unembed.W_U[0, 7] += 1.0  # another pair
        model.blocks[0].attn.W_Q[1, 0, 0] += 1.0
    assert count_parameters(model, changed_entries(model, base)) == 3


def test_wrong_tie_flag_is_refused():
    model = _tiny(tied=False)
    model.cfg.tie_word_embeddings = True
    del model.unembed.W_U
    with pytest.raises(ValueError, match="tie_word_embeddings is True but unembed.W_U"):
        tied_copies(model)


def test_matches_hugging_face_count_of_tied_gpt2(word_tokenizer):
    """HF counts a tied lm_head once; TransformerLens's only extra tensor for GPT-2 is b_U."""
    hf_cfg = GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=32, vocab_size=len(word_tokenizer))
    hf = GPT2LMHeadModel(hf_cfg).eval()
    assert hf_cfg.tie_word_embeddings
    model = hooked_from_hf(hf, word_tokenizer, model_name="gpt2-tiny", device="cpu")
    assert model.cfg.tie_word_embeddings
    assert count_parameters(model) == hf.num_parameters() + hf_cfg.vocab_size
    assert sum(p.numel() for p in model.parameters()) == hf.num_parameters() + hf_cfg.vocab_size * (1 + 16)


def test_matches_hugging_face_count_of_tied_llama(word_tokenizer):
    """Llama has no biases; TransformerLens keeps zero ones (b_Q, b_K, b_V, b_O, b_in, b_out, b_U)."""
    hf_cfg = LlamaConfig(
        hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(word_tokenizer), max_position_embeddings=32,
        tie_word_embeddings=True,
    )  # fmt: skip
    hf = LlamaForCausalLM(hf_cfg).eval()
    model = hooked_from_hf(hf, word_tokenizer, model_name="llama-tiny", device="cpu")
    d_head = 16 // 4
    placeholders = 2 * (4 * d_head + 2 * 2 * d_head + 16 + 24 + 16) + hf_cfg.vocab_size
    assert count_parameters(model) == hf.num_parameters() + placeholders


@pytest.mark.slow
def test_smollm2_real_count():
    from circuit_transfer.models import load_model

    model = load_model("smollm2-135m", device="cpu")
    assert model.cfg.tie_word_embeddings
    hf_count = 134_515_008  # SmolLM2-135M on the hub (tied embeddings)
    placeholders = 30 * (9 * 64 + 2 * 3 * 64 + 576 + 1536 + 576) + 49152  # TransformerLens's zero biases
    assert count_parameters(model) == hf_count + placeholders == 134_673_600
    assert sum(p.numel() for p in model.parameters()) == 134_673_600 + 49152 * 576  # 162.99M
