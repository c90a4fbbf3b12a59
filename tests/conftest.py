"""Shared fixtures: the real data directory and small tokenizers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from circuit_transfer.paths import default_data_dir

# The suite's models are small: one thread is as fast as two on an idle machine and immune to the
# OpenMP stalls that two threads suffer whenever anything else runs (measured 7x slower).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real NusaX/XNLI folder (CT_DATA_DIR, or ../shared/data); tests that need it fail loudly without it."""
    path = default_data_dir()
    if path is None or not path.is_dir():
        pytest.fail(
            "Real data not found: set CT_DATA_DIR to the folder holding nusax-senti/ and xnli/ "
            f"(CT_DATA_DIR={os.environ.get('CT_DATA_DIR')!r})."
        )
    return path


@pytest.fixture(scope="session")
def word_tokenizer():
    """A word-level tokenizer built offline from a fixed vocabulary (whitespace + punctuation split)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [
        "[PAD]",
        "[UNK]",
        "negative",
        "neutral",
        "positive",
        "very",
        "good",
        "bad",
        "Sentiment",
        ":",
        "yes",
        "maybe",
        "no",
        "Question",
        "Answer",
        "the",
        "film",
        "was",
        "great",
        "awful",
        ".",
    ]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


@pytest.fixture(scope="session")
def gemma3():
    """The real Gemma 3 270M, loaded once per session (the first run converts and caches it: minutes).

    Shared by every test that uses it: do not modify its weights (restore them if a test trains)."""
    from circuit_transfer.models import load_model

    return load_model("gemma3-270m", device="cpu")
