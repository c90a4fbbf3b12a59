"""MaskedAdamW on its own: equals torch's AdamW when nothing is masked; schedule; state; errors."""

from __future__ import annotations

import pytest
import torch
from masking_helpers import batch, lm_loss, make_model

from circuit_transfer.masking import FULL, head_grad_masks, masked_training
from circuit_transfer.optim import MaskedAdamW, OptimConfig, lr_multiplier


def test_unmasked_equals_torch_adamw_bit_for_bit():
    """Cross-implementation: with every entry trainable, our decay-then-Adam is torch's AdamW."""
    ours, ref = make_model("gpt2-like"), make_model("gpt2-like")
    cfg = OptimConfig(lr=1e-2, weight_decay=0.1, max_grad_norm=None, schedule="constant", warmup_fraction=0.0)
    opt = MaskedAdamW(ours, cfg, total_steps=4)
    torch_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1, betas=cfg.betas, eps=cfg.eps)
    for step in range(4):
        lm_loss(ours, batch(step)).backward()
        opt.step()
        lm_loss(ref, batch(step)).backward()
        torch_opt.step()
        torch_opt.zero_grad()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        assert torch.equal(a, b), name


def test_schedules():
    mults = [lr_multiplier(s, 20, "cosine", 0.1) for s in range(20)]
    assert mults[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])  # 2 warm-up steps
    assert all(a >= b for a, b in zip(mults[2:], mults[3:])) and 0 < mults[-1] < 0.01
    lin = [lr_multiplier(s, 10, "linear", 0.0) for s in range(10)]
    assert lin == pytest.approx([1 - s / 10 for s in range(10)])
    assert lr_multiplier(7, 10, "constant", 0.2) == 1.0
    assert lr_multiplier(50, 10, "cosine", 0.1) == pytest.approx(0.0)


def test_lr_follows_the_schedule_and_state_round_trips():
    model = make_model("gpt2-like")
    with masked_training(model, [(0, 0)]) as tset:
        opt = MaskedAdamW(model, OptimConfig(lr=1e-2), total_steps=10, masks=tset.masks)
        assert opt.optimizer_state_bytes() == 0
        for step in range(3):
            assert opt.lr == pytest.approx(1e-2 * lr_multiplier(step, 10, "cosine", 0.1))
            lm_loss(model, batch(step)).backward()
            opt.step()
        assert opt.step_count == 3
        n_opt = sum(p.numel() for p in opt.params)
        # two fp32 moments per optimised entry, plus one scalar step counter per parameter
        assert (
            opt.optimizer_state_bytes()
            == 8 * n_opt + 4 * len(opt.params)
            == opt.expected_state_bytes() + 4 * len(opt.params)
        )
        again = MaskedAdamW(model, OptimConfig(lr=1e-2), total_steps=10, masks=tset.masks)
        again.load_state_dict(opt.state_dict())
        assert again.step_count == 3 and again.lr == opt.lr
        assert again.optimizer_state_bytes() == opt.optimizer_state_bytes()


def test_head_sparse_optimizer_holds_state_only_for_trainable_tensors():
    model = make_model("gpt2-like")
    with masked_training(model, [(1, 0)]) as tset:
        opt = MaskedAdamW(model, total_steps=2, masks=tset.masks)
        assert set(opt.names) == set(tset.trainable_tensors)
        lm_loss(model, batch(0)).backward()
        opt.step()
    with masked_training(model, FULL) as full:
        full_opt = MaskedAdamW(model, total_steps=2, masks=full.masks)
        lm_loss(model, batch(0)).backward()
        full_opt.step()
    assert opt.optimizer_state_bytes() < 0.5 * full_opt.optimizer_state_bytes()


def test_state_for_another_parameter_set_is_refused():
    model = make_model("gpt2-like")
    with masked_training(model, [(0, 0)]) as tset:
        opt = MaskedAdamW(model, total_steps=2, masks=tset.masks)
    with masked_training(model, FULL) as full:
        other = MaskedAdamW(model, total_steps=2, masks=full.masks)
        with pytest.raises(ValueError, match="different parameter set"):
            other.load_state_dict(opt.state_dict())


def test_trainable_entries_without_requires_grad_are_an_error():
    model = make_model("gpt2-like")
    masks = head_grad_masks(model, [(0, 0)])
    model.blocks[0].attn.W_Q.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad=False"):
        MaskedAdamW(model, total_steps=2, masks=masks)


DECAY = OptimConfig(lr=1e-2, weight_decay=0.5, max_grad_norm=None, schedule="constant", warmup_fraction=0.0)


def _partial_loss(model):
    """A loss that reaches only layer 1's W_Q and ln_final.w, plus a zero-gradient path to W_V."""
    attn = model.blocks[1].attn
    return attn.W_Q.pow(2).sum() + model.ln_final.w.pow(2).sum() + 0.0 * attn.W_V.sum()


def test_a_trainable_tensor_without_gradient_this_step_is_not_decayed():
    """AdamW semantics (optim.py): a tensor backward did not reach (`.grad is None`) is neither
    decayed nor moved; one whose gradient is zero is decayed, as torch's AdamW does."""
    model = make_model("gpt2-like")
    with masked_training(model, [(0, 1), (1, 2)]) as tset:
        opt = MaskedAdamW(model, DECAY, total_steps=3, masks=tset.masks)
        for step in range(3):
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            _partial_loss(model).backward()
            opt.step()
            moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
            assert moved == {"blocks.1.attn.W_Q", "blocks.1.attn.W_V", "ln_final.w"}, step
            assert "blocks.0.attn.W_Q" in opt.names and "blocks.1.ln1.w" in opt.names  # trainable


def test_steps_with_missing_and_zero_gradients_equal_torch_adamw_bit_for_bit():
    ours, ref = make_model("gpt2-like"), make_model("gpt2-like")
    opt = MaskedAdamW(ours, DECAY, total_steps=3)
    torch_opt = torch.optim.AdamW(
        ref.parameters(), lr=1e-2, weight_decay=0.5, betas=DECAY.betas, eps=DECAY.eps
    )
    for step in range(3):
        (lm_loss(ours, batch(step)) if step == 0 else _partial_loss(ours)).backward()
        opt.step()
        (lm_loss(ref, batch(step)) if step == 0 else _partial_loss(ref)).backward()
        torch_opt.step()
        torch_opt.zero_grad()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        assert torch.equal(a, b), name
