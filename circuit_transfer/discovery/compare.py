"""Comparing circuits and head scores across languages (docs/method.md §6).

- Jaccard: |A ∩ B| / |A ∪ B| of the head sets.
- Overlap at k: |top_k(A) ∩ top_k(B)| / k, where top_k is taken from the scores when an object has
  them and from the circuit's own heads otherwise (k defaults to the smaller circuit's size).
- Spearman: rank correlation (average ranks for ties) of the two score vectors over all heads,
  when both sides carry scores.

A `HeadScores` compares as its top-k heads (k as above; default 10% of the heads, at least 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuit_transfer.discovery.circuit import Circuit
from circuit_transfer.discovery.relevance import Head, HeadScores, head_name
from circuit_transfer.discovery.selection import _ranked

Comparable = Circuit | HeadScores


def rankdata(x: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    x = x.double()
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    n = len(x)
    i = 0
    while i < n:
        j = i
        while j + 1 < n and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Float[Tensor, "..."], b: Float[Tensor, "..."]) -> float:
    """Spearman's rho of two equally shaped tensors (flattened); nan if either is constant."""
    if a.shape != b.shape:
        raise ValueError(f"cannot correlate scores of shapes {tuple(a.shape)} and {tuple(b.shape)}.")
    ra, rb = rankdata(a.flatten()), rankdata(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.pow(2).sum() * rb.pow(2).sum()).sqrt()
    return float("nan") if denom == 0 else float((ra * rb).sum() / denom)


@dataclass(frozen=True)
class CircuitComparison:
    """How two circuits (or score vectors) of the same model agree."""

    jaccard: float
    overlap_at_k: float
    k: int
    spearman: float | None
    n_a: int
    n_b: int
    shared: list[str]
    only_a: list[str]
    only_b: list[str]
    a: str
    b: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shape(x: Comparable) -> tuple[int, int]:
    return x.n_layers, x.n_heads


def _scores(x: Comparable) -> HeadScores | None:
    return x if isinstance(x, HeadScores) else x.scores


def _top(x: Comparable, k: int) -> list[Head]:
    s = _scores(x)
    if s is not None:
        return _ranked(s.scores)[:k]
    return list(x.heads)[:k]


def _label(x: Comparable) -> str:
    kind = "scores" if isinstance(x, HeadScores) else f"{x.method} circuit"
    return f"{kind} {x.task}/{x.lang}".strip()


def compare(a: Comparable, b: Comparable, k: int | None = None) -> CircuitComparison:
    """Jaccard, overlap at k and Spearman of two circuits or score vectors of one model shape."""
    if _shape(a) != _shape(b):
        raise ValueError(
            f"cannot compare a {_shape(a)[0]}x{_shape(a)[1]} model's heads with a {_shape(b)[0]}x{_shape(b)[1]} model's."
        )
    n_total = a.n_layers * a.n_heads
    sizes = [len(x.heads) for x in (a, b) if isinstance(x, Circuit)]
    if k is None:
        k = min(sizes) if sizes else max(1, round(0.1 * n_total))
    if not 1 <= k <= n_total:
        raise ValueError(f"k={k} must be between 1 and the number of heads, {n_total}.")
    set_a = set(a.heads) if isinstance(a, Circuit) else set(_top(a, k))
    set_b = set(b.heads) if isinstance(b, Circuit) else set(_top(b, k))
    union = set_a | set_b
    jaccard = len(set_a & set_b) / len(union) if union else 1.0
    overlap = len(set(_top(a, k)) & set(_top(b, k))) / k
    sa, sb = _scores(a), _scores(b)
    rho = spearman(sa.scores, sb.scores) if sa is not None and sb is not None else None
    return CircuitComparison(
        jaccard=jaccard,
        overlap_at_k=overlap,
        k=k,
        spearman=rho,
        n_a=len(set_a),
        n_b=len(set_b),
        shared=[head_name(h) for h in sorted(set_a & set_b)],
        only_a=[head_name(h) for h in sorted(set_a - set_b)],
        only_b=[head_name(h) for h in sorted(set_b - set_a)],
        a=_label(a),
        b=_label(b),
    )
