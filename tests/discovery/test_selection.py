"""Head selection: top-k, threshold, the controls, and the bad inputs."""

from __future__ import annotations

import pytest
import torch

from circuit_transfer.discovery import (
    HeadScores,
    resolve_k,
    select_near_zero,
    select_random,
    select_threshold,
    select_top_k,
)


def _scores() -> HeadScores:
    s = torch.tensor([[0.1, -2.0, 0.5], [3.0, 0.0, 0.5]])
    return HeadScores(scores=s, model_name="toy", n_layers=2, n_heads=3, task="nusax-senti", lang="ind")


def test_top_k_count_and_fraction_with_deterministic_ties():
    assert select_top_k(_scores(), 2).heads == ((0, 2), (1, 0))
    assert select_top_k(_scores(), 3).heads == ((0, 2), (1, 0), (1, 2))
    assert len(select_top_k(_scores(), 0.5).heads) == 3
    assert select_top_k(_scores(), 1.0).heads == tuple((ly, h) for ly in range(2) for h in range(3))


def test_threshold_near_zero_random():
    assert select_threshold(_scores(), 0.5).heads == ((0, 2), (1, 0), (1, 2))
    with pytest.raises(ValueError, match="no head has a score >= 5"):
        select_threshold(_scores(), 5)
    assert select_near_zero(_scores(), 2).heads == ((0, 0), (1, 1))
    a, b = select_random(2, 3, 3, seed=1), select_random(2, 3, 3, seed=1)
    assert a.heads == b.heads and len(a.heads) == 3 and a.params == {"k": 3, "seed": 1}
    seeds = {select_random(2, 3, 3, seed=s).heads for s in range(10)}
    assert len(seeds) > 1


@pytest.mark.parametrize("k", [0, 7, -1])
def test_bad_k_names_both_numbers(k):
    with pytest.raises(ValueError, match=rf"k={k} heads requested but the model has 6 heads"):
        select_top_k(_scores(), k)


@pytest.mark.parametrize("k", [0.0, 1.5])
def test_bad_fraction(k):
    with pytest.raises(ValueError, match="fraction must be in"):
        resolve_k(k, 2, 3)


def test_fractions_round_to_the_nearest_count():
    assert [resolve_k(f, 2, 4) for f in (0.01, 0.2, 0.35, 0.45, 1.0)] == [1, 2, 3, 4, 8]


def test_discover_routes_each_selection_with_its_seed(planted_model, planted_data):
    from circuit_transfer.discovery import discover, head_relevance

    scores = head_relevance(planted_model, None, planted_data)
    run = lambda selection, **kw: discover(  # noqa: E731
        planted_model, None, planted_data, k=3, selection=selection, scores=scores, **kw
    )
    assert run("top-k").heads == select_top_k(scores, 3).heads
    assert run("near-zero").heads == select_near_zero(scores, 3).heads
    assert run("random", seed=5).heads == select_random(2, 4, 3, seed=5).heads
    assert run("random", seed=5).heads != select_random(2, 4, 3, seed=0).heads
