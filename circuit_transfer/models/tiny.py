"""The tiny proxy model: a small random-init GPT-2-style HookedTransformer with its own BPE tokenizer.

It has no pretrained weights: `build_tiny_model` trains a tokenizer on the task's texts and
initialises the model; training it is the job of the training code. Its tokenizer prepends
`<|bos|>` and pads with `<|pad|>` on the right (see `tokenizer.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from circuit_transfer.models.backend import HookedTransformer, HookedTransformerConfig, require_hooked
from circuit_transfer.models.tokenizer import attach_tokenizer, train_bpe_tokenizer

NAME = "tiny"


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny model (about 1.2M parameters at the defaults; trains in seconds on a CPU).

    `vocab_size` is the BPE target; the model's `d_vocab` is the tokenizer's real size, which is
    smaller when the texts are too few to learn that many merges, or larger by the extra words
    that had to be added as tokens.
    """

    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 128
    d_head: int = 32
    d_mlp: int = 512
    n_ctx: int = 256
    act_fn: str = "gelu_new"
    normalization_type: str = "LN"
    positional_embedding_type: str = "standard"
    vocab_size: int = 3000


def tiny_config(
    spec: TinyModelSpec, d_vocab: int, device: str | torch.device | None = None
) -> HookedTransformerConfig:
    """The HookedTransformerConfig of a tiny model with a `d_vocab`-token vocabulary."""
    return HookedTransformerConfig(
        model_name=NAME,
        n_layers=spec.n_layers,
        n_heads=spec.n_heads,
        d_model=spec.d_model,
        d_head=spec.d_head,
        d_mlp=spec.d_mlp,
        n_ctx=spec.n_ctx,
        d_vocab=d_vocab,
        act_fn=spec.act_fn,
        normalization_type=spec.normalization_type,
        positional_embedding_type=spec.positional_embedding_type,
        device=None if device is None else str(device),
    )


def build_tiny_model(
    texts: Sequence[str],
    spec: TinyModelSpec = TinyModelSpec(),
    extra_words: Sequence[str] = (),
    seed: int = 0,
    device: str | torch.device | None = None,
) -> HookedTransformer:
    """A random-init tiny HookedTransformer with a BPE tokenizer trained on `texts`.

    Args:
        texts: the corpus for the tokenizer (e.g. the task's training texts).
        extra_words: strings that must each be one token, e.g. label words with their leading
            space (" positive") and template words ("Sentiment").
        seed: seeds the weight initialisation (the global RNG state is left as it was).
    """
    require_hooked(
        "the tiny model (a HookedTransformer built from scratch; on TransformerLens 4.x start from a "
        "Hugging Face model directory instead, e.g. `prepare-proxy --model DIR --backend bridge`)"
    )
    if not texts:
        raise ValueError("build_tiny_model needs some texts to train its tokenizer on")
    tokenizer = train_bpe_tokenizer(texts, spec.vocab_size, extra_words)
    cfg = tiny_config(spec, d_vocab=len(tokenizer), device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HookedTransformer(cfg, move_to_device=False)
    model.to(cfg.device, print_details=False)
    attach_tokenizer(model, tokenizer)
    return model
