"""Reference activations mu for every head's output (`hook_z`): the operating point of CD-T.

CT-SFT's baseline (docs/method.md §4) is the **label-balanced mean**: the mean of the per-class means,
so each label has equal weight whatever the class sizes, and class information cancels.

Design choices (documented, switchable):

- Within a class, `within_class="tokens"` (default) weights every real token position equally
  (mean over all real tokens of the class's prompts: the head's average operating point);
  `within_class="examples"` first averages each prompt over its own positions, then averages the
  prompts (long prompts do not dominate). Padding is always excluded.
- `positions="pooled"` (default) gives one vector per head, `Float[n_layers, n_heads, d_head]`.
  `positions="from-end"` averages per position counted from the end of each prompt:
  `Float[n_layers, n_heads, max_pos, d_head]`, row `j` is position `-(j + 1)` (row 0 = the final
  token, where the label is read). A row that some label never reaches (only long prompts of one
  class get that far back) would not be label-balanced, so it falls back to the pooled mean;
  `lay_out` also uses the pooled mean for positions further back than `max_pos`.
  (With from-end, `within_class` has no effect: each prompt has one token per row.)

A `Baseline` carries the tensor with its provenance and lays it onto a right-padded batch:
`Baseline.per_example(batch)` gives `Float[batch, n_layers, n_heads, pos, d_head]`, which the
mean-ablation hooks use directly; the CD-T engine takes one baseline shared by the batch, so
`Baseline.for_engine(batch)` refuses from-end batches whose prompts differ in length, and the
discovery code runs from-end baselines on batches grouped by prompt length (`batches_for`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuit_transfer.choices import BASELINE_KINDS
from circuit_transfer.data import Example
from circuit_transfer.models.backend import Model
from circuit_transfer.readout import NO_TOKENIZER, TaskBatch, encode
from circuit_transfer.tasks import Task

Positions = Literal["pooled", "from-end"]
WithinClass = Literal["tokens", "examples"]
BaselineKind = Literal["label-balanced", "mean", "zero"]

Examples = Sequence[Example] | Sequence[TaskBatch] | TaskBatch
"""Discovery data: `Example`s (encoded with `model.tokenizer` and a `Task`) or encoded batches."""


# ---------------------------------------------------------------------------------------------
# Batches


def _subbatch(batch: TaskBatch, idx: Sequence[int]) -> TaskBatch:
    """Rows `idx` of a right-padded batch, trimmed to their own longest prompt."""
    index = torch.as_tensor(list(idx), dtype=torch.long)
    width = int(batch.final_pos[index].max().item()) + 1
    return TaskBatch(
        tokens=batch.tokens[index, :width],
        attention_mask=batch.attention_mask[index, :width],
        final_pos=batch.final_pos[index],
        labels=batch.labels[index],
        label_ids=batch.label_ids,
    )


def batches_for(
    model: Model,
    task: Task | None,
    examples: Examples,
    batch_size: int = 16,
    max_len: int = 128,
    same_length: bool = False,
) -> list[TaskBatch]:
    """Encode `examples` into batches sorted by prompt length (little padding).

    Args:
        same_length: every batch holds prompts of one length only (needed to give the CD-T
            engine a from-end baseline aligned to token positions).
    """
    check_discovery_set(model, task, examples)
    if isinstance(examples, TaskBatch):
        examples = [examples]
    if isinstance(examples[0], TaskBatch):
        if not same_length:
            return [b for b in examples]
        return [sb for b in examples for sb in _split(b, batch_size, same_length=True)]
    whole = encode(model.tokenizer, task, list(examples), max_len=max_len)
    return _split(whole, batch_size, same_length)


def check_discovery_set(model: Model, task: Task | None, examples: Sequence[Any] | TaskBatch) -> None:
    """Refuse a discovery set that cannot be encoded, before any compute: empty, Examples without a
    task or a tokenizer, or items that are not labelled `Example`s (plain strings have no label)."""
    if isinstance(examples, TaskBatch) or (len(examples) and all(isinstance(b, TaskBatch) for b in examples)):
        return
    if len(examples) == 0:
        raise ValueError("The discovery set is empty: give at least one example of every label.")
    if task is None:
        raise ValueError("Encoding Examples needs a Task (or pass encoded TaskBatch objects).")
    if getattr(model, "tokenizer", None) is None:
        raise ValueError(NO_TOKENIZER)
    task.check_examples(examples)


def _split(batch: TaskBatch, batch_size: int, same_length: bool) -> list[TaskBatch]:
    lengths = batch.final_pos.tolist()
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    groups: list[list[int]] = []
    for i in order:
        if (
            groups
            and len(groups[-1]) < batch_size
            and (not same_length or lengths[groups[-1][0]] == lengths[i])
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
    return [_subbatch(batch, g) for g in groups]


def head_z(model: Model, batch: TaskBatch) -> Float[Tensor, "batch pos n_layers n_heads d_head"]:
    """Every head's output `hook_z` on a batch (no gradients)."""
    batch = batch.to(model.cfg.device)
    with torch.no_grad():
        _, cache = model.run_with_cache(
            batch.tokens,
            attention_mask=batch.attention_mask,
            return_type=None,  # the logits are not needed (and cost most of a pass at a 262k vocabulary)
            names_filter=lambda n: n.endswith("hook_z"),
        )
    return torch.stack([cache[f"blocks.{ly}.attn.hook_z"] for ly in range(model.cfg.n_layers)], dim=2)


