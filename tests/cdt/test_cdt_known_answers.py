"""Known answers: zero deviation gives zero beta, a hand-computed direct path, batching invariance."""

from __future__ import annotations

import einops
import pytest
import torch
from cdt_models import build_model, random_baseline, random_tokens, scale_of

from circuit_transfer.cdt import RECORDABLE, decompose_heads


@pytest.mark.parametrize("attention", ["decomposed", "frozen"])
@pytest.mark.parametrize("family", ["gpt2", "llama_gqa", "neox_parallel"])
def test_baseline_equal_to_own_activation_gives_zero_beta(family: str, attention: str) -> None:
    model = build_model(family, 1)
    tokens = random_tokens(model, batch=1, seed=1)
    _, cache = model.run_with_cache(tokens)
    mu = torch.stack([cache[f"blocks.{i}.attn.hook_z"][0] for i in range(model.cfg.n_layers)])
    mu = einops.rearrange(mu, "layer pos head d_head -> layer head pos d_head")
    record = [
        f"blocks.{i}.{s}"
        for i in range(model.cfg.n_layers)
        for s in RECORDABLE
        if f"blocks.{i}.{s}" in model.hook_dict
    ]
    record = [r for r in record if not (attention == "frozen" and r.endswith("hook_pattern"))]
    out = decompose_heads(model, tokens, [(0, 0), (1, 2), (2, 3)], mu, attention, record=record)
    assert out.beta_logits.abs().max() == 0
    for name in record:
        if name.endswith("hook_pattern"):
            continue  # the relevant pattern of zero scores is uniform, by the rule; beta_z is still 0
        assert out.beta[name].abs().max() == 0, name


@pytest.mark.parametrize("bias", ["irrelevant", "magnitude"])
def test_one_iattention_only_direct_path(bias: str) -> None:
    """No norm, 1 attention-only layer, frozen rule: beta_logits = ((z - mu) W_O[h] [+ b_O share]) W_U [+ b_U share]."""
    model = build_model("attn_only", 4, n_layers=1, normalization_type=None)
    tokens = random_tokens(model, seed=4)
    mu = random_baseline(model, 4)
    head = 2
    logits, cache = model.run_with_cache(tokens)
    out = decompose_heads(model, tokens, [(0, head)], mu, "frozen", bias)
    attn = model.blocks[0].attn
    direct = (cache["blocks.0.attn.hook_z"][:, :, head] - mu[0, head]) @ attn.W_O[head]
    if bias == "magnitude":
        other = cache["blocks.0.hook_attn_out"] - attn.b_O - direct
        direct = direct + attn.b_O * direct.abs() / (direct.abs() + other.abs())
    expected = direct @ model.W_U
    if bias == "magnitude":
        other = logits - model.b_U - expected
        expected = expected + model.b_U * expected.abs() / (expected.abs() + other.abs())
    assert (out.beta_logits[0] - expected).abs().max() <= 1e-5 * scale_of(logits)


@pytest.mark.parametrize("family", ["gpt2", "llama_gqa"])
def test_all_heads_at_once_equal_one_at_a_time(family: str) -> None:
    model = build_model(family, 2)
    tokens = random_tokens(model, seed=2)
    mu = random_baseline(model, 2)
    heads = [(0, h) for h in range(model.cfg.n_heads)]
    together = decompose_heads(model, tokens, heads, mu, record=["blocks.1.hook_resid_post"])
    chunked = decompose_heads(model, tokens, heads, mu, record=["blocks.1.hook_resid_post"], chunk_size=2)
    for i, head in enumerate(heads):
        alone = decompose_heads(model, tokens, [head], mu, record=["blocks.1.hook_resid_post"])
        torch.testing.assert_close(together.beta_logits[i], alone.beta_logits[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(chunked.beta_logits[i], alone.beta_logits[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(
            together.beta["blocks.1.hook_resid_post"][i],
            alone.beta["blocks.1.hook_resid_post"][0],
            rtol=0,
            atol=1e-5,
        )


def test_final_position_and_columns_select_from_full_logits() -> None:
    model = build_model("llama_gqa", 3)
    tokens = random_tokens(model, batch=4, seed=3)
    mu = random_baseline(model, 3)
    heads = [(2, 1), (0, 0), (1, 3)]
    full = decompose_heads(model, tokens, heads, mu)
    positions = torch.tensor([8, 3, 5, 0])
    columns = torch.tensor([7, 1, 30])
    picked = decompose_heads(
        model, tokens, heads, mu, logits_positions=positions, unembed_columns=columns, chunk_size=5
    )
    batch = torch.arange(4)
    expected = full.beta_logits[:, batch, positions][..., columns]
    assert picked.beta_logits.shape == (3, 4, 3)
    torch.testing.assert_close(picked.beta_logits, expected, rtol=0, atol=1e-5)
    logits = model(tokens)[batch, positions][:, columns]
    torch.testing.assert_close(
        picked.beta_logits + picked.gamma_logits, logits.expand(3, -1, -1), rtol=0, atol=1e-5
    )
