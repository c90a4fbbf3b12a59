"""Comparing circuits: Jaccard, overlap at k, Spearman with average ranks for ties."""

from __future__ import annotations

import math

import pytest
import torch

from circuit_transfer.discovery import Circuit, HeadScores, compare, rankdata, select_top_k, spearman


def test_rankdata_average_ties():
    assert rankdata(torch.tensor([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_spearman_known_values():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # hand: ranks (1,2,3,4,5) vs (2,1,4,3,5): rho = 1 - 6*4/(5*24) = 0.8
    assert spearman(a, torch.tensor([2.0, 1.0, 4.0, 3.0, 5.0])) == pytest.approx(0.8)
    # ties: x=(1,2,2,3), y=(1,2,3,4); ranks x=(1,2.5,2.5,4): Pearson of ranks
    assert spearman(torch.tensor([1.0, 2, 2, 3]), torch.tensor([1.0, 2, 3, 4])) == pytest.approx(
        0.9486833, abs=1e-6
    )
    assert math.isnan(spearman(torch.ones(3), a[:3]))


def _s(values, lang):
    return HeadScores(scores=torch.tensor(values), model_name="m", n_layers=2, n_heads=2, task="t", lang=lang)


def test_compare_circuits_and_scores():
    a = select_top_k(_s([[4.0, 3.0], [2.0, 1.0]], "ind"), 2)  # L0H0, L0H1
    b = select_top_k(_s([[4.0, 1.0], [3.0, 2.0]], "jav"), 2)  # L0H0, L1H0
    cmp = compare(a, b)
    assert cmp.jaccard == pytest.approx(1 / 3)
    assert cmp.overlap_at_k == pytest.approx(0.5) and cmp.k == 2
    assert cmp.spearman == pytest.approx(0.4)
    assert cmp.shared == ["L0H0"] and cmp.only_a == ["L0H1"] and cmp.only_b == ["L1H0"]
    assert compare(a.scores, b.scores, k=1).jaccard == 1.0
    plain = Circuit(heads=((0, 0),), n_layers=2, n_heads=2)
    assert compare(plain, a).spearman is None
    assert set(cmp.to_dict()) >= {"jaccard", "overlap_at_k", "spearman"}
    with pytest.raises(ValueError, match="cannot compare"):
        compare(a, Circuit(heads=(), n_layers=3, n_heads=2))
