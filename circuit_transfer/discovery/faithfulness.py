"""Faithfulness: how much of the task a circuit keeps when every other head is mean-ablated.

Mean ablation replaces a head's `hook_z` by the baseline mu at every position (the same mu as
discovery; a from-end baseline is laid onto each prompt). The task metric is the mean margin
(docs/method.md §2) and, reported beside it, accuracy.

    faithfulness(C) = (m(C) - m(empty)) / (m(full) - m(empty))

m(full) is the unablated model and m(empty) ablates every head; both run through the same code
as m(C), so the full circuit scores exactly 1 and the empty one exactly 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from circuit_transfer.discovery.baseline import Baseline, Examples, Positions, batches_for, make_baseline
from circuit_transfer.discovery.circuit import Circuit
from circuit_transfer.discovery.relevance import HeadScores
from circuit_transfer.discovery.selection import resolve_k, select_random, select_top_k
from circuit_transfer.models.backend import Model
from circuit_transfer.models.logits import label_scores
from circuit_transfer.readout import Margin, TaskBatch, task_margin
from circuit_transfer.tasks import Task


def ablated_label_logits(
    model: Model, batch: TaskBatch, keep: Bool[Tensor, "n_layers n_heads"], baseline: Baseline
) -> Float[Tensor, "batch n_labels"]:
    """Label logits with every head not in `keep` mean-ablated (hook_z := mu at all positions)."""
    device = model.cfg.device
    batch = batch.to(device)
    keep = keep.to(device)
    hooks = []
    if not bool(keep.all()):
        mu = baseline.per_example(batch).to(device)  # batch L H pos dh
        for layer in range(model.cfg.n_layers):
            if bool(keep[layer].all()):
                continue

            def patch(z, hook, layer=layer):
                ref = mu[:, layer].permute(0, 2, 1, 3).to(z.dtype)  # batch pos H dh
                return torch.where(keep[layer][None, None, :, None], z, ref)

            hooks.append((f"blocks.{layer}.attn.hook_z", patch))
    with torch.no_grad():
        return label_scores(model, batch, fwd_hooks=hooks).float()


@dataclass(frozen=True)
class TaskMetric:
    """Mean margin and accuracy of a (possibly ablated) model on a set of examples."""

    margin: float
    accuracy: float


def ablated_metric(
    model: Model,
    batches: Sequence[TaskBatch],
    keep: Bool[Tensor, "n_layers n_heads"],
    baseline: Baseline,
    margin: Margin = "mean",
) -> TaskMetric:
    """Mean margin and accuracy with the heads outside `keep` mean-ablated."""
    total_m, correct, n = 0.0, 0, 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            scores = ablated_label_logits(model, batch, keep, baseline)
            labels = batch.labels.to(scores.device)
            total_m += task_margin(scores, labels, margin).double().sum().item()
            correct += int((scores.argmax(-1) == labels).sum())
            n += len(batch)
    finally:
        model.train(was_training)
    return TaskMetric(margin=total_m / n, accuracy=correct / n)


@dataclass(frozen=True)
class Faithfulness:
    """Faithfulness of one circuit, with the metrics it is computed from."""

    faithfulness: float
    n_circuit_heads: int
    circuit: TaskMetric
    full: TaskMetric
    empty: TaskMetric
    n_examples: int
    baseline: str
    margin: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _normalise(m_c: float, m_full: float, m_empty: float) -> float:
    gap = m_full - m_empty
    if gap == 0:
        return math.nan
    return (m_c - m_empty) / gap


def faithfulness(
    model: Model,
    task: Task | None,
    circuit: Circuit,
    examples: Examples,
    baseline: str | Baseline | Tensor = "label-balanced",
    margin: Margin = "mean",
    positions: Positions = "pooled",
    batch_size: int = 16,
    max_len: int = 128,
) -> Faithfulness:
    """Faithfulness of `circuit` on `examples` (normalised mean margin; see module doc)."""
    circuit.validate(model)
    base = make_baseline(
        model, baseline, examples, task, positions=positions, batch_size=batch_size, max_len=max_len
    )
    batches = batches_for(model, task, examples, batch_size, max_len)
    cfg = model.cfg
    keep_all = torch.ones(cfg.n_layers, cfg.n_heads, dtype=torch.bool)
    m_full = ablated_metric(model, batches, keep_all, base, margin)
    m_empty = ablated_metric(model, batches, ~keep_all, base, margin)
    m_c = ablated_metric(model, batches, circuit.mask(), base, margin)
    return Faithfulness(
        faithfulness=_normalise(m_c.margin, m_full.margin, m_empty.margin),
        n_circuit_heads=len(circuit),
        circuit=m_c,
        full=m_full,
        empty=m_empty,
        n_examples=sum(len(b) for b in batches),
        baseline=base.name,
        margin=margin,
    )


@dataclass(frozen=True)
class FaithfulnessCurve:
    """Faithfulness of the top-k circuits and of random circuits of the same sizes.

    `random[i]` holds the `n_random` seeded random circuits' faithfulness at `sizes[i]`, and
    `random_heads[i]` those circuits' heads (so a reader can check they are distinct draws).
    """

    sizes: list[int]
    top_k: list[float]
    top_k_accuracy: list[float]
    random: list[list[float]]
    random_mean: list[float]
    random_std: list[float]
    random_median: list[float]
    full: TaskMetric
    empty: TaskMetric
    n_random: int
    seed: int
    n_examples: int
    baseline: str
    margin: str
    scores: dict[str, Any] = field(default_factory=dict)
    random_heads: list[list[list[list[int]]]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[dict[str, Any]]:
        """One row per size, for tables."""
        return [
            {
                "k": k,
                "top-k": self.top_k[i],
                "random median": self.random_median[i],
                "random mean": self.random_mean[i],
                "random std": self.random_std[i],
                "top-k accuracy": self.top_k_accuracy[i],
            }
            for i, k in enumerate(self.sizes)
        ]


def distinct_random_circuits(n_layers: int, n_heads: int, k: int, n: int, seed: int = 0) -> list[Circuit]:
    """`n` seeded random circuits of `k` heads, pairwise distinct as far as C(n_heads_total, k) allows.

    Draw j is `select_random(..., seed + t)` for the smallest t that gives a head set not drawn
    before; once every possible set has been drawn (e.g. k = all heads), repeats are kept, so a
    curve still holds `n` values per size. Without this, two seeds drawing the same set would make
    the random spread look smaller than it is.
    """
    n_possible = math.comb(n_layers * n_heads, k)
    drawn: list[Circuit] = []
    seen: set[tuple] = set()
    for s in range(seed, seed + 1000 * n):
        if len(drawn) == n:
            break
        circuit = select_random(n_layers, n_heads, k, s)
        if circuit.heads in seen and len(seen) < n_possible:
            continue
        seen.add(circuit.heads)
        drawn.append(circuit)
    return drawn


def faithfulness_curve(
    model: Model,
    task: Task | None,
    scores: HeadScores,
    examples: Examples,
    baseline: str | Baseline | Tensor = "label-balanced",
    sizes: Sequence[int | float] | None = None,
    n_random: int = 5,
    seed: int = 0,
    margin: Margin = "mean",
    positions: Positions = "pooled",
    batch_size: int = 16,
    max_len: int = 128,
) -> FaithfulnessCurve:
    """Faithfulness of top-k circuits (from `scores`) against `n_random` random circuits per size.

    Args:
        sizes: circuit sizes (counts or fractions); default 1, 2, 4, ... up to all heads.
        seed: the random circuits of a size are the first `n_random` distinct draws of
            `select_random` with seeds `seed, seed + 1, ...` (see `distinct_random_circuits`).
    """
    cfg = model.cfg
    n_total = cfg.n_layers * cfg.n_heads
    if sizes is None:
        sizes = sorted({min(2**i, n_total) for i in range(n_total.bit_length() + 1)})
    ks = [resolve_k(s, cfg.n_layers, cfg.n_heads) for s in sizes]
    base = make_baseline(
        model, baseline, examples, task, positions=positions, batch_size=batch_size, max_len=max_len
    )
    batches = batches_for(model, task, examples, batch_size, max_len)
    keep_all = torch.ones(cfg.n_layers, cfg.n_heads, dtype=torch.bool)
    m_full = ablated_metric(model, batches, keep_all, base, margin)
    m_empty = ablated_metric(model, batches, ~keep_all, base, margin)

    def faith(circuit: Circuit) -> tuple[float, float]:
        m = ablated_metric(model, batches, circuit.mask(), base, margin)
        return _normalise(m.margin, m_full.margin, m_empty.margin), m.accuracy

    top, top_acc, rand, rand_heads = [], [], [], []
    for k in ks:
        f, acc = faith(select_top_k(scores, k))
        top.append(f)
        top_acc.append(acc)
        drawn = distinct_random_circuits(cfg.n_layers, cfg.n_heads, k, n_random, seed)
        rand.append([faith(c)[0] for c in drawn])
        rand_heads.append([[list(h) for h in c.heads] for c in drawn])
    return FaithfulnessCurve(
        sizes=ks,
        top_k=top,
        top_k_accuracy=top_acc,
        random=rand,
        random_mean=[statistics.fmean(r) if r else math.nan for r in rand],
        random_std=[statistics.stdev(r) if len(r) > 1 else 0.0 for r in rand],
        random_median=[statistics.median(r) if r else math.nan for r in rand],
        full=m_full,
        empty=m_empty,
        n_random=n_random,
        seed=seed,
        n_examples=sum(len(b) for b in batches),
        baseline=base.name,
        margin=margin,
        scores={"score": scores.score, "estimator": scores.estimator, "baseline": scores.baseline},
        random_heads=rand_heads,
    )
