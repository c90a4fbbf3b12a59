"""Head relevance: how much each head's deviation from the baseline pushes the task decision.

Two estimators of the same quantity, the relevant part of the label logits at the readout position
contributed by head s (beta_s = z_s - mu_s at every position of the prompt):

- `estimator="cdt"`: CD-T (`circuit_transfer.cdt.decompose_heads`) propagates beta_s exactly
  through the rest of the network with CD-T's rules (about n_layers/2 forward passes per head
  layer).
- `estimator="attribution"`: attribution patching, the first-order approximation
  `grad_z(readout) . (z - mu)` summed over positions and d_head (one forward and one backward per
  batch for the directional score; one backward per label for the ratio).
- `estimator="ablation"`: exact mean-ablation patching, `label_logits(x) - label_logits(x; z_s := mu_s)`:
  head s's output is replaced by the baseline at every position and the change of the label logits
  is its contribution (one forward per head; the heads of a layer share one batched forward). No
  approximation, but it also counts interactions that CD-T assigns elsewhere, so the three
  estimators agree only to first order.

Scores (docs/method.md §4):

- `score="directional"` (CT-SFT): `R(s) = E_x[w_x . beta_label_logits(s, x)]` where `w_x` is the
  task direction of example x: +1 on the gold label, -1/(n_labels-1) on the others (margin
  "mean"), or -1 on the runner-up label of the clean run (margin "max", a linearisation of the
  max margin: the runner-up is fixed from the full logits).
- `score="cdt-ratio"` (CD-T's unsigned score): `E_x[ ||beta_T||_1 / ||gamma_T||_1 ]` with T the
  label-word logits at the readout position (gamma = full - beta). Only the label columns are
  read: the full-vocabulary logits are dominated by words the task never reads.

`per_layer_norm=True` divides each layer's scores by the layer's mean |score| (CD-T's option).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from circuit_transfer.choices import ESTIMATORS, SCORES
from circuit_transfer.discovery.baseline import Baseline, Examples, Positions, batches_for, make_baseline
from circuit_transfer.io import atomic_write_json, read_json
from circuit_transfer.models.backend import Model
from circuit_transfer.models.logits import label_scores
from circuit_transfer.readout import Margin, TaskBatch
from circuit_transfer.tasks import Task

Score = Literal["directional", "cdt-ratio"]
Estimator = Literal["cdt", "attribution", "ablation"]
Head = tuple[int, int]


def head_name(head: Head) -> str:
    """`L{layer}H{head}`, the label used in tables and reprs."""
    return f"L{head[0]}H{head[1]}"


@dataclass(frozen=True, eq=False)
class HeadScores:
    """One relevance score per head, with where it came from.

    Attributes:
        scores: `[n_layers, n_heads]`; larger = more relevant (directional: pushes toward gold).
        stderr: standard error of the mean over examples, same shape (None if unknown).
    """

    scores: Float[Tensor, "n_layers n_heads"]
    model_name: str
    n_layers: int
    n_heads: int
    task: str = ""
    lang: str = ""
    baseline: str = ""
    n_examples: int = 0
    score: str = "directional"
    estimator: str = "cdt"
    margin: str = "mean"
    attention: str = "decomposed"
    per_layer_norm: bool = False
    stderr: Float[Tensor, "n_layers n_heads"] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.scores.shape) != (self.n_layers, self.n_heads):
            raise ValueError(
                f"scores have shape {tuple(self.scores.shape)}, expected ({self.n_layers}, {self.n_heads})."
            )

    def ranked(self) -> list[tuple[Head, float]]:
        """All heads, highest score first (ties: lower layer, then lower head first)."""
        flat = self.scores.flatten().tolist()
        order = sorted(range(len(flat)), key=lambda i: (-flat[i], i))
        return [((i // self.n_heads, i % self.n_heads), flat[i]) for i in order]

    def __getitem__(self, head: Head) -> float:
        return float(self.scores[head[0], head[1]])

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "task": self.task,
            "lang": self.lang,
            "baseline": self.baseline,
            "n_examples": self.n_examples,
            "score": self.score,
            "estimator": self.estimator,
            "margin": self.margin,
            "attention": self.attention,
            "per_layer_norm": self.per_layer_norm,
            "scores": self.scores.detach().cpu().double().tolist(),
            "stderr": None if self.stderr is None else self.stderr.detach().cpu().double().tolist(),
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadScores:
        d = dict(d)
        d["scores"] = torch.tensor(d["scores"], dtype=torch.float64).float()
        if d.get("stderr") is not None:
            d["stderr"] = torch.tensor(d["stderr"], dtype=torch.float64).float()
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> HeadScores:
        return cls.from_dict(read_json(path))

    def _repr_html_(self) -> str:
        """Inline display in Jupyter: the relevance grid with the selected heads marked."""
        from circuit_transfer.views import head_scores_html

        return head_scores_html(self)

    def __repr__(self) -> str:
        top = ", ".join(f"{head_name(h)} {s:+.3g}" for h, s in self.ranked()[:3])
        return (
            f"HeadScores({self.score}/{self.estimator} of {self.n_layers}x{self.n_heads} "
            f"{self.model_name!r} on {self.task}/{self.lang}, n={self.n_examples}: {top}, ...)"
        )


# ---------------------------------------------------------------------------------------------
# The task direction


def task_weights(
    full_label_logits: Float[Tensor, "batch n_labels"], labels: Int[Tensor, " batch"], margin: Margin = "mean"
) -> Float[Tensor, "batch n_labels"]:
    """Weights w with `margin(x) = w . label_logits(x)` (exact for "mean"; "max" fixes the runner-up)."""
    n = full_label_logits.shape[-1]
    gold = torch.nn.functional.one_hot(labels, n).to(full_label_logits.dtype)
    if margin == "mean":
        return gold - (1 - gold) / (n - 1)
    if margin == "max":
        runner_up = full_label_logits.masked_fill(gold.bool(), float("-inf")).argmax(-1)
        return gold - torch.nn.functional.one_hot(runner_up, n).to(full_label_logits.dtype)
    raise ValueError(f"Unknown margin kind {margin!r}: use 'mean' or 'max'.")


# ---------------------------------------------------------------------------------------------
# Estimators: relevant part of the label logits for a set of source heads


def cdt_label_beta(
    model: Model,
    batch: TaskBatch,
    baseline: Baseline,
    heads: Sequence[Head],
    attention: str = "decomposed",
    chunk_size: int | None = None,
    bias: str = "magnitude",
    stabilize: bool = False,
) -> tuple[Float[Tensor, "n_sources batch n_labels"], Float[Tensor, "batch n_labels"]]:
    """CD-T relevant part of the label logits at the readout position, per source head."""
    from circuit_transfer.cdt import decompose_heads

    device = model.cfg.device
    batch = batch.to(device)
    with torch.no_grad():
        result = decompose_heads(
            model,
            batch.tokens,
            heads=list(heads),
            baseline=baseline.for_engine(batch).to(device),
            attention=attention,
            bias=bias,
            stabilize=stabilize,
            attention_mask=batch.attention_mask,
            chunk_size=chunk_size,
            logits_positions=batch.final_pos,
            unembed_columns=batch.label_ids,
        )
    return result.beta_logits.float(), result.full_logits.float()


def _forward_with_z(model: Model, batch: TaskBatch) -> tuple[Float[Tensor, "batch n_labels"], list[Tensor]]:
    """Label logits and every layer's `hook_z` (kept in the autograd graph)."""
    zs: list[Tensor] = []

    def keep(z, hook):
        zs.append(z)
        return z  # returned, so that a TransformerBridge runs on this very tensor (its hook_z is a reshaped copy)

    hooks = [(f"blocks.{ly}.attn.hook_z", keep) for ly in range(model.cfg.n_layers)]
    return label_scores(model, batch, fwd_hooks=hooks), zs


