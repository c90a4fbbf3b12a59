"""The controls' head sets and a run's headline numbers, checked against answers computed here.

Each test states an invariant a published contrast relies on: "CT-SFT vs near-zero" must not
train the circuit in both arms; "random" must follow the run's seed; forgetting is before minus
after.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuit_transfer.discovery import HeadScores, select_random, select_top_k
from circuit_transfer.transfer import heads_for, outcome

N_LAYERS, N_HEADS = 3, 4
ALL_HEADS = [(ly, h) for ly in range(N_LAYERS) for h in range(N_HEADS)]


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=N_LAYERS, n_heads=N_HEADS, d_model=16, d_head=4, n_ctx=8, d_vocab=10, attn_only=True
    )
    return HookedTransformer(cfg)


def _scores(values: list[float]) -> HeadScores:
    return HeadScores(
        scores=torch.tensor(values).reshape(N_LAYERS, N_HEADS),
        model_name="custom",
        n_layers=N_LAYERS,
        n_heads=N_HEADS,
    )


def _smallest_abs(values: list[float], k: int, outside: set = frozenset()) -> list[tuple[int, int]]:
    """The k smallest |score| heads not in `outside` (ties by position), by brute force, sorted."""
    order = sorted(range(len(values)), key=lambda i: (abs(values[i]), i))
    heads = [ALL_HEADS[i] for i in order if ALL_HEADS[i] not in outside]
    return sorted(heads[:k])


# |score| all distinct; the top-k by signed score and the k smallest |score| are disjoint for k <= 6
SPREAD = [0.9, -0.05, 2.0, 0.3, -0.15, 0.01, 1.1, -0.2, 3.0, 1.4, -0.4, 1.7]
# only two heads push toward the gold label: a top-4 circuit holds two near-zero negative heads
FEW_POSITIVE = [-0.9, -0.05, 2.0, -0.3, -1.5, -0.01, -1.1, -0.2, 3.0, -0.6, -0.4, -1.7]


@pytest.mark.parametrize("k", [1, 2, 4, 6])
def test_near_zero_heads_are_the_k_smallest_abs_scores_and_miss_the_circuit(model, k):
    circuit = select_top_k(_scores(SPREAD), k)
    heads = heads_for("near-zero", circuit, model, seed=0)
    assert heads == _smallest_abs(SPREAD, k)
    assert not set(heads) & set(circuit.heads)


def test_near_zero_skips_circuit_heads_that_are_near_zero_themselves(model):
    circuit = select_top_k(_scores(FEW_POSITIVE), 4)
    assert set(_smallest_abs(FEW_POSITIVE, 4)) & set(circuit.heads), "the case this test is about"
    heads = heads_for("near-zero", circuit, model, seed=0)
    assert heads == _smallest_abs(FEW_POSITIVE, 4, outside=set(circuit.heads))
    assert len(heads) == 4 and not set(heads) & set(circuit.heads)


def test_near_zero_for_a_circuit_of_more_than_half_the_heads_takes_every_other_head_first(model):
    circuit = select_top_k(_scores(SPREAD), 8)
    heads = heads_for("near-zero", circuit, model, seed=0)
    outside = [hd for hd in ALL_HEADS if hd not in circuit.heads]
    assert len(heads) == 8 and set(outside) <= set(heads)
    assert set(heads) - set(outside) == set(_smallest_abs(SPREAD, 4, outside=set(outside)))


def test_random_heads_follow_the_seed(model):
    circuit = select_top_k(_scores(SPREAD), 3)
    drawn = {}
    for seed in range(6):
        heads = heads_for("random", circuit, model, seed=seed)
        assert heads == list(select_random(N_LAYERS, N_HEADS, 3, seed).heads)
        assert len(set(heads)) == 3
        drawn[seed] = tuple(heads)
    assert len(set(drawn.values())) >= 5, drawn


def test_ct_sft_trains_the_circuit_and_the_controls_need_scores(model):
    circuit = select_top_k(_scores(SPREAD), 3)
    assert heads_for("ct-sft", circuit, model, seed=0) == list(circuit.heads)
    assert heads_for("ln-only", None, model, seed=0) == []
    no_scores = type(circuit)(heads=circuit.heads, n_layers=N_LAYERS, n_heads=N_HEADS)
    with pytest.raises(ValueError, match="needs the circuit's head scores"):
        heads_for("near-zero", no_scores, model, seed=0)


def test_forgetting_is_proxy_accuracy_before_minus_after():
    before = {"jav": {"accuracy": 0.30, "macro_f1": 0.20}, "ind": {"accuracy": 0.80, "macro_f1": 0.78}}
    after = {"jav": {"accuracy": 0.55, "macro_f1": 0.45}, "ind": {"accuracy": 0.65, "macro_f1": 0.60}}
    got = outcome(before, after, target="jav", proxy_lang="ind")
    assert got == pytest.approx(
        {
            "target_accuracy": 0.55,
            "target_macro_f1": 0.45,
            "proxy_accuracy_before": 0.80,
            "proxy_accuracy_after": 0.65,
            "forgetting": 0.15,
        }
    )
    assert outcome(after, before, "jav", "ind")["forgetting"] == pytest.approx(-0.15)
