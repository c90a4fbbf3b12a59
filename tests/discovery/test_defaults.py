"""The documented defaults (docs/method.md, the docstrings) pinned, and the scores they name computed by hand.

A changed default silently changes every published number made without the flag, so each is
pinned here; the two that define a score (margin "mean", cdt-ratio over |gamma|) are also checked
by value.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from circuit_transfer.cdt import Rules, decompose_heads
from circuit_transfer.discovery import (
    cdt_label_beta,
    discover,
    faithfulness,
    faithfulness_curve,
    head_relevance,
    iterative_search,
    label_balanced_mean,
    make_baseline,
    task_weights,
)
from circuit_transfer.masking import MaskPolicy
from circuit_transfer.optim import OptimConfig
from circuit_transfer.readout import task_margin
from circuit_transfer.transfer import TRANSFER_TRAIN, TransferSpec

DOCUMENTED = {
    head_relevance: dict(
        baseline="label-balanced",
        score="directional",
        margin="mean",
        per_layer_norm=False,
        estimator="cdt",
        attention="decomposed",
        positions="pooled",
        bias="magnitude",
        stabilize=False,
    ),
    discover: dict(
        selection="top-k",
        baseline="label-balanced",
        positions="pooled",
        score="directional",
        estimator="cdt",
        margin="mean",
        seed=0,
        rounds=2,
        per_layer_norm=False,
        attention="decomposed",
        stabilize=False,
    ),
    faithfulness: dict(baseline="label-balanced", margin="mean", positions="pooled"),
    faithfulness_curve: dict(
        baseline="label-balanced", margin="mean", positions="pooled", n_random=5, seed=0
    ),
    iterative_search: dict(baseline="label-balanced", rounds=2, k_next=None, margin="mean"),
    make_baseline: dict(positions="pooled", within_class="tokens"),
    label_balanced_mean: dict(positions="pooled", within_class="tokens"),
    task_weights: dict(margin="mean"),
    task_margin: dict(kind="mean"),
    decompose_heads: dict(attention="decomposed", bias="magnitude", stabilize=False, baseline=None),
}


@pytest.mark.parametrize("fn", list(DOCUMENTED), ids=lambda f: f.__name__)
def test_documented_argument_defaults(fn):
    params = inspect.signature(fn).parameters
    assert {name: params[name].default for name in DOCUMENTED[fn]} == DOCUMENTED[fn]


def test_documented_config_defaults():
    assert Rules() == Rules(attention="decomposed", bias="magnitude", stabilize=False)
    assert MaskPolicy() == MaskPolicy(b_O="frozen", gqa_kv="any-query-head", norms="trainable")
    assert OptimConfig() == OptimConfig(
        lr=1e-3,
        weight_decay=0.1,
        betas=(0.9, 0.999),
        eps=1e-8,
        max_grad_norm=1.0,
        schedule="cosine",
        warmup_fraction=0.1,
    )
    spec = TransferSpec("ct-sft", "jav", 10)
    assert (spec.seed, spec.config, spec.policy) == (0, TRANSFER_TRAIN, MaskPolicy())
    assert (TRANSFER_TRAIN.epochs, TRANSFER_TRAIN.batch_size, TRANSFER_TRAIN.loss) == (5, 16, "label")


def test_default_margin_is_the_mean_over_the_other_labels(planted_model, planted_data):
    """By value: w = +1 on gold, -1/(n-1) elsewhere, and the default scores are the 'mean' scores."""
    logits = torch.tensor([[2.0, 5.0, -1.0], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 2])
    assert torch.equal(task_weights(logits, labels), torch.tensor([[1.0, -0.5, -0.5], [-0.5, -0.5, 1.0]]))
    assert torch.equal(task_margin(logits, labels), torch.tensor([2.0 - 2.0, 3.0 - 0.5]))
    # the "max" option fixes the runner-up label of the clean logits
    assert torch.equal(
        task_weights(logits, labels, "max"), torch.tensor([[1.0, -1.0, 0.0], [0.0, -1.0, 1.0]])
    )
    default = head_relevance(planted_model, None, planted_data)
    mean = head_relevance(planted_model, None, planted_data, margin="mean")
    mx = head_relevance(planted_model, None, planted_data, margin="max")
    assert torch.equal(default.scores, mean.scores) and default.margin == "mean"
    assert not torch.allclose(mean.scores, mx.scores, atol=1e-4)


def test_cdt_ratio_divides_by_the_irrelevant_part(planted_model, planted_data):
    """cdt-ratio = E_x[ ||beta_T||_1 / ||gamma_T||_1 ] over the label logits, gamma = full - beta."""
    base = make_baseline(planted_model, "label-balanced", planted_data)
    ratio = head_relevance(planted_model, None, planted_data, base, score="cdt-ratio")
    over_gamma, over_full = torch.zeros(2, 4), torch.zeros(2, 4)
    for layer in range(2):
        beta, full = cdt_label_beta(planted_model, planted_data, base, [(layer, h) for h in range(4)])
        over_gamma[layer] = (beta.abs().sum(-1) / (full - beta).abs().sum(-1)).mean(-1)
        over_full[layer] = (beta.abs().sum(-1) / full.abs().sum(-1)).mean(-1)
    torch.testing.assert_close(ratio.scores, over_gamma, rtol=1e-5, atol=1e-7)
    # the planted heads carry a large share of the label logits: the two denominators differ
    assert (over_gamma - over_full)[1, 2] > 0.05
