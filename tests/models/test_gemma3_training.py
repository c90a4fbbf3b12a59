"""A masked training step on the real Gemma 3 270M: every masked entry stays bit-identical.

Gemma 3 has what the tiny masking tests do not all have at once: one KV head shared by the four
query heads, per-head QK-norm, sandwich norms and tied (but separately stored) embeddings.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F

from circuit_transfer.data import load_split
from circuit_transfer.masking import masked_training
from circuit_transfer.models.logits import label_scores
from circuit_transfer.optim import MaskedAdamW, OptimConfig
from circuit_transfer.readout import encode
from circuit_transfer.tasks import get_task

pytestmark = pytest.mark.slow

HEADS = [(2, 1), (5, 3), (11, 0)]  # local, global, global layers


def _digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes: bit-identity without keeping a copy of a 671 MB embedding."""
    return hashlib.sha256(t.detach().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def test_masked_step_keeps_masked_entries_bit_identical(gemma3, data_dir):
    model = gemma3
    task = get_task("nusax-senti")
    rows = sorted(
        load_split("nusax-senti", "indonesian", "train", data_dir)[:30], key=lambda ex: len(ex.text)
    )
    batch = encode(model.tokenizer, task, rows[:4])
    with masked_training(model, HEADS) as tset:
        partial = set(tset.partial_tensors)
        # small tensors with trainable entries are copied; the rest is checked by its digest
        copies = {n: p.detach().clone() for n, p in model.named_parameters() if tset.per_tensor[n][0] > 0}
        digests = {n: _digest(p) for n, p in model.named_parameters() if n not in copies}
        after = dict(model.named_parameters())
        try:
            optimizer = MaskedAdamW(
                model, OptimConfig(lr=1e-3, weight_decay=0.1), total_steps=1, masks=tset.masks
            )
            loss = F.cross_entropy(label_scores(model, batch).float(), batch.labels)
            loss.backward()
            optimizer.step()
            for name, before in copies.items():
                frozen = tset.masks[name] == 0
                now = after[name].detach()
                assert torch.equal(now[frozen].view(torch.int32), before[frozen].view(torch.int32)), name
                assert now[~frozen].ne(before[~frozen]).any(), f"{name}: no trainable entry moved"
            for name, digest in digests.items():
                assert _digest(after[name]) == digest, name
            assert {"blocks.5.attn.W_Q", "blocks.11.attn.W_O"} <= partial
            assert tset.per_tensor["embed.W_E"][0] == 0 and tset.per_tensor["blocks.2.mlp.W_in"][0] == 0
            assert 0 < tset.fraction < 0.01
        finally:  # the model is shared by the session: put every changed tensor back
            with torch.no_grad():
                for name, before in copies.items():
                    after[name].copy_(before)
            model.zero_grad(set_to_none=True)
