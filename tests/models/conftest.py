"""Shared fixtures for the model tests: real Indonesian sentences and a tiny model built on them."""

from __future__ import annotations

import csv

import pytest

from circuit_transfer.models import TinyModelSpec, build_tiny_model
from circuit_transfer.paths import default_data_dir

LABEL_WORDS = [" negative", " neutral", " positive"]
EXTRA_WORDS = [*LABEL_WORDS, " entailment", " contradiction", "Sentiment", "Answer"]

_FALLBACK = [
    "Saya sangat suka makanan di restoran ini, enak dan murah.",
    "Pelayanannya buruk sekali, saya kecewa.",
    "Hotel ini biasa saja, tidak ada yang istimewa.",
    "Nikmati cicilan 0% hingga 12 bulan untuk pemesanan tiket pesawat.",
] * 25


@pytest.fixture(scope="session")
def indonesian_texts() -> list[str]:
    """The NusaX-Senti Indonesian training texts (a small built-in set when the data is absent)."""
    data = default_data_dir()
    path = None if data is None else data / "nusax-senti" / "indonesian" / "train.csv"
    if path is None or not path.is_file():
        return _FALLBACK
    with open(path, newline="", encoding="utf-8") as f:
        return [row["text"] for row in csv.DictReader(f)]


@pytest.fixture(scope="session")
def extra_words() -> list[str]:
    """Words the tiny model's tokenizer must keep as single tokens (label words first)."""
    return list(EXTRA_WORDS)


@pytest.fixture(scope="session")
def tiny_model(indonesian_texts):
    """A small random-init tiny model (do not modify it in a test: it is shared)."""
    spec = TinyModelSpec(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=128, vocab_size=1000)
    return build_tiny_model(indonesian_texts, spec, extra_words=EXTRA_WORDS, seed=0, device="cpu")