def attribution_label_beta(
    model: Model,
    batch: TaskBatch,
    baseline: Baseline,
    margin: Margin | None = None,
) -> tuple[Float[Tensor, "k n_layers n_heads batch"], Float[Tensor, "batch n_labels"]]:
    """Attribution-patching estimate of each head's contribution to linear readouts of the label logits.

    With `margin`, one readout: the task direction (`task_weights`), so one backward pass gives
    the directional contribution (k = 1). Without, one readout per label (k = n_labels backward
    passes), giving the estimated beta of every label logit.
    """
    device = model.cfg.device
    batch = batch.to(device)
    with torch.enable_grad():
        full, zs = _forward_with_z(model, batch)
        if margin is not None:
            readouts = task_weights(full.detach().float(), batch.labels, margin)[None]
        else:
            readouts = torch.eye(full.shape[-1], device=device)[:, None, :].expand(-1, len(batch), -1)
        mu = baseline.per_example(batch).to(device)  # batch L H pos dh
        mask = batch.attention_mask.to(zs[0].dtype)
        out = []
        for i in range(readouts.shape[0]):
            target = (full * readouts[i].to(full)).sum()
            grads = torch.autograd.grad(target, zs, retain_graph=i + 1 < readouts.shape[0])
            per_layer = []
            for ly, (z, g) in enumerate(zip(zs, grads)):
                delta = z.detach() - mu[:, ly].permute(0, 2, 1, 3)  # batch pos H dh
                per_layer.append(torch.einsum("bphd,bphd,bp->hb", g, delta, mask))
            out.append(torch.stack(per_layer))
    return torch.stack(out).float(), full.detach().float()


