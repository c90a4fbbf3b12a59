"""The `Circuit`: a set of attention heads of one model, with how it was found.

The masking module consumes `.heads`; everything else is provenance, saved with the heads as JSON.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor

from circuit_transfer.discovery.relevance import Head, HeadScores, head_name
from circuit_transfer.io import atomic_write_json, read_json
from circuit_transfer.models.backend import Model

FORMAT = "circuit-transfer-circuit"
FORMAT_VERSION = 1


class CircuitModelMismatch(ValueError):
    """A circuit used on a model of another shape."""


RANKED_SELECTIONS = ("top-k", "threshold")  # selections that keep the heads scoring highest


@dataclass(frozen=True)
class Boundary:
    """Where a score-ranked selection cut: its lowest-scoring head in, the highest-scoring head out.

    When the two scores are within one standard error (the larger of the two heads' standard errors
    of the mean over discovery examples), the cut is *unstable*: another discovery sample of the same
    size may well swap the two heads, so the circuit is not determined by the data at this k.
    """

    last_in: Head
    last_in_score: float
    last_in_stderr: float
    first_out: Head
    first_out_score: float
    first_out_stderr: float

    @property
    def gap(self) -> float:
        return self.last_in_score - self.first_out_score

    @property
    def unstable(self) -> bool:
        return self.gap <= max(self.last_in_stderr, self.first_out_stderr)

    def describe(self) -> str:
        return (
            f"{head_name(self.last_in)} {self.last_in_score:+.3g} ± {self.last_in_stderr:.2g} (last head in) and "
            f"{head_name(self.first_out)} {self.first_out_score:+.3g} ± {self.first_out_stderr:.2g} (first head out) "
            "are within one standard error: another discovery set may swap them (more discovery examples, "
            "or another k, give a stable cut)"
        )


@dataclass(frozen=True)
class Circuit:
    """A head set of a model with `n_layers x n_heads` heads.

    Attributes:
        heads: sorted tuple of (layer, head).
        method: how it was selected ("top-k", "threshold", "near-zero", "random", "iterative",
            "full", "empty", "manual").
        params: the selection's parameters (k, threshold, seed, rounds, ...).
        scores: the HeadScores it was selected from, if any.
    """

    heads: tuple[Head, ...]
    n_layers: int
    n_heads: int
    model_name: str = ""
    method: str = "manual"
    params: dict[str, Any] = field(default_factory=dict)
    scores: HeadScores | None = field(default=None, compare=False)
    task: str = ""
    lang: str = ""

    def __post_init__(self) -> None:
        heads = tuple(sorted({(int(ly), int(h)) for ly, h in self.heads}))
        for ly, h in heads:
            if not (0 <= ly < self.n_layers and 0 <= h < self.n_heads):
                raise ValueError(
                    f"head {head_name((ly, h))} is out of range for {self.n_layers} layers x {self.n_heads} heads."
                )
        object.__setattr__(self, "heads", heads)

    # construction -----------------------------------------------------------------------------
    @classmethod
    def from_heads(
        cls,
        heads: Iterable[Head],
        model: Model | None = None,
        *,
        n_layers: int = 0,
        n_heads: int = 0,
        **kwargs: Any,
    ) -> Circuit:
        """A circuit from explicit heads, taking the shape (and name) from `model` when given."""
        if model is not None:
            n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
            kwargs.setdefault("model_name", str(model.cfg.model_name))
        return cls(heads=tuple(heads), n_layers=n_layers, n_heads=n_heads, **kwargs)

    @classmethod
    def full(cls, model: Model, **kwargs: Any) -> Circuit:
        """Every head of the model (the full-model control)."""
        cfg = model.cfg
        heads = [(ly, h) for ly in range(cfg.n_layers) for h in range(cfg.n_heads)]
        return cls.from_heads(heads, model, method="full", **kwargs)

    @classmethod
    def empty(cls, model: Model, **kwargs: Any) -> Circuit:
        """No head (every head ablated in faithfulness)."""
        return cls.from_heads((), model, method="empty", **kwargs)

    # views ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.heads)

    def __contains__(self, head: object) -> bool:
        return head in self.heads

    def mask(self) -> Bool[Tensor, "n_layers n_heads"]:
        """True at the circuit's heads."""
        out = torch.zeros(self.n_layers, self.n_heads, dtype=torch.bool)
        for ly, h in self.heads:
            out[ly, h] = True
        return out

    @property
    def n_total(self) -> int:
        return self.n_layers * self.n_heads

    @property
    def boundary(self) -> Boundary | None:
        """The cut of a top-k or threshold selection (None without scores and standard errors)."""
        scores = self.scores
        if self.method not in RANKED_SELECTIONS or scores is None or scores.stderr is None:
            return None
        if not 0 < len(self.heads) < self.n_total:
            return None
        ranked = [head for head, _ in scores.ranked()]
        last_in = max(self.heads, key=ranked.index)
        first_out = next(head for head in ranked if head not in self.heads)
        se = scores.stderr
        return Boundary(
            last_in,
            scores[last_in],
            float(se[last_in]),
            first_out,
            scores[first_out],
            float(se[first_out]),
        )

    def validate(self, model: Model, strict_name: bool = False) -> None:
        """Refuse a model whose shape differs from the one the circuit was found on.

        A different model name with the same shape only warns (a fine-tuned copy of the proxy may
        carry another name), unless `strict_name`.
        """
        cfg = model.cfg
        name = str(cfg.model_name)
        if (cfg.n_layers, cfg.n_heads) != (self.n_layers, self.n_heads):
            raise CircuitModelMismatch(
                f"circuit was found on a model with {self.n_layers} layers x {self.n_heads} heads "
                f"(model name {self.model_name!r}); this model has {cfg.n_layers} x {cfg.n_heads} "
                f"(model name {name!r}). Run discovery on this model instead."
            )
        if self.model_name and name != self.model_name:
            msg = f"circuit was found on model {self.model_name!r}; this model is named {name!r}."
            if strict_name:
                raise CircuitModelMismatch(msg)
            warnings.warn(msg, stacklevel=2)

    # persistence ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "heads": [list(h) for h in self.heads],
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "model_name": self.model_name,
            "method": self.method,
            "params": self.params,
            "task": self.task,
            "lang": self.lang,
            "scores": None if self.scores is None else self.scores.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Circuit:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a circuit file (format {d.get('format')!r}, expected {FORMAT!r}).")
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"circuit format version {d.get('format_version')}; this code reads {FORMAT_VERSION}."
            )
        return cls(
            heads=tuple((int(ly), int(h)) for ly, h in d["heads"]),
            n_layers=int(d["n_layers"]),
            n_heads=int(d["n_heads"]),
            model_name=d.get("model_name", ""),
            method=d.get("method", "manual"),
            params=dict(d.get("params", {})),
            scores=None if d.get("scores") is None else HeadScores.from_dict(d["scores"]),
            task=d.get("task", ""),
            lang=d.get("lang", ""),
        )

    def save(self, path: str | Path) -> Path:
        """Write the circuit as JSON, atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Circuit:
        """Read a circuit file; any problem with it is a ValueError that names the file."""
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
            raise ValueError(
                f"{path} is not a readable circuit file ({detail}); write one with `circuit-transfer discover --out`."
            ) from None

    def _repr_html_(self) -> str:
        """Inline display in Jupyter: the relevance grid with the selected heads marked."""
        from circuit_transfer.views import circuit_html

        return circuit_html(self)

    def __repr__(self) -> str:
        where = f" on {self.task}/{self.lang}" if self.task or self.lang else ""
        how = self.method + "".join(
            f" {k}={v}" for k, v in self.params.items() if not isinstance(v, (list, dict))
        )
        shown = []
        for head in self.heads[:8] if self.scores is None else self._by_score()[:8]:
            shown.append(head_name(head) + ("" if self.scores is None else f" {self.scores[head]:+.3g}"))
        more = ", ..." if len(self.heads) > 8 else ""
        cut = self.boundary
        unstable = f"; unstable selection: {cut.describe()}" if cut is not None and cut.unstable else ""
        return (
            f"Circuit({len(self.heads)} heads of {self.n_layers}x{self.n_heads} {self.model_name!r}{where} "
            f"by {how}: {', '.join(shown)}{more}{unstable})"
        )

    def _by_score(self) -> list[Head]:
        assert self.scores is not None
        return sorted(self.heads, key=lambda h: (-self.scores[h], h))
