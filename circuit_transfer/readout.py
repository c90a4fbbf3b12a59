"""From examples to model inputs, and from logits to the task decision (docs/method.md §2).

Prompts are right-padded: with causal attention, padding after the last real token cannot change
any real position, so a padded example gives exactly the result it gives alone.

The task reads only the label words' logits at each prompt's final position; `models.logits`
computes just those from a model (`label_scores`), these functions read them from full logits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuit_transfer.data import Example
from circuit_transfer.tasks import Task

Margin = Literal["mean", "max"]
NO_TOKENIZER = (
    "The model has no tokenizer (model.tokenizer is None): attach one with "
    "`circuit_transfer.models.attach_tokenizer(model, tokenizer)` (e.g. a transformers "
    "AutoTokenizer), or pass encoded TaskBatch objects instead of Examples."
)


@dataclass(frozen=True)
class TaskBatch:
    """Right-padded prompts with what is needed to read the decision.

    Attributes:
        tokens: token ids, padded on the right with the tokenizer's pad id.
        attention_mask: 1 at real tokens, 0 at padding.
        final_pos: index of each prompt's last real token (where the label is read).
        labels: gold label ids.
        label_ids: vocabulary id of each label word's first token, in label order.
    """

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    final_pos: Int[Tensor, " batch"]
    labels: Int[Tensor, " batch"]
    label_ids: Int[Tensor, " n_labels"]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(
            *(
                t.to(device)
                for t in (self.tokens, self.attention_mask, self.final_pos, self.labels, self.label_ids)
            )
        )


def encode(tokenizer, task: Task, examples: Sequence[Example], max_len: int = 128) -> TaskBatch:
    """Tokenize prompts for `examples`, right-padded to the longest one.

    A prompt longer than `max_len` tokens is shortened inside its first field (`{text}`, the
    premise for pair tasks), dropping that field's last tokens; what the template puts after it (the
    hypothesis, the fixed suffix such as "\\nSentiment:") is kept, so the readout position is intact.
    """
    if not examples:
        raise ValueError("No examples to encode.")
    if tokenizer is None:
        raise ValueError(NO_TOKENIZER)
    task.check_examples(examples)
    suffix_len = len(tokenizer.encode(task.prompt_suffix, add_special_tokens=False))
    if max_len <= suffix_len + 1:
        raise ValueError(f"max_len={max_len} leaves no room for text after the {suffix_len}-token suffix.")
    rows = []
    for ex in examples:
        ids = tokenizer.encode(task.render(ex), add_special_tokens=True)
        if len(ids) > max_len:
            tail_len = len(tokenizer.encode(task.prompt_tail(ex), add_special_tokens=False))
            tail_len = min(max(tail_len, suffix_len), max_len - 1)
            ids = ids[: max_len - tail_len] + ids[-tail_len:]
        rows.append(ids)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[i, : len(ids)] = 1
    return TaskBatch(
        tokens=tokens,
        attention_mask=mask,
        final_pos=torch.tensor([len(r) - 1 for r in rows], dtype=torch.long),
        labels=torch.tensor([ex.label for ex in examples], dtype=torch.long),
        label_ids=torch.tensor(task.label_token_ids(tokenizer), dtype=torch.long),
    )


def iter_batches(
    tokenizer, task: Task, examples: Sequence[Example], batch_size: int, max_len: int = 128
) -> Iterator[TaskBatch]:
    """Encode `examples` in consecutive minibatches (each padded to its own longest prompt)."""
    for start in range(0, len(examples), batch_size):
        yield encode(tokenizer, task, examples[start : start + batch_size], max_len=max_len)


def final_logits(
    logits: Float[Tensor, "batch pos d_vocab"], final_pos: Int[Tensor, " batch"]
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each example's last real token."""
    return logits[torch.arange(logits.shape[0], device=logits.device), final_pos]


def label_logits(
    logits: Float[Tensor, "batch pos d_vocab"], batch: TaskBatch
) -> Float[Tensor, "batch n_labels"]:
    """Logits of the label words' first tokens at the readout position."""
    return final_logits(logits, batch.final_pos.to(logits.device))[:, batch.label_ids.to(logits.device)]


def task_margin(
    label_scores: Float[Tensor, "... n_labels"], labels: Int[Tensor, "..."], kind: Margin = "mean"
) -> Float[Tensor, "..."]:
    """Task direction m = score[y] - mean (or max) over the other labels of score[y'] (docs/method.md §2).

    Linear in the scores for kind="mean", so it applies equally to decomposed (beta) logits.
    """
    gold = label_scores.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    others_mask = torch.ones_like(label_scores, dtype=torch.bool).scatter(-1, labels.unsqueeze(-1), False)
    if kind == "mean":
        others = (label_scores * others_mask).sum(-1) / others_mask.sum(-1)
    elif kind == "max":
        others = label_scores.masked_fill(~others_mask, float("-inf")).amax(-1)
    else:
        raise ValueError(f"Unknown margin kind {kind!r}: use 'mean' or 'max'.")
    return gold - others
