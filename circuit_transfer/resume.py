"""A training run's resumable state, so that an interrupted `train_classifier` continues bit for bit.

A long fine-tuning (a Gemma proxy on XNLI: about 3 hours on one CPU core) may be stopped at any
moment. `train_classifier(..., state_path=...)` saves everything the rest of the run depends on:
the weights, the optimizer's moments and schedule position, the Python and torch random states,
the position in the epoch's shuffled order, the running losses, the curve so far, the best epoch and
its weights. Loading that state and running the same loop gives the weights, curve and selected
epoch that an uninterrupted run gives, bit for bit (tested).

A state is only valid for the run that wrote it. `run_key` hashes what determines the run (training
settings, task, train and valid examples, masks, the starting weights); a state with another key is
refused before any step, with the file to delete to start over.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from circuit_transfer.data import Example
from circuit_transfer.evaluate import ItemPredictions
from circuit_transfer.optim import MaskedAdamW, load_training_state, save_training_state
from circuit_transfer.tasks import Task


def run_key(
    model: torch.nn.Module,
    task: Task,
    train: Sequence[Example],
    valid: Sequence[Example],
    config: Mapping,
    masks: Mapping[str, torch.Tensor] | None,
) -> str:
    """SHA-256 of everything that determines a training run, starting weights included.

    Hashing the weights reads every parameter once (a few seconds for Gemma-3-270M); it is what tells
    a state saved while fine-tuning one checkpoint from one saved for another of the same shape."""
    digest = hashlib.sha256()

    def rows(examples: Sequence[Example]) -> list:
        return [[ex.id, ex.text, ex.text_pair, ex.label] for ex in examples]

    plain = {"config": dict(config), "task": task.to_dict(), "train": rows(train), "valid": rows(valid)}
    digest.update(json.dumps(plain, sort_keys=True, default=str).encode())
    tensors = [("param", n, p) for n, p in model.named_parameters()]
    tensors += [("mask", n, m) for n, m in sorted((masks or {}).items())]
    for kind, name, tensor in tensors:
        value = tensor.detach().contiguous().cpu()
        digest.update(f"{kind}:{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(memoryview(value.view(torch.uint8).numpy()))
    return digest.hexdigest()


@dataclass
class LoopState:
    """Where `train_classifier`'s loop stands, besides the weights and the optimizer.

    Attributes:
        epoch: the epoch being trained (1-based); `epochs + 1` once the last epoch is evaluated.
        next_batch: index into `order` of the next batch's first example.
        shuffled: `order` already holds this epoch's shuffle (a state saved mid-epoch).
        order: the training examples' positions, in the current shuffled order.
        losses: this epoch's batch losses so far.
        curve, best_accuracy, best_epoch, best_weights, valid_items: as in `TrainResult`.
        python_rng, torch_rng: the loop's `random.Random` state and torch's CPU generator state.
    """

    epoch: int
    next_batch: int
    shuffled: bool
    order: list[int]
    losses: list[float]
    curve: list[dict]
    best_accuracy: float
    best_epoch: int
    best_weights: dict[str, torch.Tensor]
    valid_items: list[ItemPredictions]
    python_rng: tuple = ()
    torch_rng: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.uint8))


def save_state(path: str | os.PathLike, key: str, model, optimizer: MaskedAdamW, loop: LoopState) -> None:
    """Atomically write the run's state: the previous state stays whole until the new one replaces it."""
    extra = {
        "key": key,
        "epoch": loop.epoch,
        "next_batch": loop.next_batch,
        "shuffled": loop.shuffled,
        "order": list(loop.order),
        "losses": list(loop.losses),
        "curve": json.dumps(loop.curve),
        "best_accuracy": loop.best_accuracy,
        "best_epoch": loop.best_epoch,
        "best_weights": loop.best_weights,
        "valid_items": [
            {"ids": list(v.ids), "gold": v.gold, "predicted": v.predicted, "label_logits": v.label_logits}
            for v in loop.valid_items
        ],
        "python_rng": loop.python_rng,
        "torch_rng": loop.torch_rng,
    }
    save_training_state(path, model, optimizer, extra)


def load_state(
    path: str | os.PathLike, key: str, model, optimizer: MaskedAdamW, rng: random.Random
) -> LoopState:
    """Load a state saved by `save_state` into `model`, `optimizer`, the loop's `rng` and torch's CPU
    generator (in place); returns the loop's state.

    Raises:
        ValueError: the state was saved by another run (other settings, data, masks or weights);
            nothing has been loaded then.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["extra"]["key"]
    if saved != key:
        raise ValueError(
            f"{path} is the saved state of another training run (other settings, data, masks or starting "
            "weights), so it cannot be resumed here: delete it to train from the start, or run with the "
            "settings it was saved with."
        )
    extra = load_training_state(path, model, optimizer)
    python_rng = extra["python_rng"]
    loop = LoopState(
        epoch=int(extra["epoch"]),
        next_batch=int(extra["next_batch"]),
        shuffled=bool(extra["shuffled"]),
        order=[int(i) for i in extra["order"]],
        losses=[float(x) for x in extra["losses"]],
        curve=json.loads(extra["curve"]),
        best_accuracy=float(extra["best_accuracy"]),
        best_epoch=int(extra["best_epoch"]),
        best_weights={n: t.clone() for n, t in extra["best_weights"].items()},
        valid_items=[
            ItemPredictions(
                tuple(v["ids"]), v["gold"].clone(), v["predicted"].clone(), v["label_logits"].clone()
            )
            for v in extra["valid_items"]
        ],
        python_rng=(python_rng[0], tuple(python_rng[1]), python_rng[2]),
        torch_rng=extra["torch_rng"].clone(),
    )
    rng.setstate(loop.python_rng)
    torch.set_rng_state(loop.torch_rng)
    return loop
