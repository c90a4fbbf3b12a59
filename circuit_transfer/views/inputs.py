"""What every model-based view needs: a checked circuit and one encoded prompt."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from circuit_transfer.data import Example
from circuit_transfer.discovery import Circuit, head_name
from circuit_transfer.models.backend import Model
from circuit_transfer.models.logits import label_scores
from circuit_transfer.readout import encode
from circuit_transfer.tasks import Task


class EmptyCircuitError(ValueError):
    """A circuit without heads was given to a view that draws heads."""


def check_circuit(circuit: Circuit, model: Model | None = None) -> None:
    """Refuse an empty circuit, and (with `model`) a model of another shape (`CircuitModelMismatch`)."""
    if len(circuit.heads) == 0:
        raise EmptyCircuitError(
            f"circuit has no heads: nothing to render ({circuit.method} circuit of "
            f"{circuit.n_layers}x{circuit.n_heads} {circuit.model_name!r} on {circuit.task}/{circuit.lang})."
        )
    if model is not None:
        circuit.validate(model)


def head_label(circuit: Circuit, head: tuple[int, int]) -> str:
    """`L7H3 +0.42` (name and relevance) when the circuit has scores, else `L7H3`."""
    if circuit.scores is None:
        return head_name(head)
    return f"{head_name(head)} {circuit.scores[head]:+.3g}"


@dataclass(frozen=True)
class Prompt:
    """One rendered, tokenized prompt and the label the views read.

    Attributes:
        tokens: `[1, pos]` token ids (no padding).
        str_tokens: each token decoded on its own (newlines shown as `\\n`).
        label: the label whose direction is read: the example's gold label, or, for a bare text,
            the model's predicted label.
        label_ids: vocabulary id of each label word's first token.
        gold: whether `label` is a gold label (False: predicted).
    """

    tokens: Int[Tensor, "1 pos"]
    str_tokens: list[str]
    label: int
    label_ids: Int[Tensor, " n_labels"]
    gold: bool
    text: str

    @property
    def final(self) -> int:
        return self.tokens.shape[1] - 1


def prepare_prompt(model: Model, task: Task, example: Example | str, max_len: int = 128) -> Prompt:
    """Render `example` (an `Example`, or the text to put in the task's template) and tokenize it.

    A bare text has no gold label, so the view reads the direction of the model's prediction.
    """
    gold = isinstance(example, Example)
    ex = example if gold else Example(id="text", text=str(example), label=0, lang="")
    batch = encode(model.tokenizer, task, [ex], max_len=max_len)
    tokens = batch.tokens.to(model.cfg.device)
    label = ex.label
    if not gold:
        with torch.no_grad():
            label = int(label_scores(model, batch)[0].argmax())
    str_tokens = [model.tokenizer.decode([t]).replace("\n", "\\n") for t in batch.tokens[0].tolist()]
    return Prompt(
        tokens=tokens,
        str_tokens=str_tokens,
        label=label,
        label_ids=batch.label_ids,
        gold=gold,
        text=task.render(ex),
    )
