"""The controls: full fine-tuning changes everything, ln-only only the norms, nothing changes nothing."""

from __future__ import annotations

import pytest
import torch
from masking_helpers import CONFIGS, batch, is_norm_param, lm_loss, make_model, train_with_resume

from circuit_transfer.masking import FULL, MaskPolicy, masked_training
from circuit_transfer.optim import MaskedAdamW


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_full_changes_every_entry(kind, tmp_path):
    before, model, tset = train_with_resume(kind, FULL, MaskPolicy(), tmp_path, steps=4, resume_at=2)
    assert tset.fraction == 1.0 and tset.partial_tensors == []
    for name, p in model.named_parameters():
        assert p.detach().ne(before[name]).all(), name


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_ln_only_changes_only_the_norms(kind, tmp_path):
    before, model, tset = train_with_resume(kind, [], MaskPolicy(), tmp_path, steps=4, resume_at=2)
    for name, p in model.named_parameters():
        is_norm = is_norm_param(name)
        assert p.detach().ne(before[name]).all() if is_norm else torch.equal(p.detach(), before[name]), name
    assert tset.n_trainable == sum(p.numel() for n, p in model.named_parameters() if is_norm_param(n))


def test_no_heads_and_frozen_norms_train_nothing():
    model = make_model("llama-like")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with masked_training(model, [], MaskPolicy(norms="frozen")) as tset:
        assert tset.n_trainable == 0
        assert not any(p.requires_grad for p in model.parameters())
        with pytest.raises(ValueError, match="nothing to optimise"):
            MaskedAdamW(model, total_steps=3, masks=tset.masks)
        with torch.no_grad():
            lm_loss(model, batch(0))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
