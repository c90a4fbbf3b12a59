"""Token contributions: how much each input token pushes the decision through the circuit's heads.

Attribution (value-weighted attention, direct path). For a prompt whose readout position is t,
the label y being read (the example's correct label, or the model's prediction for a bare text) and each circuit
head s = (l, h) with attention pattern A_s and values v_s (`blocks.l.attn.hook_v`, b_V included):

    contribution_s(j) = A_s[t, j] * readout(v_s[j] @ W_O[l][h])
    contribution(j)   = sum over circuit heads s of contribution_s(j)

`readout(r) = w_y . (W_U[:, label_ids]^T norm(r))` is the *direct path* of a residual-stream vector
to the task direction: `norm` is the final LayerNorm/RMSNorm linearised at the real forward pass
(centred when the model centres, divided by the real `ln_final.hook_scale` at t, times the norm
weight; its bias is not attributed), and `w_y` are the task-direction weights of docs/method.md §2
(+1 on y, -1/(n_labels-1) on the others; margin "max": -1 on the runner-up of the real logits).
b_O and b_U are not attributed (no token owns them).

Since the pattern row sums the values into the head's output, `sum_j contribution_s(j)` equals the
head's direct-path contribution `readout(z_s[t] @ W_O[l][h])` exactly (up to float error): the
token view splits each head's direct effect on the margin over the source tokens. It ignores
what the heads do through later layers (CD-T's relevance includes that), so it explains the heads'
*direct* effect only, which is what a reader of the attention pattern can check by eye.
"""

from __future__ import annotations

from dataclasses import dataclass

import circuitsvis
import einops
import torch
from jaxtyping import Float
from torch import Tensor

from circuit_transfer.data import Example
from circuit_transfer.discovery import Circuit, task_weights
from circuit_transfer.discovery.relevance import Head
from circuit_transfer.models.access import final_norm
from circuit_transfer.models.backend import Model
from circuit_transfer.readout import Margin
from circuit_transfer.tasks import Task
from circuit_transfer.views.colours import AWAY, TOWARD, tokens_legend
from circuit_transfer.views.inputs import check_circuit, head_label, prepare_prompt
from circuit_transfer.views.page import View


@dataclass(frozen=True)
class TokenContributions:
    """Per-token, per-head direct-path contributions to the task margin (see the module docstring).

    Attributes:
        per_head: `[n_circuit_heads, pos]` contribution of each source token through each head.
        head_direct: each head's direct-path contribution from its output at the readout position
            (equals `per_head.sum(-1)`).
        label: the label whose direction is read; `gold` says whether it is the example's correct
            label (False: the model's prediction for a bare text).
    """

    str_tokens: list[str]
    heads: tuple[Head, ...]
    per_head: Float[Tensor, "n_circuit_heads pos"]
    head_direct: Float[Tensor, " n_circuit_heads"]
    label: int
    gold: bool

    @property
    def total(self) -> Float[Tensor, " pos"]:
        """Contribution of each token summed over the circuit's heads."""
        return self.per_head.sum(0)


def direct_readout(
    model: Model,
    vectors: Float[Tensor, "... d_model"],
    scale: Float[Tensor, ""] | None,
    direction: Float[Tensor, " d_model"],
) -> Float[Tensor, "..."]:
    """`direction . norm(vectors)` with the final norm linearised (its scale frozen, bias dropped).

    The norm is read through the model-access layer (`models.access.final_norm`), so its weight
    is the one applied on either backend (a Gemma bridge's `1 + w`)."""
    norm = final_norm(model)
    if norm.centres:
        vectors = vectors - vectors.mean(-1, keepdim=True)
    if norm.kind != "none":
        if scale is None:
            raise ValueError(f"normalisation {norm.kind!r} needs the final norm's scale.")
        vectors = vectors / scale
        if norm.weight is not None:
            vectors = vectors * norm.weight
    return einops.einsum(vectors, direction, "... d_model, d_model -> ...")


