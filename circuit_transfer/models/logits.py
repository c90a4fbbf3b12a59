"""The logits the task reads, computed for just the final position and the label columns.

Training, evaluation and discovery read only the label words' logits at each prompt's final
position. `readout_logits` computes just those: the blocks, then the final norm and the label rows
of the unembedding at that one position, never the full `[batch, pos, d_vocab]` logits (with
Gemma 3's 262k-token vocabulary the full unembedding costs about as much as the rest of the
forward pass, and TransformerLens copies `W_U` on every call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuit_transfer.models.backend import Model
from circuit_transfer.models.bridge import is_bridge
from circuit_transfer.readout import TaskBatch, final_logits


def readout_logits(
    model: Model,
    batch: TaskBatch,
    columns: Int[Tensor, " k"] | None = None,
    fwd_hooks: Sequence[tuple[str | Callable, Callable]] = (),
) -> Float[Tensor, "batch k"]:
    """Logits at each prompt's final position, for the vocabulary `columns` only (all when None).

    Equal to `final_logits(model(tokens, attention_mask=...), final_pos)[:, columns]` (to float
    rounding), without the unembedding at every position: the blocks run as usual (`fwd_hooks`
    apply, as in `run_with_hooks`; gradients flow when enabled), then the final norm, the chosen
    rows of `W_U` and `b_U`, and the model's output soft-cap if it has one, at the final position.

    Args:
        model: a HookedTransformer; a TransformerBridge is read through its full logits.
        columns: vocabulary ids, e.g. `batch.label_ids`; None for the whole vocabulary (still
            one position per prompt).
    """
    device = model.cfg.device
    tokens, mask = batch.tokens.to(device), batch.attention_mask.to(device)
    if is_bridge(model):  # the bridge's unembedding is the HF head: read the full logits
        logits = model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=list(fwd_hooks))
        logits = final_logits(logits, batch.final_pos.to(logits.device))
        return logits if columns is None else logits[:, columns.to(logits.device)]
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        resid = model(tokens, attention_mask=mask, stop_at_layer=model.cfg.n_layers)
    x = final_logits(resid, batch.final_pos.to(resid.device))
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    W_U, b_U = model.unembed.W_U, model.unembed.b_U
    if columns is not None:
        columns = columns.to(W_U.device)
        W_U, b_U = W_U[:, columns], b_U[columns]
    logits = x @ W_U + b_U
    cap = model.cfg.output_logits_soft_cap
    if cap is not None and cap > 0:  # TransformerLens's soft-cap: cap * tanh(logits / cap)
        logits = cap * torch.tanh(logits / cap)
    return logits


def label_scores(
    model: Model, batch: TaskBatch, fwd_hooks: Sequence[tuple[str | Callable, Callable]] = ()
) -> Float[Tensor, "batch n_labels"]:
    """The label words' logits at the readout position (`readout_logits` on `batch.label_ids`)."""
    return readout_logits(model, batch, batch.label_ids, fwd_hooks)
