"""`discover`: baseline, relevance and selection in one call, for notebooks and the CLI."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from circuit_transfer.choices import SELECTIONS
from circuit_transfer.discovery.baseline import (
    Baseline,
    Examples,
    Positions,
    check_discovery_set,
    make_baseline,
)
from circuit_transfer.discovery.circuit import Circuit
from circuit_transfer.discovery.relevance import Estimator, HeadScores, Score, head_relevance
from circuit_transfer.discovery.selection import (
    iterative_search,
    resolve_k,
    select_near_zero,
    select_random,
    select_threshold,
    select_top_k,
)
from circuit_transfer.models.backend import Model
from circuit_transfer.readout import Margin
from circuit_transfer.tasks import Task


def discover(
    model: Model,
    task: Task | None,
    examples: Examples,
    k: int | float | None = None,
    selection: str = "top-k",
    baseline: str | Baseline | Tensor = "label-balanced",
    positions: Positions = "pooled",
    score: Score = "directional",
    estimator: Estimator = "cdt",
    margin: Margin = "mean",
    threshold: float | int | None = None,
    seed: int = 0,
    rounds: int = 2,
    k_next: int | float | None = None,
    per_layer_norm: bool = False,
    attention: str = "decomposed",
    batch_size: int = 16,
    max_len: int = 128,
    chunk_size: int | None = None,
    scores: HeadScores | None = None,
    stabilize: bool = False,
    progress: bool = False,
) -> Circuit:
    """Find a circuit of `model` for `task` on the discovery set `examples`.

    Args:
        k: heads to keep (count or fraction); not used by "threshold".
        selection: "top-k", "threshold" (needs `threshold`), "near-zero", "random" (seeded),
            or "iterative" (CD-T directional scores only; `rounds`, `k_next`).
        scores: precomputed scores to select from (skips relevance).
        stabilize: the opposite-sign stability rule after every linear map (our placement; see
            `head_relevance`); use it on deep gated models.
        progress: a progress bar over the relevance batches (tqdm, on stderr).
    """
    check_discovery_set(model, task, examples)
    if selection not in SELECTIONS:
        raise ValueError(f"Unknown selection {selection!r}: use one of {', '.join(SELECTIONS)}.")
    if selection != "threshold" and k is None:
        raise ValueError(f"selection {selection!r} needs k (a number of heads or a fraction).")
    if selection == "threshold" and threshold is None:
        raise ValueError("selection 'threshold' needs a threshold.")
    if k is not None:
        resolve_k(k, model.cfg.n_layers, model.cfg.n_heads)  # refuse a bad k before any compute
    base = make_baseline(
        model, baseline, examples, task, positions=positions, batch_size=batch_size, max_len=max_len
    )
    common: dict[str, Any] = dict(batch_size=batch_size, max_len=max_len, chunk_size=chunk_size)
    if selection == "iterative":
        if estimator != "cdt" or score != "directional":
            raise ValueError(
                "iterative search uses CD-T directional relevance (estimator='cdt', score='directional')."
            )
        return iterative_search(
            model,
            task,
            examples,
            k,
            base,
            rounds=rounds,
            k_next=k_next,
            margin=margin,
            attention=attention,
            scores=scores,
            progress=progress,
            **common,
        )
    if scores is None:
        scores = head_relevance(
            model,
            task,
            examples,
            base,
            score=score,
            margin=margin,
            per_layer_norm=per_layer_norm,
            estimator=estimator,
            attention=attention,
            stabilize=stabilize,
            progress=progress,
            **common,
        )
    if selection == "top-k":
        return select_top_k(scores, k)
    if selection == "threshold":
        return select_threshold(scores, threshold)
    if selection == "near-zero":
        return select_near_zero(scores, k)
    circuit = select_random(
        scores.n_layers,
        scores.n_heads,
        k,
        seed,
        model_name=scores.model_name,
        task=scores.task,
        lang=scores.lang,
    )
    return circuit