@torch.no_grad()
def token_contributions(
    model: Model,
    circuit: Circuit,
    example: Example | str,
    task: Task,
    margin: Margin = "mean",
    max_len: int = 128,
) -> TokenContributions:
    """Value-weighted attention contributions of every token to the margin through the circuit."""
    check_circuit(circuit, model)
    prompt = prepare_prompt(model, task, example, max_len)
    t = prompt.final
    layers = sorted({ly for ly, _ in circuit.heads})
    names = {f"blocks.{ly}.attn.{n}" for ly in layers for n in ("hook_pattern", "hook_v", "hook_z")}
    names.add("ln_final.hook_scale")
    logits, cache = model.run_with_cache(prompt.tokens, names_filter=lambda n: n in names)
    label_ids = prompt.label_ids.to(logits.device)
    weights = task_weights(
        logits[:, t, label_ids], torch.tensor([prompt.label], device=logits.device), margin
    )
    direction = einops.einsum(
        model.W_U[:, label_ids], weights[0].to(model.W_U.dtype), "d_model n_labels, n_labels -> d_model"
    )
    scale = cache["ln_final.hook_scale"][0, t, 0] if "ln_final.hook_scale" in cache.cache_dict else None
    per_head, direct = [], []
    for ly, h in circuit.heads:
        v = cache[f"blocks.{ly}.attn.hook_v"][0]  # [pos, n_kv_heads, d_head] (GQA: fewer kv heads)
        kv = h // (model.cfg.n_heads // v.shape[1])
        w_o = model.blocks[ly].attn.W_O[h]
        pattern: Float[Tensor, " pos"] = cache[f"blocks.{ly}.attn.hook_pattern"][0, h, t]
        written = einops.einsum(v[:, kv], w_o, "pos d_head, d_head d_model -> pos d_model")
        per_head.append(pattern * direct_readout(model, written, scale, direction))
        z_t = cache[f"blocks.{ly}.attn.hook_z"][0, t, h]
        direct.append(direct_readout(model, z_t @ w_o, scale, direction))
    return TokenContributions(
        str_tokens=prompt.str_tokens,
        heads=circuit.heads,
        per_head=torch.stack(per_head).float().cpu(),
        head_direct=torch.stack(direct).float().cpu(),
        label=prompt.label,
        gold=prompt.gold,
    )


def contributions_view(
    model: Model,
    circuit: Circuit,
    example: Example | str,
    task: Task,
    per_head: bool = False,
    margin: Margin = "mean",
    max_len: int = 128,
) -> View:
    """circuitsvis `colored_tokens` of `token_contributions(...).total`, with its legend.

    Red pushes toward the label read (the correct label, or the prediction for a bare text),
    blue away from it (`views.colours`; circuitsvis's default colours are the opposite, so they
    are passed explicitly). The strongest token of a view gets the full colour. With `per_head`,
    the total and then one row per head, all heads on one scale (hover a token for its value).
    """
    contrib = token_contributions(model, circuit, example, task, margin, max_len)

    def tokens(values: Float[Tensor, " pos"], bound: float):
        bound = bound or 1.0
        return circuitsvis.tokens.colored_tokens(
            contrib.str_tokens,
            values,
            min_value=-bound,
            max_value=bound,
            negative_color=AWAY,
            positive_color=TOWARD,
        )

    parts = [("circuit total" if per_head else "", tokens(contrib.total, float(contrib.total.abs().max())))]
    if per_head:
        bound = float(contrib.per_head.abs().max())
        parts += [
            (head_label(circuit, head), tokens(row, bound))
            for head, row in zip(contrib.heads, contrib.per_head)
        ]
    return View(parts=tuple(parts), legend=tokens_legend(label_text(task, contrib)))


def label_text(task: Task, contrib: TokenContributions) -> str:
    """`correct label 'positive'` or `predicted label 'positive'`, for captions."""
    kind = "correct" if contrib.gold else "predicted"
    return f"{kind} label {task.labels[contrib.label]!r}"


__all__ = ["TokenContributions", "contributions_view", "direct_readout", "label_text", "token_contributions"]
