"""Batched evaluation with the label-word readout: accuracy and macro-F1 per language, and the
per-item predictions behind them (item id, gold label, predicted label, label-word logits), so that
item-level statistics (a paired bootstrap over test items) can be computed after the fact.

Predictions are kept out of the JSON summaries (`EvalResult.to_dict`); `save_predictions` writes
them compactly to an `.npz` file beside a run's `result.json`, and `load_predictions` reads them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from circuit_transfer.data import Example
from circuit_transfer.io import atomic_write
from circuit_transfer.models.logits import label_scores
from circuit_transfer.readout import encode
from circuit_transfer.tasks import Task


@dataclass(frozen=True, eq=False)
class ItemPredictions:
    """What a model said about every item of one evaluation set, in input order.

    Attributes:
        ids: the examples' ids (`Example.id`), so two runs on the same set can be paired by item.
        gold: the gold label of every item.
        predicted: argmax of the label logits.
        label_logits: the label-word logits the prediction was read from.
    """

    ids: tuple[str, ...]
    gold: Int[Tensor, " n"]
    predicted: Int[Tensor, " n"]
    label_logits: Float[Tensor, "n n_labels"]

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not (len(self.gold) == len(self.predicted) == self.label_logits.shape[0] == n):
            raise ValueError(
                f"ItemPredictions fields disagree in length: {n} ids, {len(self.gold)} gold, "
                f"{len(self.predicted)} predicted, {self.label_logits.shape[0]} logit rows."
            )

    @property
    def correct(self) -> Int[Tensor, " n"]:
        """1 where the prediction is the gold label, else 0."""
        return (self.predicted == self.gold).long()

    def to_json(self) -> dict:
        """Plain lists (for small JSON caches; run folders use `save_predictions`)."""
        return {
            "ids": list(self.ids),
            "gold": self.gold.tolist(),
            "predicted": self.predicted.tolist(),
            "label_logits": self.label_logits.tolist(),
        }

    @classmethod
    def from_json(cls, d: Mapping) -> ItemPredictions:
        return cls(
            ids=tuple(str(i) for i in d["ids"]),
            gold=torch.tensor(d["gold"], dtype=torch.long),
            predicted=torch.tensor(d["predicted"], dtype=torch.long),
            label_logits=torch.tensor(d["label_logits"], dtype=torch.float32).reshape(len(d["ids"]), -1),
        )


@dataclass(frozen=True)
class EvalResult:
    """Scores of one model on one set of examples, with the per-item predictions they come from."""

    accuracy: float
    macro_f1: float
    n: int
    predicted_counts: tuple[int, ...]
    items: ItemPredictions | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        """The summary scores (JSON-ready); the per-item predictions are left out."""
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "n": self.n,
            "predicted_counts": list(self.predicted_counts),
        }

    @classmethod
    def from_items(cls, items: ItemPredictions, n_labels: int) -> EvalResult:
        """Accuracy, macro-F1 and the prediction histogram of a set of per-item predictions."""
        preds, labels = items.predicted, items.gold
        return cls(
            accuracy=items.correct.float().mean().item(),
            macro_f1=macro_f1(preds, labels, n_labels),
            n=len(items.ids),
            predicted_counts=tuple(int((preds == c).sum()) for c in range(n_labels)),
            items=items,
        )


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
        scores[idx] = label_scores(model, batch).float().cpu()
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
    """Accuracy and macro-F1 of the argmax over label-word logits, with the per-item predictions."""
    if not examples:
        raise ValueError("No examples to evaluate.")
    scores = predict_scores(model, task, examples, batch_size, max_len, progress)
    items = ItemPredictions(
        ids=tuple(str(ex.id) for ex in examples),
        gold=torch.tensor([ex.label for ex in examples], dtype=torch.long),
        predicted=scores.argmax(-1),
        label_logits=scores,
    )
    return EvalResult.from_items(items, task.n_labels)


def save_predictions(path: str | os.PathLike, sets: Mapping[str, ItemPredictions]) -> Path:
    """Write named prediction sets (e.g. "after/jav") to one compressed `.npz`, atomically.

    Arrays are stored as `<set>/ids` (strings), `<set>/gold`, `<set>/predicted` (int16) and
    `<set>/label_logits` (float32): a 400-sentence test set takes a few kilobytes."""
    arrays: dict[str, np.ndarray] = {}
    for name, items in sets.items():
        if not name:
            raise ValueError("a prediction set needs a name (e.g. 'after/jav')")
        arrays[f"{name}/ids"] = np.array(items.ids, dtype=np.str_)
        arrays[f"{name}/gold"] = items.gold.numpy().astype(np.int16)
        arrays[f"{name}/predicted"] = items.predicted.numpy().astype(np.int16)
        arrays[f"{name}/label_logits"] = items.label_logits.float().numpy()

    def write(tmp: Path) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        tmp.write_bytes(buffer.getvalue())

    return atomic_write(path, write)


def load_predictions(path: str | os.PathLike) -> dict[str, ItemPredictions]:
    """The prediction sets written by `save_predictions`, by name."""
    with np.load(Path(path), allow_pickle=False) as data:
        names = sorted({key.rsplit("/", 1)[0] for key in data.files})
        return {
            name: ItemPredictions(
                ids=tuple(str(i) for i in data[f"{name}/ids"]),
                gold=torch.from_numpy(data[f"{name}/gold"].astype(np.int64)),
                predicted=torch.from_numpy(data[f"{name}/predicted"].astype(np.int64)),
                label_logits=torch.from_numpy(data[f"{name}/label_logits"]),
            )
            for name in names
        }


def degenerate_readout(
    predicted_counts: Sequence[int], max_share: float = 0.75, min_share: float = 0.05
) -> str | None:
    """Why a readout is degenerate (None if it is not): one label takes most predictions, or a label is
    (almost) never predicted.

    A retention language on which the proxy answers one label for most inputs cannot show forgetting:
    its accuracy is the share of that label, whatever the model knows (docs/method.md §7: English NusaX
    predicted neutral for 166 of 200; German XNLI never predicted the middle label)."""
    total = sum(predicted_counts)
    if total == 0:
        return "no predictions"
    shares = [c / total for c in predicted_counts]
    top = max(range(len(shares)), key=shares.__getitem__)
    if shares[top] > max_share:
        return f"label {top} takes {predicted_counts[top]} of {total} predictions (> {max_share:.0%})"
    rare = [i for i, share in enumerate(shares) if share < min_share]
    if rare:
        return f"label {rare[0]} is predicted for {predicted_counts[rare[0]]} of {total} (< {min_share:.0%})"
    return None
