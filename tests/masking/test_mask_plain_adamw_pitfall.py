"""The pitfall is real: torch's AdamW with the same hooks moves masked entries (weight decay)."""

from __future__ import annotations

import torch
from masking_helpers import batch, lm_loss, make_model

from circuit_transfer.masking import masked_training


def test_plain_adamw_with_weight_decay_moves_masked_heads():
    model = make_model("gpt2-like")
    w_q_before = model.blocks[0].attn.W_Q.detach().clone()
    with masked_training(model, [(0, 1)]) as tset:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
        for step in range(3):
            lm_loss(model, batch(step)).backward()
            assert model.blocks[0].attn.W_Q.grad[0].eq(0).all()  # the hooks did zero the gradient...
            opt.step()
            opt.zero_grad(set_to_none=True)
    frozen = tset.masks["blocks.0.attn.W_Q"] == 0
    # ...and yet every masked entry of W_Q moved: decoupled decay shrinks the whole tensor
    assert model.blocks[0].attn.W_Q.detach()[frozen].ne(w_q_before[frozen]).all()
