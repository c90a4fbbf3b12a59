"""The Circuit object: JSON round trip, validation against a model, repr."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuit_transfer.discovery import Circuit, CircuitModelMismatch, HeadScores, select_top_k


def _circuit() -> Circuit:
    s = HeadScores(
        scores=torch.tensor([[0.1, 0.42, -0.3, 0.0], [0.2, 0.0, 0.9, 0.05]]),
        model_name="planted",
        n_layers=2,
        n_heads=4,
        task="nusax-senti",
        lang="ind",
        baseline="label-balanced",
        n_examples=24,
        stderr=torch.full((2, 4), 0.01),
    )
    return select_top_k(s, 3)


def test_json_round_trip(tmp_path):
    c = _circuit()
    c.save(tmp_path / "c.json")
    back = Circuit.load(tmp_path / "c.json")
    assert back == c
    assert back.heads == ((0, 1), (1, 0), (1, 2))
    torch.testing.assert_close(back.scores.scores, c.scores.scores)
    torch.testing.assert_close(back.scores.stderr, c.scores.stderr)
    assert back.scores.to_dict() == c.scores.to_dict()


def test_repr_is_readable():
    r = repr(_circuit())
    assert r.startswith(
        "Circuit(3 heads of 2x4 'planted' on nusax-senti/ind by top-k k=3: L1H2 +0.9, L0H1 +0.42"
    )


def test_validate(planted_model):
    _circuit().validate(planted_model)
    other = HookedTransformer(
        HookedTransformerConfig(
            n_layers=3,
            d_model=16,
            n_ctx=8,
            d_head=4,
            n_heads=2,
            d_vocab=10,
            attn_only=True,
            model_name="other",
        )
    )
    with pytest.raises(
        CircuitModelMismatch, match=r"2 layers x 4 heads \(model name 'planted'\); this model has 3 x 2"
    ):
        _circuit().validate(other)


def test_heads_are_sorted_and_checked(planted_model):
    c = Circuit.from_heads([(1, 2), (0, 3), (1, 2)], planted_model)
    assert c.heads == ((0, 3), (1, 2)) and len(c) == 2 and (0, 3) in c
    assert c.mask().sum() == 2
    with pytest.raises(ValueError, match="out of range"):
        Circuit.from_heads([(2, 0)], planted_model)
    assert len(Circuit.full(planted_model)) == 8 and len(Circuit.empty(planted_model)) == 0
