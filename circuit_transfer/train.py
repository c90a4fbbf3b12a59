"""Supervised fine-tuning with the label-word readout, with epoch selection on a validation set.

One loop serves the proxy checkpoint (all parameters trainable) and every transfer method (a
head-level mask from `masking`): the same schedule, clipping and selection make comparisons fair.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from circuit_transfer.data import Example
from circuit_transfer.evaluate import ItemPredictions, evaluate
from circuit_transfer.models.logits import readout_logits
from circuit_transfer.optim import MaskedAdamW, OptimConfig
from circuit_transfer.readout import encode
from circuit_transfer.tasks import Task


@dataclass(frozen=True)
class TrainConfig:
    """How to fine-tune.

    Attributes:
        epochs: passes over the training set; the epoch with the best validation accuracy is kept.
        loss: "label": cross-entropy over the label-word logits (default, docs/method.md §2);
            "vocab": full-vocabulary cross-entropy on the gold label word's first token.
        start_is_candidate: the untrained model (epoch 0) competes in epoch selection, so a run
            whose training never helps on the validation set returns the model it started from.
    """

    epochs: int = 5
    batch_size: int = 16
    max_len: int = 128
    loss: Literal["label", "vocab"] = "label"
    seed: int = 0
    start_is_candidate: bool = True
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    """Per-epoch curve and the selected epoch (whose weights are left in the model).

    `valid_items[e]` holds the per-item validation predictions after epoch e (0 = before training);
    they are left out of `to_dict`."""

    curve: list[dict]
    best_epoch: int
    best_valid_accuracy: float
    valid_items: list[ItemPredictions] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {
            "curve": self.curve,
            "best_epoch": self.best_epoch,
            "best_valid_accuracy": self.best_valid_accuracy,
        }


def train_classifier(
    model,
    task: Task,
    train: Sequence[Example],
    valid: Sequence[Example],
    config: TrainConfig = TrainConfig(),
    masks: dict[str, torch.Tensor] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Fine-tune `model` in place on `train`, keep the epoch with the best `valid` accuracy.

    Only parameters with `requires_grad=True` are optimised; `masks` (parameter name -> 0/1 tensor)
    confine updates, weight decay included, to the entries marked 1 (see `masking`). Epoch 0 (the
    model before training) is a candidate too unless `config.start_is_candidate` is False.
    """
    if not train:
        raise ValueError("No training examples.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("No trainable parameters: nothing to fine-tune.")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    steps_per_epoch = -(-len(train) // config.batch_size)
    optimizer = MaskedAdamW(model, config.optim, total_steps=steps_per_epoch * config.epochs, masks=masks)

    best_state: dict[str, torch.Tensor] = {}

    def keep_best() -> None:
        """Copy the trainable parameters into `best_state`, allocated once and then overwritten in
        place: a model-sized copy (1.7 GB for Gemma-3-270M) is never held twice."""
        for n, p in model.named_parameters():
            if p.requires_grad:
                if n in best_state:
                    best_state[n].copy_(p.detach())
                else:
                    best_state[n] = p.detach().clone()

    start = evaluate(model, task, valid, config.batch_size * 2, config.max_len)
    curve = [
        {"epoch": 0, "train_loss": None, "valid_accuracy": start.accuracy, "valid_macro_f1": start.macro_f1}
    ]
    valid_items = [start.items]
    best = (start.accuracy if config.start_is_candidate else float("-inf"), 0)
    if config.start_is_candidate:
        keep_best()
    order = list(train)
    for epoch in range(1, config.epochs + 1):
        model.train()
        rng.shuffle(order)
        losses = []
        for begin in tqdm(
            range(0, len(order), config.batch_size), desc=f"epoch {epoch}", disable=not progress, leave=False
        ):
            batch = encode(model.tokenizer, task, order[begin : begin + config.batch_size], config.max_len)
            batch = batch.to(model.cfg.device)
            if config.loss == "label":
                loss = F.cross_entropy(readout_logits(model, batch, batch.label_ids).float(), batch.labels)
            else:
                loss = F.cross_entropy(readout_logits(model, batch).float(), batch.label_ids[batch.labels])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        result = evaluate(model, task, valid, config.batch_size * 2, config.max_len)
        valid_items.append(result.items)
        curve.append(
            {
                "epoch": epoch,
                "train_loss": sum(losses) / len(losses),
                "valid_accuracy": result.accuracy,
                "valid_macro_f1": result.macro_f1,
            }
        )
        if result.accuracy > best[0]:
            best = (result.accuracy, epoch)
            keep_best()
    model.eval()
    with torch.no_grad():
        named = dict(model.named_parameters())
        for name, value in best_state.items():
            named[name].copy_(value)
    return TrainResult(curve=curve, best_epoch=best[1], best_valid_accuracy=best[0], valid_items=valid_items)
