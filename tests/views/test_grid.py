"""Relevance grids and the two-language comparison."""

from __future__ import annotations

import re

import pytest
import torch

from circuit_transfer.discovery import Circuit, HeadScores, compare
from circuit_transfer.views import circuit_diff_html, circuit_html, head_scores_html, relevance_grid_html


def _scores(values, lang):
    t = torch.tensor(values, dtype=torch.float32)
    return HeadScores(
        scores=t, model_name="m", n_layers=t.shape[0], n_heads=t.shape[1], task="nusax-senti", lang=lang
    )


A = _scores([[0.5, -0.2, 0.0], [0.1, 0.9, -0.7]], "ind")
B = _scores([[0.4, 0.3, 0.0], [-0.1, 0.8, 0.2]], "jav")


def _circuit(scores, heads):
    return Circuit(
        heads=tuple(heads),
        n_layers=2,
        n_heads=3,
        model_name="m",
        method="top-k",
        params={"k": 2},
        scores=scores,
        task="nusax-senti",
        lang=scores.lang,
    )


def test_grid_marks_selected_heads_and_colours_by_sign():
    html = relevance_grid_html(_circuit(A, [(1, 1), (0, 0)]))
    assert html.count('class="ct-sel"') == 2
    assert re.search(
        r'ct-sel" style="background:rgba\(215,48,39,1\.000\)[^"]*" title="L1H1 relevance \+0\.9', html
    )
    assert "rgba(49,104,189" in html  # negative scores in blue
    assert html.count("<td") == 6


def test_grid_of_a_circuit_without_scores_and_of_bare_scores():
    plain = Circuit.from_heads([(0, 2)], n_layers=2, n_heads=3)
    assert relevance_grid_html(plain).count('class="ct-sel"') == 1
    assert relevance_grid_html(A).count('class="ct-sel"') == 0
    assert "L1H1 +0.9" in head_scores_html(A)
    assert "L1H1 +0.9" in circuit_html(_circuit(A, [(1, 1)]))


def test_diff_prints_the_comparison_and_colours_the_overlap():
    a, b = _circuit(A, [(1, 1), (0, 0)]), _circuit(B, [(1, 1), (0, 1)])
    cmp = compare(a, b)
    html = circuit_diff_html(a, b)
    assert (
        f"Jaccard <b>{cmp.jaccard:.3f}</b>" in html
        and f"Spearman of scores <b>{cmp.spearman:.3f}</b>" in html
    )
    assert "L1H1: in both" in html and "L0H0: only ind" in html and "L0H1: only jav" in html


def test_diff_refuses_circuits_of_different_models():
    other = Circuit.from_heads([(0, 0)], n_layers=3, n_heads=3)
    with pytest.raises(ValueError, match="cannot compare"):
        circuit_diff_html(_circuit(A, [(0, 0)]), other)
