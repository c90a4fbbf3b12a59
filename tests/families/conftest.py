"""Fixtures for the family tests: one tokenizer, each family's random HF directory built once, and
its float64 HookedTransformer for the CD-T matrix."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hf_families import FAMILIES, TEXTS, WINDOW, save_hf_dir
from transformer_lens import HookedTransformer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from circuit_transfer.models import load_model
from circuit_transfer.models.tokenizer import train_bpe_tokenizer

N_POS = 2 * WINDOW + 2

# tests/cdt/first_order.py, the engine-independent first-order checker, is shared with tests/cdt.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cdt"))


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


@pytest.fixture(scope="session")
def cdt_family(hf_family, family_tokenizer) -> Callable[[str], tuple[HookedTransformer, torch.Tensor]]:
    """name -> (the family's model loaded by `load_model` in float64, one padding-free example).

    The example is 10 tokens: longer than twice every sliding window, so local layers drop keys.
    """
    loaded: dict[str, tuple[HookedTransformer, torch.Tensor]] = {}

    def get(name: str) -> tuple[HookedTransformer, torch.Tensor]:
        if name not in loaded:
            path, _ = hf_family(name)
            model = load_model(path, device="cpu", dtype=torch.float64)
            tokens = family_tokenizer(TEXTS[0], return_tensors="pt")["input_ids"][:, :N_POS]
            loaded[name] = (model, tokens)
        return loaded[name]

    return get