# ---------------------------------------------------------------------------------------------
# Means


def _group_sums(
    model: Model,
    batches: Sequence[TaskBatch],
    n_groups: int,
    group_of: Callable[[TaskBatch], Tensor],
    positions: Positions,
    within_class: WithinClass,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-group sums and counts, pooled ([G, L, H, dh], [G]) and from-end ([G, P, L, H, dh], [G, P])."""
    cfg = model.cfg
    max_pos = max(int(b.final_pos.max().item()) + 1 for b in batches)
    shape = (cfg.n_layers, cfg.n_heads, cfg.d_head)
    pooled_sum = torch.zeros(n_groups, *shape, dtype=torch.float64)
    pooled_n = torch.zeros(n_groups, dtype=torch.float64)
    end_sum = torch.zeros(n_groups, max_pos if positions == "from-end" else 0, *shape, dtype=torch.float64)
    end_n = torch.zeros(n_groups, end_sum.shape[1], dtype=torch.float64)
    for batch in batches:
        z = head_z(model, batch).double().cpu()  # batch pos L H dh
        mask = batch.attention_mask.double().cpu()  # batch pos
        groups = group_of(batch).cpu()
        per_pos = z * mask[:, :, None, None, None]
        if within_class == "tokens":
            contrib, weight = per_pos.sum(1), mask.sum(1)
        else:
            contrib, weight = per_pos.sum(1) / mask.sum(1)[:, None, None, None], torch.ones(len(batch))
        pooled_sum.index_add_(0, groups, contrib)
        pooled_n.index_add_(0, groups, weight.double())
        if positions == "from-end":
            final = batch.final_pos.cpu()
            for b in range(len(batch)):
                n = int(final[b]) + 1
                rows = z[b, :n].flip(0)  # row j = position -(j+1)
                end_sum[groups[b], :n] += rows
                end_n[groups[b], :n] += 1
    return pooled_sum, pooled_n, end_sum, end_n


def _finish(
    pooled_sum: Tensor, pooled_n: Tensor, end_sum: Tensor, end_n: Tensor, positions: Positions
) -> Float[Tensor, "n_layers n_heads *pos d_head"]:
    """Mean of per-group means (pooled), or per from-end row with the pooled fallback."""
    pooled = (pooled_sum / pooled_n[:, None, None, None]).mean(0)
    if positions == "pooled":
        return pooled.float()
    complete = (end_n > 0).all(0)  # rows every group reaches
    rows = (end_sum / end_n.clamp(min=1)[:, :, None, None, None]).mean(0)  # P L H dh
    rows = torch.where(complete[:, None, None, None], rows, pooled[None])
    return rows.permute(1, 2, 0, 3).float().contiguous()


def label_balanced_mean(
    model: Model,
    examples: Examples,
    task: Task | None = None,
    positions: Positions = "pooled",
    within_class: WithinClass = "tokens",
    n_labels: int | None = None,
    batch_size: int = 16,
    max_len: int = 128,
) -> Float[Tensor, "n_layers n_heads *pos d_head"]:
    """Label-balanced mean of every head's output: the mean over labels of per-label means.

    Args:
        examples: the discovery set (Examples with `task`, or encoded TaskBatches).
        positions: "pooled" -> `[n_layers, n_heads, d_head]`; "from-end" ->
            `[n_layers, n_heads, max_pos, d_head]`, row j = position -(j+1) (see module doc).
        within_class: "tokens" weights every real token of a class equally, "examples" every
            prompt of a class equally.
        n_labels: number of labels (default: `task.n_labels`, else the batches' label words).

    Raises:
        ValueError: a label has no example in the discovery set.
    """
    batches = batches_for(model, task, examples, batch_size, max_len)
    if n_labels is None:
        n_labels = task.n_labels if task is not None else len(batches[0].label_ids)
    counts = torch.zeros(n_labels, dtype=torch.long)
    for b in batches:
        counts += torch.bincount(b.labels.cpu(), minlength=n_labels)[:n_labels]
    names = task.labels if task is not None else tuple(str(i) for i in range(n_labels))
    for label in range(n_labels):
        if counts[label] == 0:
            raise ValueError(
                f"label-balanced mean impossible: label {names[label]!r} (id {label}) has no examples "
                f"in the discovery set (per-label counts {counts.tolist()}); add examples of "
                f"{names[label]!r} or use baseline='mean'"
            )
    sums = _group_sums(model, batches, n_labels, lambda b: b.labels, positions, within_class)
    return _finish(*sums, positions)


def mean_baseline(
    model: Model,
    examples: Examples,
    task: Task | None = None,
    positions: Positions = "pooled",
    within_class: WithinClass = "tokens",
    batch_size: int = 16,
    max_len: int = 128,
) -> Float[Tensor, "n_layers n_heads *pos d_head"]:
    """Plain (unweighted) mean of every head's output over a user-given reference set (CD-T's)."""
    batches = batches_for(model, task, examples, batch_size, max_len)
    sums = _group_sums(
        model, batches, 1, lambda b: torch.zeros(len(b), dtype=torch.long), positions, within_class
    )
    return _finish(*sums, positions)


def zero_baseline(model: Model) -> Float[Tensor, "n_layers n_heads d_head"]:
    """All-zero reference: beta_s is the head's whole output."""
    cfg = model.cfg
    return torch.zeros(cfg.n_layers, cfg.n_heads, cfg.d_head)


# ---------------------------------------------------------------------------------------------
# Laying a baseline onto a batch


def lay_out(
    mu: Float[Tensor, "n_layers n_heads *rows d_head"],
    final_pos: Int[Tensor, " batch"],
    width: int,
    pooled: Float[Tensor, "n_layers n_heads d_head"] | None = None,
) -> Float[Tensor, "batch n_layers n_heads pos d_head"]:
    """Per-example baseline aligned to the token positions of a right-padded batch.

    A pooled `mu` is broadcast to every position. A from-end `mu` (row j = position -(j+1)) is
    placed so that row 0 sits on each prompt's final token; positions further back than its rows,
    and padding, get `pooled` (default: the mean of the rows).
    """
    batch = final_pos.shape[0]
    if mu.ndim == 3:
        return mu[None, :, :, None, :].expand(batch, -1, -1, width, -1)
    if pooled is None:
        pooled = mu.mean(2)
    n_rows = mu.shape[2]
    pos = torch.arange(width, device=final_pos.device)
    row = final_pos[:, None] - pos[None, :]  # batch pos
    valid = (row >= 0) & (row < n_rows)
    gathered = mu[:, :, row.clamp(0, n_rows - 1).to(mu.device), :]  # L H batch pos dh
    gathered = gathered.permute(2, 0, 1, 3, 4)
    fill = pooled[None, :, :, None, :].to(gathered)
    return torch.where(valid.to(mu.device)[:, None, None, :, None], gathered, fill)


@dataclass(frozen=True)
class Baseline:
    """A reference activation for every head with its provenance.

    Attributes:
        mu: `[n_layers, n_heads, d_head]` (pooled) or `[n_layers, n_heads, rows, d_head]`
            (from-end, row j = position -(j+1)).
        kind: "label-balanced", "mean", "zero" or "custom".
        positions: "pooled" or "from-end".
        pooled: the pooled mean used where from-end rows run out (equals `mu` when pooled).
        n_examples: size of the set it was computed on (0 for zero/custom).
    """

    mu: Float[Tensor, "n_layers n_heads *rows d_head"]
    kind: str
    positions: str
    pooled: Float[Tensor, "n_layers n_heads d_head"]
    n_examples: int = 0

    @property
    def name(self) -> str:
        return self.kind if self.positions == "pooled" else f"{self.kind}/{self.positions}"

    @classmethod
    def from_tensor(cls, mu: Tensor, kind: str = "custom", n_examples: int = 0) -> Baseline:
        if mu.ndim == 3:
            return cls(mu=mu, kind=kind, positions="pooled", pooled=mu, n_examples=n_examples)
        if mu.ndim == 4:
            return cls(mu=mu, kind=kind, positions="from-end", pooled=mu.mean(2), n_examples=n_examples)
        raise ValueError(f"A baseline has shape [n_layers, n_heads, (rows,) d_head]; got {tuple(mu.shape)}.")

    def check(self, model: Model) -> None:
        cfg = model.cfg
        want = (cfg.n_layers, cfg.n_heads)
        if tuple(self.mu.shape[:2]) != want or self.mu.shape[-1] != cfg.d_head:
            raise ValueError(
                f"Baseline of shape {tuple(self.mu.shape)} does not fit this model "
                f"({cfg.n_layers} layers x {cfg.n_heads} heads, d_head {cfg.d_head})."
            )

    def per_example(self, batch: TaskBatch) -> Float[Tensor, "batch n_layers n_heads pos d_head"]:
        """The baseline laid onto every example and position of a right-padded batch."""
        return lay_out(self.mu, batch.final_pos.to(self.mu.device), batch.tokens.shape[1], self.pooled)

    def for_engine(self, batch: TaskBatch) -> Float[Tensor, "n_layers n_heads *pos d_head"]:
        """One baseline shared by the batch, as the CD-T engine takes it."""
        if self.positions == "pooled":
            return self.mu
        final = batch.final_pos
        if not bool((final == final[0]).all()):
            raise ValueError(
                "A from-end baseline needs prompts of one length per engine call; "
                "build the batches with batches_for(..., same_length=True)."
            )
        return self.per_example(
            TaskBatch(
                batch.tokens[:1], batch.attention_mask[:1], final[:1], batch.labels[:1], batch.label_ids
            )
        )[0]


def make_baseline(
    model: Model,
    kind: str | Baseline | Tensor,
    examples: Examples | None = None,
    task: Task | None = None,
    positions: Positions = "pooled",
    within_class: WithinClass = "tokens",
    batch_size: int = 16,
    max_len: int = 128,
) -> Baseline:
    """A `Baseline` from a kind name ("label-balanced", "mean", "zero"), a tensor, or as given."""
    if isinstance(kind, Baseline):
        kind.check(model)
        return kind
    if isinstance(kind, Tensor):
        out = Baseline.from_tensor(kind.to(model.cfg.device))
        out.check(model)
        return out
    if kind == "zero":
        mu = zero_baseline(model).to(model.cfg.device)
        return Baseline(mu=mu, kind="zero", positions="pooled", pooled=mu)
    if kind not in ("label-balanced", "mean"):
        raise ValueError(f"Unknown baseline {kind!r}: use one of {', '.join(BASELINE_KINDS)}.")
    if examples is None:
        raise ValueError(f"A {kind!r} baseline needs a set of examples.")
    batches = batches_for(model, task, examples, batch_size, max_len)
    n = sum(len(b) for b in batches)
    fn = label_balanced_mean if kind == "label-balanced" else mean_baseline
    mu = fn(model, batches, task, positions=positions, within_class=within_class).to(model.cfg.device)
    if positions == "pooled":
        return Baseline(mu=mu, kind=kind, positions="pooled", pooled=mu, n_examples=n)
    pooled = fn(model, batches, task, positions="pooled", within_class=within_class).to(model.cfg.device)
    return Baseline(mu=mu, kind=kind, positions="from-end", pooled=pooled, n_examples=n)
