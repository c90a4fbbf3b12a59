"""Completeness: beta + gamma equals the clean activation at every hook and at the logits."""

from __future__ import annotations

import pytest
import torch
from cdt_models import FAMILIES, build_model, random_baseline, random_tokens, scale_of

from circuit_transfer.cdt import Rules, decompose_heads
from circuit_transfer.cdt.reference import reference_decompose

RULES = [Rules(a, b) for a in ("decomposed", "frozen") for b in ("magnitude", "irrelevant")]
HEADS = [(0, 1), (1, 3), (2, 0)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_reference_parts_add_up_to_clean_run(family: str, seed: int) -> None:
    """The faithful reference propagates gamma by its own rules, so this checks the rules themselves."""
    model = build_model(family, seed)
    tokens = random_tokens(model, seed=seed)
    mu = random_baseline(model, seed)
    logits, cache = model.run_with_cache(tokens)
    for rules in RULES:
        for layer, head in HEADS[::2]:
            parts = reference_decompose(model, tokens, (layer, head), mu[layer, head], rules, cache=cache)
            for name, (beta, gamma) in parts.items():
                full = logits if name == "logits" else cache[name]
                err = (beta + gamma - full).abs().max()
                assert err <= 1e-4 * scale_of(full), (family, rules, name, float(err))
            assert parts["logits"][0].abs().max() > 0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_engine_parts_add_up_at_recorded_hooks(family: str) -> None:
    """The engine's gamma is full - beta, so beta + gamma == full holds by construction; what can
    fail here is the engine's own clean run (its cached full activations and logits against
    `run_with_cache`). The rules are tested by the reference above and tests/cdt/test_cdt_engine_vs_reference.py."""
    model = build_model(family, 0)
    tokens = random_tokens(model)
    logits, cache = model.run_with_cache(tokens)
    record = [
        f"blocks.{i}.{s}"
        for i in range(model.cfg.n_layers)
        for s in ("hook_resid_post", "hook_attn_out", "attn.hook_z")
    ]
    for rules in RULES:
        out = decompose_heads(
            model, tokens, HEADS, random_baseline(model), rules.attention, rules.bias, record=record
        )
        assert torch.equal(out.full_logits, logits) or (
            out.full_logits - logits
        ).abs().max() <= 1e-5 * scale_of(logits)
        assert ((out.beta_logits + out.gamma_logits) - logits).abs().max() <= 1e-4 * scale_of(logits)
        for name in record:
            assert ((out.beta[name] + out.gamma[name]) - cache[name]).abs().max() <= 1e-4 * scale_of(
                cache[name]
            )


def _right_padded(model, lengths: list[int], n_pos: int):
    tokens = random_tokens(model, batch=len(lengths), n_pos=n_pos, seed=7)
    mask = torch.zeros_like(tokens)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        tokens[i, n:] = 0
    return tokens, mask


# Qwen-1's log-n scale and dynamic NTK depend on the padded length: the model itself changes
CAUSAL_FAMILIES = [
    f for f in FAMILIES if FAMILIES[f].get("attention_dir", "causal") == "causal" and f != "qwen1_logn"
]


@pytest.mark.parametrize("attention", ["decomposed", "frozen"])
@pytest.mark.parametrize("family", CAUSAL_FAMILIES)
def test_padded_batch_matches_each_example_alone(family: str, attention: str) -> None:
    """Right padding with attention_mask: complete, and real positions equal the unpadded run."""
    model = build_model(family, 3)
    lengths = [9, 5, 7]
    tokens, mask = _right_padded(model, lengths, 9)
    mu = random_baseline(model, 3)
    record = ["blocks.2.hook_resid_post"]
    out = decompose_heads(model, tokens, HEADS, mu, attention, record=record, attention_mask=mask)
    logits, cache = model.run_with_cache(tokens, attention_mask=mask)
    assert (out.full_logits - logits).abs().max() <= 1e-5 * scale_of(logits)
    assert ((out.beta[record[0]] + out.gamma[record[0]]) - cache[record[0]]).abs().max() <= 1e-4 * scale_of(
        cache[record[0]]
    )
    for i, n in enumerate(lengths):
        alone = decompose_heads(model, tokens[i : i + 1, :n], HEADS, mu, attention, record=record)
        expected, got = alone.beta_logits[:, 0], out.beta_logits[:, i, :n]
        assert (got - expected).abs().max() <= 1e-4 * scale_of(expected), (
            i,
            float((got - expected).abs().max()),
        )
        got_resid = out.beta[record[0]][:, i, :n]
        assert (got_resid - alone.beta[record[0]][:, 0]).abs().max() <= 1e-4 * scale_of(got_resid)
