"""Which TransformerLens parameter is which Hugging Face parameter: the head-set tensors of both backends.

The hooked backend holds TransformerLens's conversion of the HF weights (`convert_*_weights`,
unprocessed); the bridge holds the HF weights themselves. For the families whose HF layout is
Llama's (`model.layers.{l}.self_attn.{q,k,v,o}_proj`, RMSNorm modules), the tensors a head-set
delta can touch (attention projections, their biases, the norms, the QK-norms) correspond one
to one, by a reshape / transpose and, for Gemma's norms, an offset:

| HF (bridge)                           | TransformerLens (hooked)             | layout                          |
|---------------------------------------|--------------------------------------|---------------------------------|
| `q_proj.weight` [H*d, d_model]        | `W_Q` [H, d_model, d]                | head h = rows h*d:(h+1)*d       |
| `k_proj`/`v_proj.weight` [G*d, d_model] | `_W_K`/`_W_V` (GQA) or `W_K`/`W_V` | group g = rows g*d:(g+1)*d      |
| `o_proj.weight` [d_model, H*d]        | `W_O` [H, d, d_model]                | head h = columns h*d:(h+1)*d    |
| `{q,k,v}_proj.bias` [H*d] (Qwen2)     | `b_Q`, `(_)b_K`, `(_)b_V` [H, d]     | head h = entries h*d:(h+1)*d    |
| `o_proj.bias` [d_model]               | `b_O` [d_model]                      | same                            |
| `input_layernorm.weight`, ...         | `ln1.w`, ... (see `_NORMS`)          | same; Gemma: TL = HF + 1        |
| `self_attn.{q,k}_norm.weight`         | `attn.{q,k}_norm.w`                  | same; Gemma: TL = HF + 1        |
| `model.norm.weight`                   | `ln_final.w`                         | same; Gemma: TL = HF + 1        |

TransformerLens's conversion adds the biases the HF model lacks as zeros (`b_Q`, `b_O`, ... of
Llama); they have no HF counterpart (`Link.hf` names a key the HF model may not have).
Embeddings, MLPs and the unembedding are not mapped: a head set never trains them, and their
conversions carry more quirks (Gemma's `sqrt(d_model)` embedding scale, tied embeddings that
TransformerLens unties, transposed or not MLPs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Shaped
from torch import Tensor

_LLAMA_NORMS = {"input_layernorm": "ln1", "post_attention_layernorm": "ln2"}
_GEMMA_NORMS = {
    "input_layernorm": "ln1",
    "post_attention_layernorm": "ln1_post",
    "pre_feedforward_layernorm": "ln2",
    "post_feedforward_layernorm": "ln2_post",
}
_NORMS: dict[str, tuple[dict[str, str], float]] = {
    "LlamaForCausalLM": (_LLAMA_NORMS, 0.0),
    "MistralForCausalLM": (_LLAMA_NORMS, 0.0),
    "Qwen2ForCausalLM": (_LLAMA_NORMS, 0.0),
    "Qwen3ForCausalLM": (_LLAMA_NORMS, 0.0),
    "Gemma2ForCausalLM": (_GEMMA_NORMS, 1.0),
    "Gemma3ForCausalLM": (_GEMMA_NORMS, 1.0),
}
"""Per mapped architecture: HF norm module -> TransformerLens norm, and the norm weight offset
(TransformerLens value = HF value + offset: Gemma's RMSNorm multiplies by `1 + w`)."""

MAPPED_ARCHITECTURES = tuple(_NORMS)

Layout = Literal["rows", "cols", "heads", "same"]
"""How a TL tensor is laid out against its HF tensor: "rows" (W_Q-like [n, d_model, d] of a
[n*d, d_model] projection), "cols" (W_O [n, d, d_model] of a [d_model, n*d] projection), "heads"
(b_Q-like [n, d] of a [n*d] bias), "same"."""


@dataclass(frozen=True)
class Link:
    """One HF state-dict key and the TransformerLens parameter that holds the same numbers.

    Attributes:
        hf: the HF state-dict key (`model.layers.0.self_attn.q_proj.weight`).
        tl: the TransformerLens parameter name (`blocks.0.attn.W_Q`).
        layout: see `Layout`; `n` blocks of `d_head` (heads or KV groups) where it splits by head.
        offset: TL value = HF value + offset.
    """

    hf: str
    tl: str
    layout: Layout
    n: int
    d_head: int
    offset: float = 0.0

    def to_tl(self, t: Shaped[Tensor, "..."]) -> Shaped[Tensor, "..."]:
        """An HF-layout tensor (values or a 0/1 mask, no offset) in the TL layout."""
        n, d = self.n, self.d_head
        if self.layout == "rows":
            return t.reshape(n, d, -1).transpose(1, 2)
        if self.layout == "cols":
            return t.T.reshape(n, d, -1)
        return t.reshape(n, d) if self.layout == "heads" else t

    def to_hf(self, t: Shaped[Tensor, "..."]) -> Shaped[Tensor, "..."]:
        """A TL-layout tensor (values or a 0/1 mask, no offset) in the HF layout."""
        n, d = self.n, self.d_head
        if self.layout == "rows":
            return t.transpose(1, 2).reshape(n * d, -1)
        if self.layout == "cols":
            return t.reshape(n * d, -1).T
        return t.reshape(n * d) if self.layout == "heads" else t


def architecture_of(model: object) -> str | None:
    """The HF architecture class name a model was built from, on either backend (None if unknown)."""
    cfg = model.cfg  # type: ignore[attr-defined]
    return getattr(cfg, "architecture", None) or getattr(cfg, "original_architecture", None)


def param_links(model: object) -> list[Link]:
    """Every HF <-> TransformerLens link of `model`'s architecture (see the module table).

    Raises:
        ValueError: an architecture this map does not cover, naming the ones it does.
    """
    architecture = architecture_of(model)
    if architecture not in _NORMS:
        raise ValueError(
            f"no HF <-> TransformerLens parameter map for architecture {architecture!r} (mapped: "
            f"{', '.join(MAPPED_ARCHITECTURES)})"
        )
    norms, offset = _NORMS[architecture]
    cfg = model.cfg  # type: ignore[attr-defined]
    n_heads, d = cfg.n_heads, cfg.d_head
    n_kv = cfg.n_key_value_heads or n_heads
    links = [Link("model.norm.weight", "ln_final.w", "same", 1, d, offset)]
    for layer in range(cfg.n_layers):
        hf, tl = f"model.layers.{layer}.self_attn.", f"blocks.{layer}.attn."
        # K and V are `_W_K` under TransformerLens's GroupedQueryAttention, `W_K` otherwise: both
        # are listed (a model has one of them), so the map needs no guess about which class TL built.
        for proj, n, prefixes in (("q", n_heads, ("",)), ("k", n_kv, ("", "_")), ("v", n_kv, ("", "_"))):
            for prefix in prefixes:
                links.append(Link(f"{hf}{proj}_proj.weight", f"{tl}{prefix}W_{proj.upper()}", "rows", n, d))
                links.append(Link(f"{hf}{proj}_proj.bias", f"{tl}{prefix}b_{proj.upper()}", "heads", n, d))
        links.append(Link(f"{hf}o_proj.weight", f"{tl}W_O", "cols", n_heads, d))
        links.append(Link(f"{hf}o_proj.bias", f"{tl}b_O", "same", 1, d))
        for norm in ("q_norm", "k_norm"):
            links.append(Link(f"{hf}{norm}.weight", f"{tl}{norm}.w", "same", 1, d, offset))
        for hf_norm, tl_norm in norms.items():
            links.append(
                Link(
                    f"model.layers.{layer}.{hf_norm}.weight",
                    f"blocks.{layer}.{tl_norm}.w",
                    "same",
                    1,
                    d,
                    offset,
                )
            )
    return links


def with_offset(values: Tensor, offset: float, sign: int) -> Tensor:
    """`values + sign * offset` in float32, as TransformerLens's conversion adds it (a no-op at 0)."""
    if offset == 0:
        return values
    return (values.float() + sign * offset * torch.ones_like(values, dtype=torch.float32)).to(values.dtype)