def ablation_label_beta(
    model: Model,
    batch: TaskBatch,
    baseline: Baseline,
    heads: Sequence[Head],
    chunk_size: int | None = None,
) -> tuple[Float[Tensor, "n_sources batch n_labels"], Float[Tensor, "batch n_labels"]]:
    """Exact mean-ablation effect of each source head on the label logits at the readout position.

    `beta[j] = full - ablated_j`, where `ablated_j` replaces head `heads[j]`'s `hook_z` by the
    baseline mu at every position. The batch is tiled so that several heads are ablated in one
    forward pass (`chunk_size` rows = heads x examples per pass; default: one layer's heads).
    """
    device = model.cfg.device
    batch = batch.to(device)
    n = len(batch)
    per_pass = max(1, (chunk_size or model.cfg.n_heads * n) // n)
    mu = baseline.per_example(batch).to(device)  # batch L H pos dh
    with torch.no_grad():
        full = label_scores(model, batch).float()
        betas = []
        for start in range(0, len(heads), per_pass):
            chunk = list(heads[start : start + per_pass])
            c = len(chunk)
            hooks = []
            for layer in sorted({ly for ly, _ in chunk}):
                rows = [(j, h) for j, (ly, h) in enumerate(chunk) if ly == layer]

                def patch(z, hook, layer=layer, rows=rows):
                    z = z.clone()
                    for j, h in rows:
                        z[j * n : (j + 1) * n, :, h] = mu[:, layer, h].to(z.dtype)
                    return z

                hooks.append((f"blocks.{layer}.attn.hook_z", patch))
            tiled = TaskBatch(
                tokens=batch.tokens.repeat(c, 1),
                attention_mask=batch.attention_mask.repeat(c, 1),
                final_pos=batch.final_pos.repeat(c),
                labels=batch.labels.repeat(c),
                label_ids=batch.label_ids,
            )
            ablated = label_scores(model, tiled, fwd_hooks=hooks).float().reshape(c, n, -1)
            betas.append(full[None] - ablated)
    return torch.cat(betas), full


# ---------------------------------------------------------------------------------------------
# Relevance


def _langs(examples: Examples) -> str:
    if isinstance(examples, TaskBatch) or (len(examples) and isinstance(examples[0], TaskBatch)):
        return ""
    return "+".join(sorted({ex.lang for ex in examples}))


def head_relevance(
    model: Model,
    task: Task | None,
    examples: Examples,
    baseline: str | Baseline | Tensor = "label-balanced",
    score: Score = "directional",
    margin: Margin = "mean",
    per_layer_norm: bool = False,
    estimator: Estimator = "cdt",
    attention: str = "decomposed",
    positions: Positions = "pooled",
    batch_size: int = 16,
    max_len: int = 128,
    chunk_size: int | None = None,
    lang: str | None = None,
    bias: str = "magnitude",
    stabilize: bool = False,
    progress: bool = False,
) -> HeadScores:
    """Score every head of `model` on the discovery set `examples` (see module doc).

    Args:
        baseline: a `Baseline`, a tensor (see `baseline.py` for shapes), or a kind name
            ("label-balanced", "mean", "zero") computed on `examples` with `positions`.
        attention: CD-T attention rule, "decomposed" or "frozen" (estimator "cdt" only).
        chunk_size: rows (sources x examples) the CD-T engine, or one ablation forward, runs at once.
        lang: language recorded in the provenance (default: the examples' languages).
        bias: CD-T bias rule, "magnitude" (shared by |W beta| / (|W beta| + |W gamma|)) or
            "irrelevant" (all biases to gamma); recorded in `extra`.
        stabilize: the opposite-sign stability rule after every linear map (estimator "cdt"; our
            placement, the authors' is `decompose_heads(rules="cdt-reference")`); needed on deep
            gated models such as SmolLM2-135M, where early heads' relevant parts otherwise
            overflow (the engine warns).
        progress: show a progress bar over the batches (tqdm, on stderr).
    """
    if score not in SCORES:
        raise ValueError(f"Unknown score {score!r}: use one of {', '.join(SCORES)}.")
    if estimator not in ESTIMATORS:
        raise ValueError(f"Unknown estimator {estimator!r}: use one of {', '.join(ESTIMATORS)}.")
    base = make_baseline(
        model, baseline, examples, task, positions=positions, batch_size=batch_size, max_len=max_len
    )
    same_length = estimator == "cdt" and base.positions == "from-end"
    batches = batches_for(model, task, examples, batch_size, max_len, same_length=same_length)
    cfg = model.cfg
    heads = [(ly, h) for ly in range(cfg.n_layers) for h in range(cfg.n_heads)]
    total = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    n = 0
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(batches, desc="head relevance", unit="batch", disable=not progress, leave=False):
            per_ex = _batch_scores(
                model, batch, base, heads, score, margin, estimator, attention, chunk_size, bias, stabilize
            ).double()  # summed in float64: a float32 sum's rounding, squared, swamps a small variance
            total += per_ex.sum(-1).cpu()
            total_sq += per_ex.pow(2).sum(-1).cpu()
            n += len(batch)
    finally:
        model.train(was_training)
    mean = total / n
    var = (total_sq / n - mean.pow(2)).clamp(min=0) * n / max(n - 1, 1)
    stderr = (var / n).sqrt()
    if per_layer_norm:
        scale = mean.abs().mean(-1, keepdim=True).clamp(min=1e-30)
        mean, stderr = mean / scale, stderr / scale
    return HeadScores(
        scores=mean.float(),
        stderr=stderr.float(),
        model_name=str(cfg.model_name),
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        task=task.name if task is not None else "",
        lang=lang if lang is not None else _langs(examples),
        baseline=base.name,
        n_examples=n,
        score=score,
        estimator=estimator,
        margin=margin,
        attention=attention if estimator == "cdt" else "-",
        per_layer_norm=per_layer_norm,
        extra={"bias": bias, "stabilize": stabilize} if estimator == "cdt" else {},
    )


def _batch_scores(
    model: Model,
    batch: TaskBatch,
    base: Baseline,
    heads: list[Head],
    score: str,
    margin: str,
    estimator: str,
    attention: str,
    chunk_size: int | None,
    bias: str = "magnitude",
    stabilize: bool = False,
) -> Float[Tensor, "n_layers n_heads batch"]:
    """Per-example score of every head on one batch."""
    cfg = model.cfg
    labels = batch.labels.to(cfg.device)
    if estimator == "cdt":
        betas, full = [], None
        for layer in range(cfg.n_layers):
            layer_heads = [hd for hd in heads if hd[0] == layer]
            beta, full = cdt_label_beta(
                model, batch, base, layer_heads, attention, chunk_size, bias, stabilize
            )
            betas.append(beta)
        beta = torch.cat(betas).reshape(cfg.n_layers, cfg.n_heads, len(batch), -1)
    elif estimator == "ablation":
        beta, full = ablation_label_beta(model, batch, base, heads, chunk_size)
        beta = beta.reshape(cfg.n_layers, cfg.n_heads, len(batch), -1)
    else:
        if score == "directional":
            contrib, _ = attribution_label_beta(model, batch, base, margin=margin)
            return contrib[0]
        est, full = attribution_label_beta(model, batch, base)  # n_labels L H batch
        beta = est.permute(1, 2, 3, 0)
    if score == "directional":
        w = task_weights(full.float(), labels, margin)
        return torch.einsum("lhbk,bk->lhb", beta, w)
    gamma = full[None, None] - beta
    return beta.abs().sum(-1) / gamma.abs().sum(-1).clamp(min=1e-12)


__all__ = [
    "ESTIMATORS",
    "SCORES",
    "HeadScores",
    "ablation_label_beta",
    "attribution_label_beta",
    "cdt_label_beta",
    "head_name",
    "head_relevance",
    "task_weights",
]
