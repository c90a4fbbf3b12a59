"""Faithfulness: full circuit 1, empty 0 exactly; planted circuit beats random ones."""

from __future__ import annotations

import pytest
import torch
from discovery_planted import PLANTED

from circuit_transfer.discovery import (
    Circuit,
    faithfulness,
    faithfulness_curve,
    head_relevance,
    select_random,
)


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
