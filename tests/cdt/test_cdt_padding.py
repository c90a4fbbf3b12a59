"""Padding anywhere in a batch: every real position's relevant part equals that example run alone.

Right padding alone cannot catch a padding mask dropped from the *relevant* scores (real queries
never see a later pad key under the causal mask), so the layouts here put pad keys before real
queries: left padding, holes in the middle of a prompt, a padded row in the middle of the batch,
and queries whose every key but one is padding. TransformerLens numbers positions by the
attention mask (cumsum - 1), so a prompt with holes is the same prompt with the holes removed.
"""

from __future__ import annotations

import pytest
import torch
from cdt_models import build_model, random_baseline, random_tokens, scale_of

from circuit_transfer.cdt import decompose_heads

HEADS = [(0, 1), (1, 3), (2, 0)]
N_POS = 9
# 1 = real token. Row 1 of each layout is the padded row in the middle of the batch.
LAYOUTS = {
    "left": [[1] * 9, [0] * 5 + [1] * 4, [0] * 8 + [1]],  # last row: one real key only
    "right": [[1] * 9, [1] * 5 + [0] * 4, [1] * 7 + [0] * 2],
    "middle": [[1] * 9, [1, 1, 0, 0, 1, 1, 1, 0, 1], [0, 0, 0, 0, 1, 0, 0, 0, 0]],
}
# ALiBi's bias is by absolute distance, not by the mask: holes change it, so ALiBi gets left/right only
CASES = [
    (family, layout, "decomposed")
    for family in ("gpt2", "llama_gqa", "neox_parallel", "bloom_alibi")
    for layout in LAYOUTS
    if not (family == "bloom_alibi" and layout == "middle")
] + [("gpt2", "left", "frozen"), ("llama_gqa", "middle", "frozen")]
CHUNKS = {("llama_gqa", "left", "decomposed"): 2}  # rows of 2 examples: the masks are sliced per chunk
RECORD = "blocks.2.hook_resid_post"


def _batch(model, layout: str, pad_token: int = 0, seed: int = 7):
    mask = torch.tensor(LAYOUTS[layout])
    tokens = random_tokens(model, batch=len(mask), n_pos=N_POS, seed=seed)
    return tokens.masked_fill(mask == 0, pad_token), mask


@pytest.mark.parametrize(("family", "layout", "attention"), CASES)
def test_real_positions_equal_the_example_alone(family: str, layout: str, attention: str) -> None:
    model = build_model(family, 3)
    tokens, mask = _batch(model, layout)
    mu = random_baseline(model, 3)
    chunk = CHUNKS.get((family, layout, attention))
    out = decompose_heads(
        model, tokens, HEADS, mu, attention, record=[RECORD], attention_mask=mask, chunk_size=chunk
    )
    logits = model(tokens, attention_mask=mask)
    for i in range(len(tokens)):
        real = mask[i].bool()
        alone_tokens = tokens[i : i + 1, real]
        alone = decompose_heads(model, alone_tokens, HEADS, mu, attention, record=[RECORD])
        # the clean model itself treats the padded prompt as the prompt alone
        assert (logits[i, real] - model(alone_tokens)[0]).abs().max() <= 1e-4 * scale_of(logits)
        expected, got = alone.beta_logits[:, 0], out.beta_logits[:, i, real]
        err = float((got - expected).abs().max())
        assert err <= 1e-4 * scale_of(expected), (layout, i, err)
        got_resid, want_resid = out.beta[RECORD][:, i, real], alone.beta[RECORD][:, 0]
        assert (got_resid - want_resid).abs().max() <= 1e-4 * scale_of(want_resid), (layout, i)


@pytest.mark.parametrize("layout", ["left", "middle"])
def test_pad_tokens_do_not_reach_real_positions(layout: str) -> None:
    """Whatever token ids fill the padding, every real position's beta is the same."""
    model = build_model("llama_gqa", 4)
    mu = random_baseline(model, 4)
    parts = []
    for pad_token in (0, 17):
        tokens, mask = _batch(model, layout, pad_token=pad_token)
        parts.append(decompose_heads(model, tokens, HEADS, mu, attention_mask=mask).beta_logits)
    real = torch.tensor(LAYOUTS[layout]).bool()
    assert (parts[0][:, real] - parts[1][:, real]).abs().max() <= 1e-6 * scale_of(parts[0][:, real])
    assert not torch.equal(parts[0][:, ~real], parts[1][:, ~real])  # the pad positions themselves differ


def test_a_query_with_one_real_key_has_a_one_hot_relevant_pattern() -> None:
    """The only real token of a left-padded row attends to itself alone, in the relevant pattern too."""
    model = build_model("gpt2", 5)
    tokens, mask = _batch(model, "left")
    record = ["blocks.1.attn.hook_pattern"]
    out = decompose_heads(
        model, tokens, [(0, 2)], random_baseline(model, 5), record=record, attention_mask=mask
    )
    pattern = out.beta[record[0]][0, 2, :, N_POS - 1]  # source 0, row 2, every head, the last query
    one_hot = torch.zeros(N_POS)
    one_hot[-1] = 1.0
    assert torch.equal(pattern, one_hot.expand_as(pattern))
