"""The model's real parameter count: tied weights counted once.

TransformerLens unties tied embeddings: a model whose Hugging Face config says
`tie_word_embeddings=True` (SmolLM2, Gemma, GPT-2) gets `unembed.W_U` as a separate copy of
`embed.W_E` transposed. Counting every entry of `model.parameters()` then counts the vocabulary
matrix twice (SmolLM2-135M: 163M instead of 134.5M). Here the copy is counted once: an entry of
`W_E` and its transposed twin in `W_U` are one parameter, trainable (or changed) when either
copy is. The flag comes from the model's config (`cfg.tie_word_embeddings`), which the loaders set
from the Hugging Face config and checkpoints keep.

Two notes on what is counted:
- Fine-tuning a TransformerLens model trains the two copies separately, so after full fine-tuning
  they differ; the count is still the architecture's (one parameter per pair), which is what a
  fraction of "the model's parameters" refers to.
- TransformerLens also holds bias tensors that some source architectures lack (Llama has no
  attention, MLP or unembedding biases; TransformerLens keeps zero ones). They are counted: they are
  trainable in this model. On SmolLM2-135M they add 0.16M (0.1%) to the Hugging Face count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from circuit_transfer.models.bridge import is_bridge, split_views

TIED_COPY = "unembed.W_U"
TIED_ORIGINAL = "embed.W_E"


def tied_copies(model) -> dict[str, tuple[str, Callable[[Tensor], Tensor]]]:
    """Copies of tied weights: copy name -> (original name, map from the copy to the original's layout).

    Raises:
        ValueError: the config says the embeddings are tied but the shapes do not match.
    """
    if is_bridge(model):
        # The HF module's tied weights are one Parameter, listed once; the bridge's views into a
        # fused HF parameter (GPT-2's split q/k/v of c_attn) are copies of entries of their owner.
        shapes = {name: p.shape for name, p in model.named_parameters()}
        return {
            name: (owner, _scatter(shapes[owner], view)) for name, (owner, view) in split_views(model).items()
        }
    if not getattr(model.cfg, "tie_word_embeddings", False):
        return {}
    params = dict(model.named_parameters())
    copy, original = params.get(TIED_COPY), params.get(TIED_ORIGINAL)
    if copy is None or original is None or tuple(copy.T.shape) != tuple(original.shape):
        raise ValueError(
            f"cfg.tie_word_embeddings is True but {TIED_COPY} {None if copy is None else tuple(copy.shape)} "
            f"is not the transpose of {TIED_ORIGINAL} {None if original is None else tuple(original.shape)}: "
            "set cfg.tie_word_embeddings = False if this model's embeddings are not tied."
        )
    return {TIED_COPY: (TIED_ORIGINAL, lambda t: t.T)}


def _scatter(shape: torch.Size, view: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """A map from a view's layout to its owner's: the view's entries in place, zeros elsewhere."""

    def to_owner(t: Tensor) -> Tensor:
        out = torch.zeros(shape, dtype=t.dtype, device=t.device)
        view(out).copy_(t)
        return out

    return to_owner


def count_parameters(model, selected: Mapping[str, Tensor] | None = None) -> int:
    """Real parameters of `model` (tied weights once), or those of them that `selected` marks.

    Args:
        selected: parameter name -> tensor of that parameter's shape, nonzero where an entry counts
            (a mask of `masking`, or `param != base` for changed entries). A tied pair counts when
            either copy is marked. Parameters missing from the mapping count as unmarked.
    """
    copies = tied_copies(model)
    total = 0
    for name, param in model.named_parameters():
        if name in copies:
            if selected is None:
                continue
            original, to_original = copies[name]
            mark = selected.get(name)
            if mark is None:
                continue
            twin = selected.get(original)
            mark = to_original(mark) != 0
            if twin is not None:
                mark = mark & ~(twin != 0)  # pairs already counted through the original
            total += int(mark.sum())
        elif selected is None:
            total += param.numel()
        elif name in selected:
            total += int((selected[name] != 0).sum())
    return total


def changed_entries(model, base: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """name -> bool tensor, True where a parameter differs from `base` (bitwise; NaN counts as changed)."""
    out = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            ref = base[name]
            out[name] = ~((param == ref) | (torch.isnan(param) & torch.isnan(ref)))
    return out
