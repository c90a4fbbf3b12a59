"""Which entries a head set makes trainable, per policy; counts; bad input."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from masking_helpers import make_model

from circuit_transfer.masking import (
    FULL,
    MaskPolicy,
    TrainableSet,
    full_masks,
    head_grad_masks,
    ln_only_masks,
    trainable_set,
)

NORM_NAMES = {
    "gpt2-like": [
        "blocks.0.ln1.w",
        "blocks.0.ln1.b",
        "blocks.0.ln2.w",
        "blocks.0.ln2.b",
        "blocks.1.ln1.w",
        "blocks.1.ln1.b",
        "blocks.1.ln2.w",
        "blocks.1.ln2.b",
        "ln_final.w",
        "ln_final.b",
    ],
    "llama-like": ["blocks.0.ln1.w", "blocks.0.ln2.w", "blocks.1.ln1.w", "blocks.1.ln2.w", "ln_final.w"],
}


@pytest.mark.parametrize("kind", ["gpt2-like", "llama-like"])
def test_masks_cover_every_parameter_with_its_shape_dtype_device(kind):
    model = make_model(kind)
    masks = head_grad_masks(model, [(0, 1)])
    params = dict(model.named_parameters())
    assert list(masks) == list(params)
    for name, mask in masks.items():
        assert mask.shape == params[name].shape and mask.dtype == params[name].dtype
        assert mask.device == params[name].device and not mask.requires_grad
        assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_mha_head_slices_and_shared_tensors():
    model = make_model("gpt2-like")
    masks = head_grad_masks(model, [(0, 1), (1, 2), (1, 3)])
    for layer, heads in ((0, [1]), (1, [2, 3])):
        for attr in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"):
            mask = masks[f"blocks.{layer}.attn.{attr}"]
            for h in range(4):
                assert bool(mask[h].eq(1 if h in heads else 0).all()), (layer, attr, h)
        assert not masks[f"blocks.{layer}.attn.b_O"].any()  # shared: frozen by default
    for name in NORM_NAMES["gpt2-like"]:
        assert masks[name].all()
    frozen = [n for n in masks if ".attn." not in n and n not in NORM_NAMES["gpt2-like"]]
    assert set(frozen) == {"embed.W_E", "pos_embed.W_pos", "unembed.W_U", "unembed.b_U"} | {
        f"blocks.{layer}.mlp.{a}" for layer in (0, 1) for a in ("W_in", "b_in", "W_out", "b_out")
    }
    for name in frozen:
        assert not masks[name].any(), name
    # hand count: 3 heads x (3 x 32x8 + 8x32 + 3 x 8) + norms 10 x 32
    assert trainable_set(model, [(0, 1), (1, 2), (1, 3)]).n_trainable == 3 * (4 * 256 + 24) + 10 * 32


def test_gqa_kv_groups_follow_any_query_head():
    model = make_model("llama-like")  # 4 query heads, 2 KV groups: {0,1} -> 0, {2,3} -> 1
    masks = head_grad_masks(model, [(0, 1), (1, 2), (1, 3)])
    for attr in ("_W_K", "_W_V", "_b_K", "_b_V"):
        assert masks[f"blocks.0.attn.{attr}"][0].all() and not masks[f"blocks.0.attn.{attr}"][1].any()
        assert masks[f"blocks.1.attn.{attr}"][1].all() and not masks[f"blocks.1.attn.{attr}"][0].any()
    for attr in ("W_Q", "W_O", "b_Q"):
        assert (
            masks[f"blocks.0.attn.{attr}"][1].all()
            and masks[f"blocks.0.attn.{attr}"].sum() == masks[f"blocks.0.attn.{attr}"][1].numel()
        )
    never = head_grad_masks(model, [(0, 1), (1, 2)], MaskPolicy(gqa_kv="never"))
    for layer in (0, 1):
        for attr in ("_W_K", "_W_V", "_b_K", "_b_V"):
            assert not never[f"blocks.{layer}.attn.{attr}"].any()
    # hand count, default policy: per query head W_Q, W_O, b_Q = 2*256 + 8; per KV group 2*256 + 16
    assert trainable_set(model, [(0, 1), (1, 2), (1, 3)]).n_trainable == 3 * 520 + 2 * 528 + 5 * 32


def test_b_O_any_head_policy():
    model = make_model("gpt2-like")
    masks = head_grad_masks(model, [(1, 0)], MaskPolicy(b_O="any-head"))
    assert masks["blocks.1.attn.b_O"].all() and not masks["blocks.0.attn.b_O"].any()


def test_norms_frozen_policy_and_empty_head_set():
    model = make_model("llama-like")
    masks = head_grad_masks(model, [(0, 0)], MaskPolicy(norms="frozen"))
    assert not any(masks[n].any() for n in NORM_NAMES["llama-like"])
    nothing = head_grad_masks(model, [], MaskPolicy(norms="frozen"))
    assert not any(m.any() for m in nothing.values())


@pytest.mark.parametrize("kind", ["gpt2-like", "llama-like"])
def test_full_and_ln_only(kind):
    model = make_model(kind)
    full = trainable_set(model, FULL)
    assert all(m.all() for m in full_masks(model).values())
    assert (
        full.n_trainable == full.n_total == sum(p.numel() for p in model.parameters())
        and full.fraction == 1.0
    )
    ln = ln_only_masks(model)
    assert {n for n, m in ln.items() if m.any()} == set(NORM_NAMES[kind])
    assert all(ln[n].all() for n in NORM_NAMES[kind])


def test_heads_from_circuit_like_object_and_other_int_types():
    @dataclass
    class Circuit:
        heads: list

    model = make_model("gpt2-like")
    expected = head_grad_masks(model, [(0, 1), (1, 3)])
    for spec in (
        Circuit(heads=[(1, 3), (0, 1), (0, 1)]),
        [(torch.tensor(0), torch.tensor(1)), [1, 3]],
        (h for h in [(0, 1), (1, 3)]),
    ):
        got = trainable_set(model, spec)
        assert got.heads == ((0, 1), (1, 3))
        assert all(torch.equal(got.masks[n], expected[n]) for n in expected)


def test_trainable_set_summary_and_repr():
    model = make_model("gpt2-like")
    tset = trainable_set(model, [(0, 1), (1, 2)])
    assert isinstance(tset, TrainableSet)
    assert tset.n_total == sum(p.numel() for p in model.parameters())
    assert tset.fraction == pytest.approx(tset.n_trainable / tset.n_total)
    assert tset.per_tensor["blocks.0.attn.W_Q"] == (256, 1024)
    assert set(tset.partial_tensors) == {
        f"blocks.{layer}.attn.{a}"
        for layer in (0, 1)
        for a in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")
    }
    text = repr(tset)
    assert f"{tset.n_trainable:,} of {tset.n_total:,}" in text and "L0H1" in text and "L1H2" in text
    assert "| blocks.0.attn.W_Q | 256 | 1,024 | 25.00% |" in tset.table()


@pytest.mark.parametrize(
    "heads, message",
    [
        ([(5, 0)], r"head \(layer 5, head 0\) is outside the model: 2 layers x 4 heads"),
        ([(0, 4)], r"head \(layer 0, head 4\) is outside the model: 2 layers x 4 heads"),
        ([(-1, 0)], r"outside the model"),
        ([(0,)], r"not a \(layer, head\) pair"),
        ([(0.0, 1)], r"not a pair of integers"),
        ([(True, 1)], r"not a pair of integers"),
        ("all", r"unknown head spec"),
    ],
)
def test_bad_heads_raise_naming_the_model_shape(heads, message):
    with pytest.raises(ValueError, match=message):
        head_grad_masks(make_model("gpt2-like"), heads)


def test_bad_head_message_mentions_kv_heads_for_gqa():
    with pytest.raises(ValueError, match=r"2 layers x 4 heads, 2 KV heads"):
        head_grad_masks(make_model("llama-like"), [(5, 0)])


def test_policy_values_are_validated():
    # ValueError from __post_init__; under the test suite's runtime type checking the Literal
    # annotation already refuses it (jaxtyping.TypeCheckError, a TypeError).
    with pytest.raises((ValueError, TypeError), match="b_O"):
        MaskPolicy(b_O="sometimes")
