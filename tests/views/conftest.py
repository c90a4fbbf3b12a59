"""Fixtures for the views: a hand-built sentiment model with a known answer, and a real run directory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuit_transfer.models import attach_tokenizer

sys.path.insert(0, str(Path(__file__).parent))

STRENGTH = 3.0


@pytest.fixture(scope="session")
def copy_model(word_tokenizer) -> HookedTransformer:
    """One attention-only layer, one-hot embed/unembed, no norm: L0H1 copies "good"/"bad" onto the labels.

    Vocabulary of the `word_tokenizer` fixture: negative=2, positive=4, good=6, bad=7, ":"=9.
    L0H1 attends from ":" to "good"/"bad" (score 25/4) and writes STRENGTH onto " positive" /
    " negative"; every other weight of the head is 0, so only those tokens contribute. L0H0 is small
    random noise.
    """
    vocab = len(word_tokenizer)
    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=32,
        n_ctx=32,
        d_head=16,
        n_heads=2,
        d_vocab=vocab,
        attn_only=True,
        normalization_type=None,
        act_fn="relu",
        model_name="copy",
        device="cpu",
        seed=0,
    )
    model = HookedTransformer(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[:, :vocab] = torch.eye(vocab)
        model.unembed.W_U[:vocab, :] = torch.eye(vocab)
        attn = model.blocks[0].attn
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            getattr(attn, name)[0] = 0.05 * torch.randn(getattr(attn, name)[0].shape, generator=gen)
        attn.W_Q[1, 9, 0] = 5.0
        for word, label, dim in ((6, 4, 1), (7, 2, 2)):
            attn.W_K[1, word, 0] = 5.0
            attn.W_V[1, word, dim] = 1.0
            attn.W_O[1, dim, label] = STRENGTH
    attach_tokenizer(model, word_tokenizer)
    model.eval()
    return model


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, data_dir) -> Path:
    """A real run directory (tiny untrained proxy, CD-T circuits, 1-epoch transfers); ~2 s."""
    from run_helpers import build_run_dir

    return build_run_dir(tmp_path_factory.mktemp("run"), data_dir)
