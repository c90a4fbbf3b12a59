"""The batched engine (beta only, gamma from the cache) equals the slow two-part reference loop."""

from __future__ import annotations

import pytest
import torch
from cdt_models import FAMILIES, build_model, random_baseline, random_tokens, scale_of

from circuit_transfer.cdt import Rules, decompose_heads
from circuit_transfer.cdt.reference import reference_decompose

HEADS = [(2, 3), (0, 0), (1, 2), (0, 3)]  # mixed layers, not sorted
RULES = [
    Rules(a, b, s)
    for a in ("decomposed", "frozen")
    for b in ("magnitude", "irrelevant")
    for s in (False, True)
]


def _check(model, tokens, mu_of, rules, tol, **kwargs) -> None:
    names = [
        f"blocks.{i}.{s}" for i in range(model.cfg.n_layers) for s in ("hook_resid_post", "hook_attn_out")
    ]
    out = decompose_heads(
        model,
        tokens,
        HEADS,
        kwargs.pop("baseline"),
        rules.attention,
        rules.bias,
        record=names,
        stabilize=rules.stabilize,
        **kwargs,
    )
    assert out.heads == HEADS
    _, cache = model.run_with_cache(tokens)
    for i, (layer, head) in enumerate(HEADS):
        ref = reference_decompose(model, tokens, (layer, head), mu_of(layer, head), rules, cache=cache)
        beta_ref = ref["logits"][0]
        err = (out.beta_logits[i] - beta_ref).abs().max()
        assert err <= tol * scale_of(beta_ref + ref["logits"][1]), (rules, (layer, head), float(err))
        for name in names:
            expected = ref[name][0] if name in ref else torch.zeros_like(out.beta[name][i])
            assert (out.beta[name][i] - expected).abs().max() <= tol * max(scale_of(out.full[name]), 1.0), (
                name,
                rules,
            )


ALL_RULES_FAMILIES = ("gpt2", "llama_gqa")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_engine_equals_reference_float64(family: str) -> None:
    """In float64 the two implementations agree to ~1e-13 (we require 1e-10).

    Every rule variant for two families, the default and the opposite variant for the others.
    chunk_size=7 with 3 examples puts two sources of layer 0 in one chunk and splits the rest.
    """
    model = build_model(family, 5, dtype=torch.float64)
    tokens = random_tokens(model, seed=5)
    mu = random_baseline(model, 5).double()
    for rules in RULES if family in ALL_RULES_FAMILIES else [RULES[0], RULES[-1]]:
        _check(model, tokens, lambda layer, head: mu[layer, head], rules, 1e-10, baseline=mu, chunk_size=7)


@pytest.mark.parametrize("family", ["gpt2", "llama_gqa", "bloom_alibi"])
def test_engine_equals_reference_float32(family: str) -> None:
    """In float32 the magnitude bias share is ill-conditioned where |W beta| + |W gamma| ~ 0: 1e-4."""
    model = build_model(family, 6)
    tokens = random_tokens(model, seed=6)
    mu = random_baseline(model, 6)
    for rules in (RULES[0], RULES[-1]):
        _check(model, tokens, lambda layer, head: mu[layer, head], rules, 1e-4, baseline=mu)


def test_per_position_baseline_and_source_positions() -> None:
    """A per-position mu and a source-position mask equal the reference with mu = z outside the mask."""
    model = build_model("llama_gqa", 2, dtype=torch.float64)
    tokens = random_tokens(model, n_pos=8, seed=2)
    mu = random_baseline(model, 2, n_pos=8).double()
    _, cache = model.run_with_cache(tokens)
    positions = [2, 5, 7]
    keep = torch.zeros(8, 1, dtype=torch.bool)
    keep[positions] = True

    def mu_of(layer: int, head: int) -> torch.Tensor:
        # outside the source positions beta_s = 0, i.e. the baseline is the activation itself
        return torch.where(keep, mu[layer, head], cache[f"blocks.{layer}.attn.hook_z"][:, :, head])

    # beta is exactly 0 at many positions here, where the bias share is most ill-conditioned: 1e-8
    _check(model, tokens, mu_of, Rules(), 1e-8, baseline=mu, source_positions=positions)
    bool_mask = torch.zeros(tokens.shape, dtype=torch.bool)
    bool_mask[:, positions] = True
    _check(model, tokens, mu_of, Rules(), 1e-8, baseline=mu, source_positions=bool_mask)
