"""Faithfulness: full circuit 1, empty 0 exactly; planted circuit beats random ones."""

from __future__ import annotations

import math

import pytest
import torch
from discovery_planted import LABEL_IDS, PLANTED, planted_batch

from circuit_transfer.discovery import (
    Baseline,
    Circuit,
    ablated_label_logits,
    distinct_random_circuits,
    faithfulness,
    faithfulness_curve,
    head_relevance,
    select_random,
)
from circuit_transfer.readout import task_margin


def test_full_is_one_empty_is_zero_planted_is_high(planted_model, planted_data):
    full = faithfulness(planted_model, None, Circuit.full(planted_model), planted_data)
    empty = faithfulness(planted_model, None, Circuit.empty(planted_model), planted_data)
    assert full.faithfulness == 1.0 and empty.faithfulness == 0.0
    planted = faithfulness(planted_model, None, Circuit.from_heads(PLANTED, planted_model), planted_data)
    assert planted.faithfulness > 0.95 and planted.circuit.accuracy == 1.0
    assert planted.empty.accuracy < 0.5
    rand = faithfulness(planted_model, None, select_random(2, 4, 2, seed=3), planted_data)
    assert rand.faithfulness < planted.faithfulness


def test_from_end_baseline_ablation(planted_model, planted_data):
    r = faithfulness(
        planted_model, None, Circuit.from_heads(PLANTED, planted_model), planted_data, positions="from-end"
    )
    assert r.baseline == "label-balanced/from-end" and r.faithfulness > 0.9


def test_curve(planted_model, planted_data):
    scores = head_relevance(planted_model, None, planted_data)
    curve = faithfulness_curve(planted_model, None, scores, planted_data, sizes=[2, 8], n_random=4)
    assert curve.sizes == [2, 8] and len(curve.random[0]) == 4
    assert curve.top_k[0] > curve.random_median[0]
    assert curve.top_k[1] == 1.0 and curve.random_mean[1] == 1.0
    d = curve.to_dict()
    assert d["random_std"][1] == 0.0 and "full" in d


def test_circuit_for_another_model_is_refused(planted_model, planted_data):
    with pytest.raises(ValueError, match="this model has 2 x 4"):
        faithfulness(
            planted_model,
            None,
            Circuit(heads=((0, 0),), n_layers=12, n_heads=4, model_name="x"),
            planted_data,
        )
    _ = torch


def _empty_logits_by_hand(model, mu: torch.Tensor) -> torch.Tensor:
    """Label logits with every head's hook_z := mu, computed by hand for the planted model.

    No norms, zero biases, one-hot unembedding: the final residual is the query token's embedding
    plus every head's constant output mu[l, h] @ W_O[l, h]; the query embedding reads 0 on the
    label words, so the label logits are sum_{l,h} mu[l, h] @ W_O[l, h] @ W_U[:, labels].
    """
    W_O = torch.stack([blk.attn.W_O.detach() for blk in model.blocks])  # L H dh d_model
    return torch.einsum("lhd,lhdm,mk->k", mu, W_O, model.W_U.detach()[:, LABEL_IDS])


def test_ablation_patches_the_baseline_mu_not_zero(planted_model):
    """Zero- and mean-ablation give known, different margins; faithfulness must use the given mu."""
    batch = planted_batch([6, 3, 1], seed=4)  # imbalanced: a constant logit shift moves the mean margin
    mu = 0.7 * torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(0))
    mu[1, 2, 1] = 1.0  # the planted L1H2 then writes +4 onto label 0 in every example
    none_kept = torch.zeros(2, 4, dtype=torch.bool)
    expected = _empty_logits_by_hand(planted_model, mu)
    got = ablated_label_logits(planted_model, batch, none_kept, Baseline.from_tensor(mu))
    torch.testing.assert_close(got, expected.expand_as(got), atol=1e-5, rtol=1e-5)
    zero = ablated_label_logits(planted_model, batch, none_kept, Baseline.from_tensor(torch.zeros_like(mu)))
    assert torch.equal(zero, torch.zeros_like(zero))

    circuit = Circuit.from_heads(PLANTED, planted_model)
    with_mu = faithfulness(planted_model, None, circuit, batch, baseline=mu)
    with_zero = faithfulness(planted_model, None, circuit, batch, baseline="zero")
    m_empty = task_margin(expected.expand(len(batch), -1), batch.labels).mean()
    assert with_mu.empty.margin == pytest.approx(float(m_empty), abs=1e-5)
    assert with_zero.empty.margin == 0.0
    assert abs(with_mu.empty.margin - with_zero.empty.margin) > 0.5
    assert with_mu.faithfulness != pytest.approx(with_zero.faithfulness)
    # normalised between the empty and the full model, here where m(empty) is far from 0
    gap = with_mu.full.margin - with_mu.empty.margin
    assert with_mu.faithfulness == pytest.approx((with_mu.circuit.margin - with_mu.empty.margin) / gap)
    full = faithfulness(planted_model, None, Circuit.full(planted_model), batch, baseline=mu)
    assert full.faithfulness == pytest.approx(1.0) and full.empty.margin > 0.5
    with_max = faithfulness(planted_model, None, circuit, batch, baseline=mu, margin="max")
    m_max = task_margin(expected.expand(len(batch), -1), batch.labels, "max").mean()
    assert with_max.empty.margin == pytest.approx(float(m_max), abs=1e-5) and with_max.margin == "max"
    assert abs(float(m_max) - float(m_empty)) > 0.1


def test_random_circuits_of_a_curve_are_distinct_seeded_draws(planted_model, planted_data):
    scores = head_relevance(planted_model, None, planted_data)
    curve = faithfulness_curve(planted_model, None, scores, planted_data, sizes=[1, 2, 8], n_random=6, seed=3)
    for k, circuits in zip(curve.sizes, curve.random_heads):
        assert len(circuits) == 6 and all(len(c) == k for c in circuits)
        distinct = {tuple(map(tuple, c)) for c in circuits}
        assert len(distinct) == min(6, math.comb(8, k)), (k, circuits)
    # the first draw is seed 3's; every draw is some seed's select_random
    assert curve.random_heads[1][0] == [list(h) for h in select_random(2, 4, 2, seed=3).heads]
    assert curve.random_std[0] > 0  # one head of 8 kept: distinct draws give distinct values
    assert curve.random_heads == curve.to_dict()["random_heads"]


def test_distinct_random_circuits_skip_repeated_draws():
    # seeds 3 and 4 draw the same single head of 2 x 4: the fourth draw comes from seed 5
    assert select_random(2, 4, 1, seed=3).heads == select_random(2, 4, 1, seed=4).heads
    drawn = distinct_random_circuits(2, 4, 1, n=4, seed=1)
    assert [c.heads for c in drawn] == [select_random(2, 4, 1, seed=s).heads for s in (1, 2, 3, 5)]
    assert len(distinct_random_circuits(2, 4, 8, n=3)) == 3  # one possible set: repeats kept
