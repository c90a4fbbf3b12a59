"""The CD-T matrix over every family: the model `load_model` makes of a random local HF directory
(float64), decomposed by the engine and by the slow two-part reference.

Per family: the reference's parts add up to the clean run at every hook it returns and at the
logits; the engine's clean run equals the model's at every recordable hook; the engine equals the
reference; and beta is exactly 0 when the baseline is the source's own activation (the first-order
check against autograd is test_family_first_order.py). A family whose
config the engine still refuses is listed in REFUSED: its refusal must name the field, and its
other tests are strict xfails, so supporting it without updating the table fails the suite.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hf_families import FAMILIES

from circuit_transfer.cdt import RECORDABLE, Rules, decompose_heads
from circuit_transfer.cdt.reference import reference_decompose

REFUSED: dict[str, str] = {}
"""Family -> the HookedTransformerConfig field the engine refuses (the first one it checks)."""

RULES = [
    Rules("decomposed", "magnitude"),
    Rules("frozen", "irrelevant"),
    Rules("decomposed", "irrelevant", True),
]
HEADS = [(1, 3), (0, 1)]  # a source in each layer, unsorted


def families() -> list:
    """Every family; those in REFUSED as strict xfails (NotImplementedError)."""
    return [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                strict=True, raises=NotImplementedError, reason=f"engine refuses {REFUSED[name]}"
            ),
        )
        if name in REFUSED
        else name
        for name in FAMILIES
    ]


def _baseline(model, seed: int = 0) -> torch.Tensor:
    """A per-head baseline mu of the scale of hook_z (float64)."""
    gen = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    return 0.5 * torch.randn(cfg.n_layers, cfg.n_heads, cfg.d_head, generator=gen, dtype=cfg.dtype)


def _scale(x: torch.Tensor) -> float:
    return max(float(x.abs().max()), 1e-6)


def _recordable(model, rules: Rules = Rules()) -> list[str]:
    """Every recordable hook of the model; under the frozen rule, without the (undecomposed) pattern."""
    skip = {"attn.hook_pattern"} if rules.attention == "frozen" else set()
    return [
        f"blocks.{layer}.{suffix}"
        for layer in range(model.cfg.n_layers)
        for suffix in RECORDABLE
        if f"blocks.{layer}.{suffix}" in model.hook_dict and suffix not in skip
    ]


@pytest.mark.parametrize("name", list(REFUSED))
def test_refusal_names_the_field(name, cdt_family):
    model, tokens = cdt_family(name)
    with pytest.raises(NotImplementedError, match=rf"HookedTransformerConfig\.{REFUSED[name]}\b"):
        decompose_heads(model, tokens, HEADS, _baseline(model))


@pytest.mark.parametrize("name", families())
def test_reference_parts_add_up_to_the_clean_run(name, cdt_family):
    """The reference propagates gamma by its own rules: beta + gamma == clean is a test of the rules."""
    model, tokens = cdt_family(name)
    decompose_heads(model, tokens, HEADS[:1], _baseline(model))  # refused families stop here
    logits, cache = model.run_with_cache(tokens)
    mu = _baseline(model)
    for rules in RULES:
        for layer, head in HEADS:
            parts = reference_decompose(model, tokens, (layer, head), mu[layer, head], rules, cache=cache)
            for hook, (beta, gamma) in parts.items():
                full = logits if hook == "logits" else cache[hook]
                assert (beta + gamma - full).abs().max() <= 1e-9 * _scale(full), (rules, hook)
            assert parts["logits"][0].abs().max() > 1e-6  # the source reaches the logits


@pytest.mark.parametrize("name", families())
def test_engine_clean_run_and_parts_at_every_recorded_hook(name, cdt_family):
    model, tokens = cdt_family(name)
    record = _recordable(model)
    logits, cache = model.run_with_cache(tokens)
    out = decompose_heads(model, tokens, HEADS, _baseline(model), record=record)
    assert (out.full_logits - logits).abs().max() <= 1e-10 * _scale(logits)
    assert (out.beta_logits + out.gamma_logits - logits).abs().max() <= 1e-10 * _scale(logits)
    for hook in record:
        full = cache[hook]
        assert (out.full[hook] - full).abs().max() <= 1e-10 * _scale(full), hook
        assert (out.beta[hook] + out.gamma[hook] - full).abs().max() <= 1e-10 * _scale(full), hook


@pytest.mark.parametrize("name", families())
def test_engine_equals_reference(name, cdt_family):
    model, tokens = cdt_family(name)
    mu = _baseline(model, seed=1)
    _, cache = model.run_with_cache(tokens)
    for rules in RULES:
        record = [
            f"blocks.{layer}.{s}"
            for layer in range(model.cfg.n_layers)
            for s in ("hook_resid_post", "hook_attn_out")
        ]
        out = decompose_heads(
            model, tokens, HEADS, mu, rules.attention, rules.bias, record=record, stabilize=rules.stabilize
        )
        for i, (layer, head) in enumerate(HEADS):
            ref = reference_decompose(model, tokens, (layer, head), mu[layer, head], rules, cache=cache)
            beta, gamma = ref["logits"]
            # rounding scales with the larger of an activation and its parts: under a post-norm block
            # (OLMo 2) the parts reach 1e6 on logits of 1 (they cancel), and differ by ~2e-10 of that
            tol = 1e-9 * max(_scale(beta + gamma), _scale(beta))
            assert (out.beta_logits[i] - beta).abs().max() <= tol, (rules, layer, head)
            for hook in record:
                expected = ref[hook][0] if hook in ref else torch.zeros_like(out.beta[hook][i])
                tol = 1e-9 * max(_scale(out.full[hook]), _scale(expected), 1.0)
                assert (out.beta[hook][i] - expected).abs().max() <= tol, hook


@pytest.mark.parametrize("name", families())
def test_beta_is_exactly_zero_when_the_baseline_is_the_source_itself(name, cdt_family):
    model, tokens = cdt_family(name)
    _, cache = model.run_with_cache(tokens)
    cfg = model.cfg
    mu = torch.stack(
        [cache[f"blocks.{layer}.attn.hook_z"][0].transpose(0, 1) for layer in range(cfg.n_layers)]
    )
    heads = [(layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    for rules in RULES:
        # the pattern's "relevant part" is softmax of the relevant scores, not an additive part
        record = [hook for hook in _recordable(model, rules) if not hook.endswith("hook_pattern")]
        out = decompose_heads(
            model, tokens, heads, mu, rules.attention, rules.bias, record=record, stabilize=rules.stabilize
        )
        assert torch.equal(out.beta_logits, torch.zeros_like(out.beta_logits)), rules
        for hook in record:
            assert torch.equal(out.beta[hook], torch.zeros_like(out.beta[hook])), (rules, hook)


def test_readme_architecture_table_states_what_is_refused():
    """README's architecture table has a row per family whose CD-T column matches REFUSED."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = {m[1]: line for line in readme.splitlines() if (m := re.match(r"\| [^|]*\(`(\w+)`\) \|", line))}
    for name, family in FAMILIES.items():
        row = rows.get(family.architecture)
        assert row is not None, f"README's architecture table has no row for {family.architecture}"
        cdt_column = row.rstrip(" |").rsplit("|", 1)[1].strip()
        expected = f"refused: `{REFUSED[name]}`" if name in REFUSED else "yes"
        assert cdt_column == expected, (family.architecture, cdt_column)
