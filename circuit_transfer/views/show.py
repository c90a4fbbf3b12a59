"""`show`: one circuitsvis view of a circuit on one prompt, for notebooks."""

from __future__ import annotations

from circuit_transfer.data import Example
from circuit_transfer.discovery import Circuit
from circuit_transfer.models.backend import Model
from circuit_transfer.tasks import Task
from circuit_transfer.views.attention import circuit_attention
from circuit_transfer.views.contributions import contributions_view
from circuit_transfer.views.page import View

KINDS = ("heads", "tokens", "tokens-per-head")


def show(
    model: Model,
    circuit: Circuit,
    example: Example | str,
    task: Task,
    kind: str = "heads",
    max_len: int = 128,
) -> View:
    """The circuitsvis object for `circuit` on one prompt (a language's example, or a text).

    Args:
        kind: "heads" (attention patterns of the circuit's heads), "tokens" (each token's
            contribution through the circuit, `token_contributions`), or "tokens-per-head".

    Returns:
        a `View`: the circuitsvis component(s) with a legend of their colours (red pushes toward
        the correct label, blue away; attention in grey). Displays inline in Jupyter; to save it
        use `views.save_html` (it writes the offline `.local_src`, never the CDN-loading `str()`).

    Raises:
        EmptyCircuitError: the circuit has no heads.
        CircuitModelMismatch: the circuit was found on a model of another shape.
    """
    if kind == "heads":
        return circuit_attention(model, circuit, example, task, max_len=max_len)
    if kind in ("tokens", "tokens-per-head"):
        return contributions_view(
            model, circuit, example, task, per_head=kind == "tokens-per-head", max_len=max_len
        )
    raise ValueError(f"Unknown view kind {kind!r}: use 'heads', 'tokens' or 'tokens-per-head'.")
