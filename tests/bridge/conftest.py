"""Fixtures for the bridge tests: random local HF models (the family builders), booted offline.

These tests import nothing that needs HookedTransformer at module level, so they also run in the
TransformerLens 4.3 environment of `.ci/run` (marker `bridge`); comparisons with the hooked
backend skip there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "families"))

from hf_families import FAMILIES, TEXTS, save_hf_dir  # noqa: E402

from circuit_transfer.models.tokenizer import train_bpe_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def bridge_tokenizer() -> PreTrainedTokenizerBase:
    """A small byte-level BPE (about 300 tokens), trained offline on a few Indonesian sentences."""
    return train_bpe_tokenizer(TEXTS * 10, vocab_size=300)


@pytest.fixture(scope="session")
def hf_dir(bridge_tokenizer, tmp_path_factory) -> Callable[[str], Path]:
    """family name -> a local HF directory of a random model of that family (built once)."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            path = tmp_path_factory.mktemp("hf-bridge") / name
            save_hf_dir(FAMILIES[name], bridge_tokenizer, path)
            built[name] = path
        return built[name]

    return get
