"""Known answer: discovery ranks the planted heads first, under every estimator."""

from __future__ import annotations

import pytest
import torch
from discovery_planted import DISTRACTOR, MOVER, PLANTED, READER, build_planted_model, planted_batch

from circuit_transfer.discovery import (
    HeadScores,
    cdt_label_beta,
    head_relevance,
    iterative_search,
    make_baseline,
    select_top_k,
    task_weights,
)


@pytest.mark.parametrize("estimator", ["cdt", "attribution", "ablation"])
@pytest.mark.parametrize("positions", ["pooled", "from-end"])
def test_planted_heads_rank_first(planted_model, planted_data, estimator, positions):
    scores = head_relevance(
        planted_model, None, planted_data, "label-balanced", estimator=estimator, positions=positions
    )
    assert isinstance(scores, HeadScores)
    assert [h for h, _ in scores.ranked()[:2]] == PLANTED
    # the planted strengths are 4 and 2 logits on the gold label word, -0 on the others
    assert scores[PLANTED[0]] == pytest.approx(4.0, abs=0.1)
    assert scores[PLANTED[1]] == pytest.approx(2.0, abs=0.1)
    assert abs(scores[DISTRACTOR]) < 1e-4  # moves every label word equally: no margin
    assert scores.estimator == estimator and scores.n_examples == len(planted_data)


def test_cdt_ratio_sees_the_distractor_the_direction_does_not(planted_model, planted_data):
    ratio = head_relevance(planted_model, None, planted_data, score="cdt-ratio")
    top3 = [h for h, _ in ratio.ranked()[:3]]
    assert set(top3) == {*PLANTED, DISTRACTOR}
    assert (ratio.scores >= 0).all()


def test_estimators_agree_on_a_linear_path(planted_model, planted_data):
    cdt = head_relevance(planted_model, None, planted_data, estimator="cdt")
    att = head_relevance(planted_model, None, planted_data, estimator="attribution")
    abl = head_relevance(planted_model, None, planted_data, estimator="ablation")
    # layer-1 heads write straight to the logits (no norm): all three are exact there
    torch.testing.assert_close(cdt.scores[1], att.scores[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cdt.scores[1], abl.scores[1], atol=1e-4, rtol=1e-4)


def test_per_layer_norm_and_max_margin(planted_model, planted_data):
    normed = head_relevance(planted_model, None, planted_data, per_layer_norm=True)
    torch.testing.assert_close(normed.scores.abs().mean(1), torch.ones(2))
    assert normed.ranked()[0][0] in PLANTED
    mx = head_relevance(planted_model, None, planted_data, margin="max")
    assert [h for h, _ in mx.ranked()[:2]] == PLANTED


def test_iterative_search_finds_a_head_that_acts_only_through_the_target():
    model = build_planted_model(two_hop=True)
    data = planted_batch(8)
    scores = head_relevance(model, None, data)
    assert scores.ranked()[0][0] == READER
    assert set(select_top_k(scores, 1).heads) == {READER}
    circuit = iterative_search(model, None, data, k=1, k_next=1, rounds=3, scores=scores)
    assert set(circuit.heads) == {READER, MOVER}
    assert circuit.method == "iterative"
    assert circuit.params["history"][1]["heads"] == [list(MOVER)]
    two_rounds = iterative_search(model, None, data, k=1, k_next=1, rounds=2, scores=scores)
    assert set(two_rounds.heads) == {READER, MOVER} and len(two_rounds.params["history"]) == 2


def test_stderr_is_the_standard_error_over_examples(planted_model, planted_data):
    """By hand: per-example directional scores of the layer-1 heads, std (n - 1) / sqrt(n)."""
    base = make_baseline(planted_model, "label-balanced", planted_data)
    scores = head_relevance(planted_model, None, planted_data, base)
    beta, full = cdt_label_beta(planted_model, planted_data, base, [(1, h) for h in range(4)])
    per_example = torch.einsum("sbk,bk->sb", beta, task_weights(full, planted_data.labels))
    n = per_example.shape[1]
    torch.testing.assert_close(scores.scores[1], per_example.mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores.stderr[1], per_example.std(1) / n**0.5, rtol=1e-4, atol=1e-6)
