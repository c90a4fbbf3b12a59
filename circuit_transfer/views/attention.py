"""Circuit heads on text: the attention patterns of a circuit's heads on one prompt (circuitsvis)."""

from __future__ import annotations

import circuitsvis
import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuit_transfer.data import Example
from circuit_transfer.discovery import Circuit
from circuit_transfer.models.backend import Model
from circuit_transfer.tasks import Task
from circuit_transfer.views.colours import ATTENTION, attention_legend
from circuit_transfer.views.inputs import check_circuit, head_label, prepare_prompt
from circuit_transfer.views.page import View


@torch.no_grad()
def circuit_patterns(
    model: Model, circuit: Circuit, tokens: Int[Tensor, "1 pos"]
) -> Float[Tensor, "n_circuit_heads pos pos"]:
    """Attention pattern (destination x source) of each circuit head, in `circuit.heads` order."""
    check_circuit(circuit, model)
    layers = sorted({ly for ly, _ in circuit.heads})
    names = {f"blocks.{ly}.attn.hook_pattern" for ly in layers}
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return (
        torch.stack([cache[f"blocks.{ly}.attn.hook_pattern"][0, h] for ly, h in circuit.heads]).float().cpu()
    )


def circuit_attention(
    model: Model,
    circuit: Circuit,
    example: Example | str,
    task: Task,
    max_len: int = 128,
) -> View:
    """circuitsvis `attention_heads` of the circuit's heads on one prompt.

    Head names carry layer, head and relevance (`L7H3 +0.42`), highest relevance first when the
    circuit has scores.

    Args:
        example: an `Example` (rendered with the task's template) or the text to render.

    Attention weights are drawn in grey (darker = more attention): red and blue are kept for
    "toward" and "away from" the label in every view (`views.colours`).

    Returns:
        a `View` (legend + circuitsvis `attention_heads`); save it with `views.save_html`.
    """
    check_circuit(circuit, model)
    prompt = prepare_prompt(model, task, example, max_len)
    patterns = circuit_patterns(model, circuit, prompt.tokens)
    order = list(range(len(circuit.heads)))
    if circuit.scores is not None:
        order.sort(key=lambda i: (-circuit.scores[circuit.heads[i]], i))
    rendered = circuitsvis.attention.attention_heads(
        attention=patterns[order],
        tokens=prompt.str_tokens,
        attention_head_names=[head_label(circuit, circuit.heads[i]) for i in order],
        mask_upper_tri=True,
        positive_color=ATTENTION,
        negative_color=ATTENTION,
    )
    return View(parts=(("", rendered),), legend=attention_legend())
