"""`masked_training`: requires_grad and gradient hooks inside the block, restored after it."""

from __future__ import annotations

import pytest
import torch
from masking_helpers import batch, lm_loss, make_model

from circuit_transfer.masking import MaskPolicy, masked_training


@pytest.mark.parametrize("kind", ["gpt2-like", "llama-like"])
def test_inside_the_block_only_trainable_entries_get_gradients(kind):
    model = make_model(kind)
    with masked_training(model, [(0, 1), (1, 3)], MaskPolicy()) as tset:
        for name, p in model.named_parameters():
            assert p.requires_grad == bool(tset.masks[name].any()), name
        lm_loss(model, batch(0)).backward()
        for name, p in model.named_parameters():
            mask = tset.masks[name]
            if not mask.any():
                assert p.grad is None, name  # backward skipped it
            else:
                assert torch.equal(p.grad[mask == 0], torch.zeros_like(p.grad[mask == 0])), name
                assert p.grad[mask == 1].ne(0).any(), name


def _hook_counts(model):
    return {n: len(p._backward_hooks or {}) for n, p in model.named_parameters()}


def test_restores_requires_grad_and_removes_hooks():
    model = make_model("gpt2-like")
    model.embed.W_E.requires_grad_(False)  # an original setting that must come back as it was
    before_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    before_hooks = _hook_counts(model)
    with masked_training(model, [(0, 0)]):
        assert any(v > 0 for v in _hook_counts(model).values())
        assert not model.blocks[0].mlp.W_in.requires_grad
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before_flags
    assert _hook_counts(model) == before_hooks
    # after the block, gradients are full again
    lm_loss(model, batch(0)).backward()
    assert model.blocks[0].attn.W_Q.grad[1:].ne(0).any()
    assert model.blocks[0].mlp.W_in.grad is not None


def test_restores_on_exception():
    model = make_model("llama-like")
    before_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"):
        with masked_training(model, [(1, 2)]):
            lm_loss(model, batch(0)).backward()
            raise RuntimeError("boom")
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before_flags
    assert all(v == 0 for v in _hook_counts(model).values())


def test_bad_heads_leave_the_model_untouched():
    model = make_model("gpt2-like")
    with pytest.raises(ValueError, match="outside the model"):
        with masked_training(model, [(5, 0)]):
            pass
    assert all(p.requires_grad for p in model.parameters())
    assert all(v == 0 for v in _hook_counts(model).values())
