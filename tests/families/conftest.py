"""Fixtures for the family tests: one tokenizer, and each family's random HF directory built once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hf_families import FAMILIES, TEXTS, save_hf_dir
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from circuit_transfer.models.tokenizer import train_bpe_tokenizer


@pytest.fixture(scope="session")
def family_tokenizer() -> PreTrainedTokenizerBase:
    """A small byte-level BPE (about 300 tokens), trained offline on a few Indonesian sentences."""
    return train_bpe_tokenizer(TEXTS * 10, vocab_size=300)


@pytest.fixture(scope="session")
def hf_family(family_tokenizer, tmp_path_factory) -> Callable[[str], tuple[Path, PreTrainedModel]]:
    """name -> (local HF directory, the HF model saved there); each family is built once per session."""
    built: dict[str, tuple[Path, PreTrainedModel]] = {}

    def get(name: str) -> tuple[Path, PreTrainedModel]:
        if name not in built:
            path = tmp_path_factory.mktemp("hf-families") / name
            built[name] = (path, save_hf_dir(FAMILIES[name], family_tokenizer, path))
        return built[name]

    return get
