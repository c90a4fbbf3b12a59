"""Baselines: the label-balanced mean against a hand computation on an imbalanced set."""

from __future__ import annotations

import pytest
import torch
from discovery_planted import planted_batch

from circuit_transfer.discovery import (
    Baseline,
    label_balanced_mean,
    lay_out,
    make_baseline,
    mean_baseline,
    zero_baseline,
)


def _z(model, batch):
    _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask)
    return torch.stack(
        [cache[f"blocks.{ly}.attn.hook_z"] for ly in range(model.cfg.n_layers)], 2
    )  # b p L H d


def test_label_balanced_mean_matches_hand_computation_on_imbalanced_set(planted_model):
    batch = planted_batch([6, 2, 1], seed=3)  # imbalanced on purpose
    z = _z(planted_model, batch).double()
    class_means, class_example_means = [], []
    for c in range(3):
        tokens = [
            z[i, p]
            for i in range(len(batch))
            if batch.labels[i] == c
            for p in range(int(batch.final_pos[i]) + 1)
        ]
        class_means.append(torch.stack(tokens).mean(0))
        per_ex = [
            z[i, : int(batch.final_pos[i]) + 1].mean(0) for i in range(len(batch)) if batch.labels[i] == c
        ]
        class_example_means.append(torch.stack(per_ex).mean(0))
    expected = torch.stack(class_means).mean(0).permute(0, 1, 2).float()  # L H d
    got = label_balanced_mean(planted_model, batch)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    got_ex = label_balanced_mean(planted_model, batch, within_class="examples")
    torch.testing.assert_close(got_ex, torch.stack(class_example_means).mean(0).float(), atol=1e-6, rtol=1e-5)
    # each class weighted equally, not each token: differs from the plain mean on this set
    all_tokens = torch.cat([z[i, : int(batch.final_pos[i]) + 1] for i in range(len(batch))]).mean(0).float()
    torch.testing.assert_close(mean_baseline(planted_model, batch), all_tokens, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(got, all_tokens, atol=1e-3)


def test_from_end_rows_and_fallback(planted_model):
    batch = planted_batch([3, 3, 3], seed=1)
    z = _z(planted_model, batch).double()
    mu = label_balanced_mean(planted_model, batch, positions="from-end")
    pooled = label_balanced_mean(planted_model, batch)
    n_rows = int(batch.final_pos.max()) + 1
    assert mu.shape == (2, 4, n_rows, 8)
    for j in range(n_rows):
        per_class = []
        for c in range(3):
            rows = [
                z[i, int(batch.final_pos[i]) - j]
                for i in range(len(batch))
                if batch.labels[i] == c and batch.final_pos[i] >= j
            ]
            per_class.append(torch.stack(rows).mean(0) if rows else None)
        if all(r is not None for r in per_class):
            torch.testing.assert_close(
                mu[:, :, j], torch.stack(per_class).mean(0).float(), atol=1e-6, rtol=1e-5
            )
        else:  # some label never reaches this far back: not balanced, pooled fallback
            torch.testing.assert_close(mu[:, :, j], pooled)


def test_lay_out_aligns_final_token_and_pads_with_pooled():
    mu = torch.arange(2 * 1 * 3 * 1, dtype=torch.float).reshape(2, 1, 3, 1)  # rows 0..2
    pooled = torch.full((2, 1, 1), -1.0)
    laid = lay_out(mu, torch.tensor([3, 1]), width=5, pooled=pooled)  # batch L H pos d
    assert laid.shape == (2, 2, 1, 5, 1)
    assert laid[0, 0, 0, :, 0].tolist() == [-1.0, 2.0, 1.0, 0.0, -1.0]  # row 0 on the last token
    assert laid[1, 0, 0, :, 0].tolist() == [1.0, 0.0, -1.0, -1.0, -1.0]


def test_missing_label_and_empty_set_are_refused(planted_model):
    batch = planted_batch([4, 0, 4])
    with pytest.raises(ValueError, match=r"label-balanced mean impossible: label '1' .* use baseline='mean'"):
        label_balanced_mean(planted_model, batch)
    with pytest.raises(ValueError, match="discovery set is empty"):
        label_balanced_mean(planted_model, [])
    assert mean_baseline(planted_model, batch).shape == (2, 4, 8)  # the plain mean is still possible


def test_zero_and_custom_baselines(planted_model):
    assert zero_baseline(planted_model).abs().sum() == 0
    b = make_baseline(planted_model, "zero")
    assert (b.kind, b.positions) == ("zero", "pooled")
    custom = make_baseline(planted_model, torch.ones(2, 4, 5, 8))
    assert isinstance(custom, Baseline) and custom.positions == "from-end"
    with pytest.raises(ValueError, match="does not fit this model"):
        make_baseline(planted_model, torch.ones(3, 4, 8))
    with pytest.raises(ValueError, match="Unknown baseline"):
        make_baseline(planted_model, "median", planted_batch(2))
