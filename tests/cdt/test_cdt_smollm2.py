"""Real model: CD-T on SmolLM2-135M (RMSNorm, rotary, GQA, SwiGLU) with real Indonesian sentences."""

from __future__ import annotations

import pytest
import torch

from circuit_transfer.cdt import decompose_heads

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from circuit_transfer.models import load_model

    return load_model("smollm2-135m")


def test_smollm2_final_token_completeness(smollm2, data_dir) -> None:
    from circuit_transfer.data import load_split

    model = smollm2
    rows = load_split("nusax-senti", "indonesian", "test", data_dir)[:20]
    texts = sorted((ex.text + "\nSentiment:" for ex in rows), key=len)[:4]  # short ones: keeps the test fast
    enc = model.tokenizer(texts, return_tensors="pt", padding=True)
    tokens, mask = enc["input_ids"], enc["attention_mask"]
    final = mask.sum(1) - 1
    last = model.cfg.n_layers - 1
    heads = [(last, 0), (0, 3), (15, 8), (last - 1, 5)]  # heads[::3]: the two late ones
    columns = torch.tensor([model.tokenizer.encode(w)[0] for w in (" negative", " neutral", " positive")])
    record = [f"blocks.{last}.hook_resid_post"]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, attention_mask=mask)
    mu = torch.stack([cache[f"blocks.{i}.attn.hook_z"].mean(dim=(0, 1)) for i in range(model.cfg.n_layers)])
    expected = logits[torch.arange(4), final]
    # Without the stability rule, early-layer sources overflow on this model (massive activations
    # meet the quadratic gated-MLP rule); late-layer ones do not. With it, every source is finite.
    for attention, stabilize, sources in (
        ("decomposed", True, heads),
        ("frozen", True, heads),
        ("decomposed", False, heads[::3]),
    ):
        out = decompose_heads(
            model,
            tokens,
            sources,
            mu,
            attention,
            record=record,
            attention_mask=mask,
            logits_positions=final,
            stabilize=stabilize,
        )
        assert out.beta_logits.shape == (len(sources), 4, model.cfg.d_vocab)
        scale = float(expected.abs().max())
        assert ((out.beta_logits + out.gamma_logits) - expected).abs().max() <= 1e-4 * scale
        resid = cache[record[0]]
        assert ((out.beta[record[0]] + out.gamma[record[0]]) - resid).abs().max() <= 1e-4 * float(
            resid.abs().max()
        )
        assert out.beta_logits.abs().amax(dim=(1, 2)).min() > 0  # every head contributes something
        if not stabilize:
            picked = decompose_heads(
                model,
                tokens,
                sources,
                mu,
                attention,
                attention_mask=mask,
                logits_positions=final,
                unembed_columns=columns,
            )
            torch.testing.assert_close(
                picked.beta_logits, out.beta_logits[..., columns], rtol=0, atol=1e-4 * scale
            )


def test_smollm2_engine_equals_reference_for_late_heads(smollm2, data_dir) -> None:
    """Completeness above holds by construction (gamma = full - beta); this is the check of the rules
    on the real model: the batched engine equals the two-part reference for two late-layer sources."""
    from circuit_transfer.cdt import Rules
    from circuit_transfer.cdt.reference import reference_decompose
    from circuit_transfer.data import load_split

    model = smollm2
    rows = load_split("nusax-senti", "indonesian", "test", data_dir)[:20]
    texts = sorted((ex.text + "\nSentiment:" for ex in rows), key=len)[:2]
    enc = model.tokenizer(texts, return_tensors="pt", padding=True)
    tokens, mask = enc["input_ids"], enc["attention_mask"]
    final = mask.sum(1) - 1
    last = model.cfg.n_layers - 1
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, attention_mask=mask)
    mu = torch.stack([cache[f"blocks.{i}.attn.hook_z"].mean(dim=(0, 1)) for i in range(model.cfg.n_layers)])
    scale = float(logits[torch.arange(2), final].abs().max())
    for head in [(last, 0), (last - 1, 5)]:
        out = decompose_heads(
            model, tokens, [head], mu, attention_mask=mask, logits_positions=final, stabilize=True
        )
        ref = reference_decompose(
            model, tokens, head, mu[head], Rules(stabilize=True), attention_mask=mask, cache=cache
        )
        want = ref["logits"][0][torch.arange(2), final]
        assert want.abs().max() > 1e-3 * scale  # the source contributes: the comparison is not 0 == 0
        assert (out.beta_logits[0] - want).abs().max() <= 1e-3 * scale, head
