"""Supervised fine-tuning with the label-word readout, with epoch selection on a validation set.

One loop serves the proxy checkpoint (all parameters trainable) and every transfer method (a
head-level mask from `masking`): the same schedule, clipping and selection make comparisons fair.
"""

from __future__ import annotations

import os
import random
import sys
import time
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
from circuit_transfer.resume import LoopState, load_state, run_key, save_state
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
    state_path: str | os.PathLike | None = None,
    save_every_s: float = 900.0,
) -> TrainResult:
    """Fine-tune `model` in place on `train`, keep the epoch with the best `valid` accuracy.

    Only parameters with `requires_grad=True` are optimised; `masks` (parameter name -> 0/1 tensor)
    confine updates, weight decay included, to the entries marked 1 (see `masking`). Epoch 0 (the
    model before training) is a candidate too unless `config.start_is_candidate` is False.

    `state_path` makes the run resumable (`resume`): its state is saved there after every epoch and
    at least every `save_every_s` seconds of training, atomically; when the file exists at the start,
    the run continues from it and ends as an uninterrupted run would, bit for bit. A state saved by
    another run (other settings, data, masks or starting weights) raises ValueError before any step.
    The file is left in place: delete it once the trained model is saved.
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

    key = run_key(model, task, train, valid, config.to_dict(), masks) if state_path is not None else ""
    if state_path is not None and os.path.isfile(state_path):
        loop = load_state(state_path, key, model, optimizer, rng)
        best_state = loop.best_weights
        if progress:
            print(
                f"resuming from {state_path}: epoch {loop.epoch}, example {loop.next_batch}", file=sys.stderr
            )
    else:
        start = evaluate(model, task, valid, config.batch_size * 2, config.max_len)
        curve = [
            {
                "epoch": 0,
                "train_loss": None,
                "valid_accuracy": start.accuracy,
                "valid_macro_f1": start.macro_f1,
            }
        ]
        best = (start.accuracy if config.start_is_candidate else float("-inf"), 0)
        if config.start_is_candidate:
            keep_best()
        loop = LoopState(
            epoch=1,
            next_batch=0,
            shuffled=False,
            order=list(range(len(train))),  # shuffled like the examples themselves: the same order
            losses=[],
            curve=curve,
            best_accuracy=best[0],
            best_epoch=best[1],
            best_weights=best_state,
            valid_items=[start.items],
        )
    last_save = time.monotonic()

    def save(epoch: int, next_batch: int, shuffled: bool) -> None:
        nonlocal last_save
        loop.epoch, loop.next_batch, loop.shuffled = epoch, next_batch, shuffled
        loop.python_rng, loop.torch_rng = rng.getstate(), torch.get_rng_state()
        save_state(state_path, key, model, optimizer, loop)
        last_save = time.monotonic()

    for epoch in range(loop.epoch, config.epochs + 1):
        model.train()
        if not loop.shuffled:
            rng.shuffle(loop.order)
            loop.losses = []
        loop.shuffled = False
        for begin in tqdm(
            range(loop.next_batch, len(loop.order), config.batch_size),
            desc=f"epoch {epoch}",
            disable=not progress,
            leave=False,
        ):
            rows = [train[i] for i in loop.order[begin : begin + config.batch_size]]
            batch = encode(model.tokenizer, task, rows, config.max_len).to(model.cfg.device)
            if config.loss == "label":
                loss = F.cross_entropy(readout_logits(model, batch, batch.label_ids).float(), batch.labels)
            else:
                loss = F.cross_entropy(readout_logits(model, batch).float(), batch.label_ids[batch.labels])
            loss.backward()
            optimizer.step()
            loop.losses.append(loss.item())
            if state_path is not None and time.monotonic() - last_save >= save_every_s:
                save(epoch, begin + config.batch_size, shuffled=True)
        loop.next_batch = 0
        result = evaluate(model, task, valid, config.batch_size * 2, config.max_len)
        loop.valid_items.append(result.items)
        loop.curve.append(
            {
                "epoch": epoch,
                "train_loss": sum(loop.losses) / len(loop.losses),
                "valid_accuracy": result.accuracy,
                "valid_macro_f1": result.macro_f1,
            }
        )
        if result.accuracy > loop.best_accuracy:
            loop.best_accuracy, loop.best_epoch = result.accuracy, epoch
            keep_best()
        if state_path is not None:
            save(epoch + 1, 0, shuffled=False)
    model.eval()
    with torch.no_grad():
        named = dict(model.named_parameters())
        for name, value in best_state.items():
            named[name].copy_(value)
    return TrainResult(
        curve=loop.curve,
        best_epoch=loop.best_epoch,
        best_valid_accuracy=loop.best_accuracy,
        valid_items=loop.valid_items,
    )
