"""The output of a CD-T decomposition: relevant parts per source, irrelevant parts on demand."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from jaxtyping import Float
from torch import Tensor

Head = tuple[int, int]
"""A source head as (layer, head index)."""


class _Remainder(Mapping[str, Tensor]):
    """Read-only mapping name -> full - beta, computed on access (gamma is never stored)."""

    def __init__(self, full: Mapping[str, Tensor], beta: Mapping[str, Tensor]):
        self._full = full
        self._beta = beta

    def __getitem__(self, name: str) -> Tensor:
        return self._full[name] - self._beta[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._beta)

    def __len__(self) -> int:
        return len(self._beta)


@dataclass(frozen=True)
class DecompositionResult:
    """Relevant (beta) and irrelevant (gamma) parts of the logits and recorded hooks, per source.

    Attributes:
        heads: the sources, as (layer, head), in the order of the leading `n_sources` axis.
        beta_logits: relevant part of the logits, `[n_sources, batch, pos, vocab]`, or
            `[n_sources, batch, vocab]` when only one position per example was asked for; `vocab`
            is `unembed_columns` when given.
        full_logits: the clean run's logits at the same positions and columns.
        beta: relevant part of each recorded hook, keyed by TransformerLens hook name, with a
            leading `n_sources` axis before TransformerLens's own layout.
        full: the clean run's activation for each recorded hook (no `n_sources` axis).
    """

    heads: list[Head]
    beta_logits: Float[Tensor, "n_sources batch *pos vocab"]
    full_logits: Float[Tensor, "batch *pos vocab"]
    beta: dict[str, Tensor] = field(default_factory=dict)
    full: dict[str, Tensor] = field(default_factory=dict)

    @property
    def gamma_logits(self) -> Float[Tensor, "n_sources batch *pos vocab"]:
        """Irrelevant part of the logits: full - beta (completeness by construction)."""
        return self.full_logits - self.beta_logits

    @property
    def gamma(self) -> Mapping[str, Tensor]:
        """Irrelevant part of each recorded hook, computed as full - beta when read."""
        return _Remainder(self.full, self.beta)
