"""Real model: CD-T on Gemma 3 270M (QK-norm, interleaved local/global attention with two rotary
bases, sandwich norms, one KV head, a 262k vocabulary) with real Indonesian sentences."""

from __future__ import annotations

import pytest
import torch

from circuit_transfer.cdt import decompose_heads
from circuit_transfer.data import load_split

pytestmark = pytest.mark.slow

LABEL_WORDS = (" negative", " neutral", " positive")


def _inputs(model, data_dir, n: int):
    rows = load_split("nusax-senti", "indonesian", "test", data_dir)[:20]
    texts = sorted((ex.text + "\nSentiment:" for ex in rows), key=len)[:n]  # short ones: keeps it fast
    enc = model.tokenizer(texts, return_tensors="pt", padding=True)
    tokens, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, attention_mask=mask)
    real = mask[:, :, None, None].float()
    mu = torch.stack(
        [
            (cache[f"blocks.{i}.attn.hook_z"] * real).sum((0, 1)) / real.sum((0, 1))
            for i in range(model.cfg.n_layers)
        ]
    )
    return tokens, mask, mask.sum(1) - 1, logits, cache, mu


def test_gemma3_completeness_on_nusax(gemma3, data_dir) -> None:
    """beta + gamma equals the model's own activations at the last block and at the label logits,
    for sources on local (2, 16) and global (5, 17) layers, both attention rules; every source's
    beta is finite and non-zero; a baseline equal to the source's own output gives beta exactly 0."""
    model = gemma3
    tokens, mask, final, logits, cache, mu = _inputs(model, data_dir, 3)
    columns = torch.tensor([model.tokenizer.encode(w, add_special_tokens=False)[0] for w in LABEL_WORDS])
    heads = [(2, 1), (5, 0), (16, 3), (17, 2)]
    record = ["blocks.17.hook_resid_post", "blocks.5.attn.hook_z"]
    expected = logits[torch.arange(3), final][:, columns]
    scale = float(expected.abs().max())
    for attention in ("decomposed", "frozen"):
        out = decompose_heads(
            model,
            tokens,
            heads,
            mu,
            attention,
            record=record,
            attention_mask=mask,
            logits_positions=final,
            unembed_columns=columns,
        )
        assert out.beta_logits.shape == (4, 3, 3) and bool(out.beta_logits.isfinite().all())
        assert ((out.beta_logits + out.gamma_logits) - expected).abs().max() <= 1e-4 * scale
        for name in record:
            full = cache[name]
            assert ((out.beta[name] + out.gamma[name]) - full).abs().max() <= 1e-4 * float(full.abs().max())
        assert out.beta_logits.abs().amax(dim=(1, 2)).min() > 0  # every source contributes something
    # baseline = the source's own output at every position (from the same run): nothing is relevant
    with torch.no_grad():
        _, alone = model.run_with_cache(
            tokens[:1], attention_mask=mask[:1], names_filter=lambda n: "hook_z" in n
        )
    own = torch.stack(
        [alone[f"blocks.{i}.attn.hook_z"][0].transpose(0, 1) for i in range(model.cfg.n_layers)]
    )
    out = decompose_heads(
        model,
        tokens[:1],
        heads,
        own,
        attention_mask=mask[:1],
        logits_positions=final[:1],
        unembed_columns=columns,
    )
    assert torch.equal(out.beta_logits, torch.zeros_like(out.beta_logits))


def test_gemma3_engine_equals_reference(gemma3, data_dir) -> None:
    """The batched engine equals the slow two-part reference on the real model, for a local-layer and
    a global-layer source (completeness alone holds by construction). Mid-depth sources, so that
    several later layers' QK-norm, local masks and sandwich norms act on their beta (seen to fail
    with the engine's QK-norm rule skipped; sources in the last two layers did not see that)."""
    from circuit_transfer.cdt import Rules
    from circuit_transfer.cdt.reference import reference_decompose

    model = gemma3
    tokens, mask, final, logits, cache, mu = _inputs(model, data_dir, 2)
    scale = float(logits[torch.arange(2), final].abs().max())
    for head in [(9, 2), (11, 1)]:
        out = decompose_heads(model, tokens, [head], mu, attention_mask=mask, logits_positions=final)
        ref = reference_decompose(model, tokens, head, mu[head], Rules(), attention_mask=mask, cache=cache)
        want = ref["logits"][0][torch.arange(2), final]
        assert want.abs().max() > 1e-3 * scale  # the source contributes: the comparison is not 0 == 0
        assert (out.beta_logits[0] - want).abs().max() <= 1e-3 * scale, head
