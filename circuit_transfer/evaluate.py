"""Batched evaluation with the label-word readout: accuracy and macro-F1 per language."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from circuit_transfer.data import Example
from circuit_transfer.readout import encode, label_logits
from circuit_transfer.tasks import Task


@dataclass(frozen=True)
class EvalResult:
    """Scores of one model on one set of examples."""

    accuracy: float
    macro_f1: float
    n: int
    predicted_counts: tuple[int, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def macro_f1(preds: Int[Tensor, " n"], labels: Int[Tensor, " n"], n_labels: int) -> float:
    """Unweighted mean over classes of F1 (a class never predicted nor present scores 0)."""
    f1s = []
    for c in range(n_labels):
        tp = ((preds == c) & (labels == c)).sum().item()
        fp = ((preds == c) & (labels != c)).sum().item()
        fn = ((preds != c) & (labels == c)).sum().item()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(f1s) / n_labels


@torch.no_grad()
def predict_scores(
    model,
    task: Task,
    examples: Sequence[Example],
    batch_size: int = 32,
    max_len: int = 128,
    progress: bool | str = False,
) -> Float[Tensor, "n n_labels"]:
    """Label-word logits for every example, in input order.

    Examples are run in order of length so that batches carry little padding.
    """
    order = sorted(
        range(len(examples)), key=lambda i: len(examples[i].text) + len(examples[i].text_pair or "")
    )
    scores = torch.empty(len(examples), task.n_labels)
    device = model.cfg.device
    was_training = model.training
    model.eval()
    starts = range(0, len(order), batch_size)
    desc = progress if isinstance(progress, str) else "evaluate"
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        batch = encode(model.tokenizer, task, [examples[i] for i in idx], max_len=max_len).to(device)
        logits = model(batch.tokens, attention_mask=batch.attention_mask)
        scores[idx] = label_logits(logits, batch).float().cpu()
    model.train(was_training)
    return scores


def evaluate(
    model,
    task: Task,
    examples: Sequence[Example],
    batch_size: int = 32,
    max_len: int = 128,
    progress: bool | str = False,
) -> EvalResult:
    """Accuracy and macro-F1 of the argmax over label-word logits."""
    if not examples:
        raise ValueError("No examples to evaluate.")
    preds = predict_scores(model, task, examples, batch_size, max_len, progress).argmax(-1)
    labels = torch.tensor([ex.label for ex in examples])
    return EvalResult(
        accuracy=(preds == labels).float().mean().item(),
        macro_f1=macro_f1(preds, labels, task.n_labels),
        n=len(examples),
        predicted_counts=tuple(int((preds == c).sum()) for c in range(task.n_labels)),
    )
