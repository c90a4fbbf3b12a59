"""The CD-T rules on hand-computable inputs (docs/method.md §3): bias share, even split, stability rule."""

from __future__ import annotations

import torch

from circuit_transfer.cdt.rules import Rules, linear, masked_softmax, stabilize_signs


def test_linear_shares_the_bias_by_magnitude_and_splits_it_evenly_where_both_parts_are_zero():
    w_beta = torch.tensor([1.0, 0.0, -3.0, 0.0])
    w_full = torch.tensor([4.0, 2.0, -3.0, 0.0])  # W gamma = [3, 2, 0, 0]
    bias = torch.tensor([8.0, 8.0, 8.0, 8.0])
    beta = linear(w_beta, w_full, bias, Rules())
    assert torch.equal(beta, torch.tensor([1.0 + 8 * 1 / 4, 0.0, -3.0 + 8.0, 4.0]))
    assert torch.equal(linear(w_beta, w_full, bias, Rules(bias="irrelevant")), w_beta)
    assert torch.equal(linear(w_beta, w_full, None, Rules()), w_beta)


def test_stability_rule_gives_the_sum_to_the_larger_part():
    beta = torch.tensor([2.0, -1.0, 3.0, -4.0])
    full = torch.tensor([1.0, 2.0, 5.0, -5.0])  # gamma = [-1, 3, 2, -1]: opposite signs at 0 and 1
    assert torch.equal(stabilize_signs(beta, full), torch.tensor([1.0, 0.0, 3.0, -4.0]))
    out = linear(beta, full, None, Rules(stabilize=True))
    assert torch.equal(out, torch.tensor([1.0, 0.0, 3.0, -4.0]))


def test_stability_rule_equals_its_definition_on_random_parts():
    """The clip form equals the rule as written (opposite signs: the larger part takes the sum),
    bit for bit, on random parts of mixed signs and magnitudes, with full broadcast over sources."""
    g = torch.Generator().manual_seed(0)
    beta = torch.randn(5, 7, 300, generator=g) * torch.rand(5, 7, 300, generator=g).mul(6).exp()
    full = torch.randn(7, 300, generator=g) * 3
    full_b = full.expand_as(beta)
    gamma = full_b - beta
    larger = torch.where(beta.abs() > gamma.abs(), full_b, torch.zeros_like(full_b))
    expected = torch.where(beta * gamma < 0, larger, beta)
    assert (beta * gamma < 0).float().mean() > 0.2  # the rule acts on many entries
    assert torch.equal(stabilize_signs(beta, full), expected)
    assert torch.equal(stabilize_signs(beta, full_b), expected)


def test_masked_softmax_gives_zero_rows_where_every_key_is_masked():
    scores = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[True, False], [False, False]])
    assert torch.equal(masked_softmax(scores, mask), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
