"""From head scores to a `Circuit`: top-k, threshold, the near-zero and random controls, and
CD-T's iterative search.

`k` is a count (int, 1 <= k <= n_layers * n_heads) or a fraction of all heads (float in (0, 1],
rounded, at least 1). Ties are broken by position (lower layer, then lower head first), so every
selection is deterministic.

Iterative search (docs/method.md §4, after CD-T's): round 1 scores every head on the logits
(directional relevance) and keeps the top `k`. In each later round the heads kept in the previous
round become the *targets*: every not-yet-selected head s in an earlier layer than some target is
scored by its contribution to the task direction *through* the targets,

    R_r(s) = E_x[ sum_{t in targets, layer(t) > layer(s)} sum_pos < beta_z_t(s, x), g_t(x) > ]

where `beta_z_t(s, x)` is the relevant part of target t's `hook_z` that CD-T attributes to s (the
engine's `record` of `blocks.L.attn.hook_z`) and `g_t(x) = d margin / d z_t` is the target's
directional effect on the task margin (one backward pass of the clean run). The top `k_next`
heads with a positive score join the circuit and become the next round's targets. The search stops
after `rounds` rounds or when no earlier head is left.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuit_transfer.discovery.baseline import Baseline, Examples, Positions, batches_for, make_baseline
from circuit_transfer.discovery.circuit import Circuit
from circuit_transfer.discovery.relevance import (
    Head,
    HeadScores,
    _forward_with_z,
    head_relevance,
    task_weights,
)
from circuit_transfer.models.backend import Model
from circuit_transfer.readout import Margin, TaskBatch
from circuit_transfer.tasks import Task


def resolve_k(k: int | float, n_layers: int, n_heads: int) -> int:
    """The number of heads meant by `k` (count or fraction); ValueError naming both numbers."""
    n_total = n_layers * n_heads
    if isinstance(k, bool):
        raise ValueError(f"k must be a number of heads or a fraction, got {k!r}.")
    if isinstance(k, float):
        if not 0.0 < k <= 1.0:
            raise ValueError(
                f"k={k} as a fraction must be in (0, 1] of the {n_total} heads "
                f"({n_layers} layers x {n_heads} heads); give an int for a count."
            )
        return max(1, round(k * n_total))
    if not 1 <= k <= n_total:
        raise ValueError(
            f"k={k} heads requested but the model has {n_total} heads ({n_layers} layers x {n_heads} heads); "
            f"choose 1 <= k <= {n_total}."
        )
    return int(k)


def _ranked(values: Float[Tensor, "n_layers n_heads"], descending: bool = True) -> list[Head]:
    n_heads = values.shape[1]
    flat = values.flatten().tolist()
    order = sorted(range(len(flat)), key=lambda i: ((-flat[i] if descending else flat[i]), i))
    return [(i // n_heads, i % n_heads) for i in order]


def _circuit(scores: HeadScores, heads: list[Head], method: str, params: dict[str, Any]) -> Circuit:
    return Circuit(
        heads=tuple(heads),
        n_layers=scores.n_layers,
        n_heads=scores.n_heads,
        model_name=scores.model_name,
        method=method,
        params=params,
        scores=scores,
        task=scores.task,
        lang=scores.lang,
    )


def select_top_k(scores: HeadScores, k: int | float) -> Circuit:
    """The `k` heads with the highest (signed) score."""
    n = resolve_k(k, scores.n_layers, scores.n_heads)
    return _circuit(scores, _ranked(scores.scores)[:n], "top-k", {"k": n})


def select_threshold(scores: HeadScores, t: float | int) -> Circuit:
    """Every head with score >= t."""
    heads = [h for h in _ranked(scores.scores) if scores[h] >= t]
    if not heads:
        raise ValueError(
            f"no head has a score >= {t} (the highest is {float(scores.scores.max()):.4g}); lower the threshold."
        )
    return _circuit(scores, heads, "threshold", {"threshold": t})


def select_near_zero(scores: HeadScores, k: int | float, avoid: Iterable[Head] = ()) -> Circuit:
    """The `k` heads with the smallest |score| (the near-zero-relevance control).

    Heads in `avoid` (the circuit the control is compared with) are taken only after every other
    head, so the control is disjoint from that circuit whenever k <= n_heads_total - len(avoid).
    """
    n = resolve_k(k, scores.n_layers, scores.n_heads)
    avoided = {(int(ly), int(h)) for ly, h in avoid}
    ranked = _ranked(scores.scores.abs(), descending=False)
    heads = [hd for hd in ranked if hd not in avoided] + [hd for hd in ranked if hd in avoided]
    params: dict[str, Any] = {"k": n}
    if avoided:
        params["avoid"] = [list(hd) for hd in sorted(avoided)]
    return _circuit(scores, heads[:n], "near-zero", params)


def select_random(
    n_layers: int,
    n_heads: int,
    k: int | float,
    seed: int = 0,
    *,
    model_name: str = "",
    task: str = "",
    lang: str = "",
) -> Circuit:
    """`k` heads drawn uniformly without replacement, seeded (the random control)."""
    n = resolve_k(k, n_layers, n_heads)
    all_heads = [(ly, h) for ly in range(n_layers) for h in range(n_heads)]
    heads = random.Random(seed).sample(all_heads, n)
    return Circuit(
        heads=tuple(heads),
        n_layers=n_layers,
        n_heads=n_heads,
        model_name=model_name,
        method="random",
        params={"k": n, "seed": seed},
        task=task,
        lang=lang,
    )


# ---------------------------------------------------------------------------------------------
# Iterative search


def through_target_scores(
    model: Model,
    batches: list[TaskBatch],
    baseline: Baseline,
    targets: list[Head],
    candidates: list[Head],
    margin: Margin = "mean",
    attention: str = "decomposed",
    chunk_size: int | None = None,
) -> Float[Tensor, "n_layers n_heads"]:
    """Mean over examples of each candidate's contribution to the task margin through `targets`.

    Heads that are not candidates score 0. See the module doc for the formula.
    """
    from circuit_transfer.cdt import decompose_heads

    cfg = model.cfg
    device = cfg.device
    target_layers = sorted({ly for ly, _ in targets})
    hooks = [f"blocks.{ly}.attn.hook_z" for ly in target_layers]
    total = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)
    n = 0
    for batch in batches:
        batch = batch.to(device)
        with torch.enable_grad():
            full, zs = _forward_with_z(model, batch)
            w = task_weights(full.detach().float(), batch.labels, margin)
            grads = torch.autograd.grad((full * w).sum(), [zs[ly] for ly in target_layers])
        grad_of = dict(zip(hooks, grads))  # batch pos H dh
        mask = batch.attention_mask.to(grads[0].dtype)
        with torch.no_grad():
            result = decompose_heads(
                model,
                batch.tokens,
                heads=candidates,
                baseline=baseline.for_engine(batch).to(device),
                attention=attention,
                record=hooks,
                attention_mask=batch.attention_mask,
                chunk_size=chunk_size,
                logits_positions=batch.final_pos,
                unembed_columns=batch.label_ids,
            )
        for i, (ls, hs) in enumerate(candidates):
            contrib = torch.zeros(len(batch), device=device)
            for lt, ht in targets:
                if lt <= ls:
                    continue
                name = f"blocks.{lt}.attn.hook_z"
                beta = result.beta[name][i, :, :, ht, :]  # batch pos dh
                contrib = contrib + torch.einsum(
                    "bpd,bpd,bp->b", beta.float(), grad_of[name][:, :, ht, :].float(), mask
                )
            total[ls, hs] += contrib.sum().double().cpu()
        n += len(batch)
    return (total / n).float()


def iterative_search(
    model: Model,
    task: Task | None,
    examples: Examples,
    k: int | float,
    baseline: str | Baseline | Tensor = "label-balanced",
    rounds: int = 2,
    k_next: int | float | None = None,
    margin: Margin = "mean",
    attention: str = "decomposed",
    positions: Positions = "pooled",
    scores: HeadScores | None = None,
    batch_size: int = 16,
    max_len: int = 128,
    chunk_size: int | None = None,
    progress: bool = False,
) -> Circuit:
    """CD-T's iterative search with task-directional relevance (see module doc).

    Args:
        k: heads kept in round 1 (top-k of directional relevance on the logits).
        rounds: total number of rounds (1 = plain top-k).
        k_next: heads added per later round (default: k).
        scores: round-1 scores, if already computed (must be CD-T directional on the same data).
    """
    cfg = model.cfg
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}.")
    base = make_baseline(
        model, baseline, examples, task, positions=positions, batch_size=batch_size, max_len=max_len
    )
    if scores is None:
        scores = head_relevance(
            model,
            task,
            examples,
            base,
            margin=margin,
            attention=attention,
            batch_size=batch_size,
            max_len=max_len,
            chunk_size=chunk_size,
            progress=progress,
        )
    n_first = resolve_k(k, cfg.n_layers, cfg.n_heads)
    n_next = resolve_k(k if k_next is None else k_next, cfg.n_layers, cfg.n_heads)
    targets = _ranked(scores.scores)[:n_first]
    selected = list(targets)
    history: list[dict[str, Any]] = [{"round": 1, "heads": [list(h) for h in targets]}]
    batches = batches_for(
        model, task, examples, batch_size, max_len, same_length=base.positions == "from-end"
    )
    for r in range(2, rounds + 1):
        last = max(ly for ly, _ in targets)
        candidates = [(ly, h) for ly in range(last) for h in range(cfg.n_heads) if (ly, h) not in selected]
        if not candidates:
            break
        through = through_target_scores(
            model, batches, base, targets, candidates, margin, attention, chunk_size
        )
        ranked = [hd for hd in _ranked(through) if hd in candidates and float(through[hd]) > 0][:n_next]
        history.append(
            {
                "round": r,
                "heads": [list(h) for h in ranked],
                "scores": {f"L{ly}H{h}": float(through[ly, h]) for ly, h in ranked},
            }
        )
        if not ranked:
            break
        selected.extend(ranked)
        targets = ranked
    params = {"k": n_first, "k_next": n_next, "rounds": rounds, "history": history}
    return _circuit(scores, selected, "iterative", params)
