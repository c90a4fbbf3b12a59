"""Exact mean-ablation patching (`estimator="ablation"`) against per-head ablation done by hand with hooks."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuit_transfer.discovery import head_relevance, label_balanced_mean
from circuit_transfer.readout import TaskBatch


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=3, d_model=24, d_head=6, n_heads=4, d_mlp=48, d_vocab=30, n_ctx=16,
        act_fn="gelu", normalization_type="LN", seed=3, device="cpu",
    )  # fmt: skip
    return HookedTransformer(cfg).eval()


@pytest.fixture(scope="module")
def batch() -> TaskBatch:
    gen = torch.Generator().manual_seed(0)
    lengths = [5, 9, 7, 12, 6, 10, 8, 11, 5]
    tokens = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for i, n in enumerate(lengths):
        tokens[i, :n] = torch.randint(1, 30, (n,), generator=gen)
        mask[i, :n] = 1
    return TaskBatch(
        tokens=tokens,
        attention_mask=mask,
        final_pos=mask.sum(1) - 1,
        labels=torch.tensor([0, 1, 2] * 3),
        label_ids=torch.tensor([3, 7, 11]),
    )


def _by_hand(model, batch, mu, score):
    """One plain forward per head with hook_z[:, :, h] := mu[layer, h] at every position."""
    rows = torch.arange(len(batch))

    def readout(logits):
        return logits[rows, batch.final_pos][:, batch.label_ids]

    with torch.no_grad():
        full = readout(model(batch.tokens, attention_mask=batch.attention_mask))
        out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):

                def ablate(z, hook, head=head, layer=layer):
                    z[:, :, head] = mu[layer, head]
                    return z

                logits = model.run_with_hooks(
                    batch.tokens,
                    attention_mask=batch.attention_mask,
                    fwd_hooks=[(f"blocks.{layer}.attn.hook_z", ablate)],
                )
                beta = full - readout(logits)
                if score == "directional":
                    gold = torch.nn.functional.one_hot(batch.labels, 3).float()
                    w = gold - (1 - gold) / 2
                    out[layer, head] = (beta * w).sum(-1).mean()
                else:
                    out[layer, head] = (beta.abs().sum(-1) / (full - beta).abs().sum(-1)).mean()
    return out


@pytest.mark.parametrize("score", ["directional", "cdt-ratio"])
def test_equals_per_head_ablation_by_hand(model, batch, score):
    mu = label_balanced_mean(model, batch)
    expected = _by_hand(model, batch, mu, score)
    for chunk_size in (None, 1, 5 * len(batch)):  # one layer per pass, one head per pass, 5 heads
        scores = head_relevance(
            model, None, batch, "label-balanced", score=score, estimator="ablation", chunk_size=chunk_size
        )
        torch.testing.assert_close(scores.scores, expected, atol=1e-5, rtol=1e-5)
        assert scores.estimator == "ablation" and scores.n_examples == len(batch)
    assert expected.abs().max() > 1e-3  # the check is not vacuous


def test_a_head_at_its_baseline_scores_zero(model, batch):
    """A head whose output already equals mu everywhere has no ablation effect."""
    mu = label_balanced_mean(model, batch)
    scores = head_relevance(model, None, batch, mu, estimator="ablation")
    zero = head_relevance(model, None, batch, "zero", estimator="ablation")
    assert not torch.allclose(scores.scores, zero.scores)  # the baseline matters
    frozen = HookedTransformer(model.cfg)
    frozen.load_state_dict(model.state_dict())
    with torch.no_grad():
        frozen.blocks[1].attn.W_V[2].zero_()
        frozen.blocks[1].attn.b_V[2].zero_()
    z0 = head_relevance(frozen, None, batch, "zero", estimator="ablation")
    assert z0[(1, 2)] == pytest.approx(0.0, abs=1e-6)
