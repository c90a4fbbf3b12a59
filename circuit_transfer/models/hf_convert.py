"""Convert a Hugging Face causal LM (in memory or a local directory) into a HookedTransformer.

Weights are converted with TransformerLens's own `convert_*_weights` and loaded *unprocessed*:
no LayerNorm folding, no centring, no value-bias folding, so norm weights stay real, trainable
parameters and logits equal the Hugging Face model's.

The config: the families TransformerLens 3.9 only knows by checkpoint name (Gemma 1/2/3, OLMo 1/2),
Llama and Phi are read from the HF config by `hf_configs`; every other architecture goes through
TransformerLens's `get_pretrained_model_config`, fed a copy of the HF config in a neutral
temporary directory (TransformerLens picks some architectures from the *path* string, e.g. any
path containing "llama" or "gemma", so the user's own path is never passed to it).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from circuit_transfer.models.backend import (
    HookedTransformer,
    HookedTransformerConfig,
    get_pretrained_model_config,
    get_pretrained_state_dict,
)
from circuit_transfer.models.hf_configs import MAX_ROTARY_CTX, NAME_BASED
from circuit_transfer.models.tokenizer import attach_tokenizer

HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def is_hf_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a local Hugging Face checkpoint: config.json plus weights."""
    path = Path(path)
    if not (path / "config.json").is_file():
        return False
    return any((path / name).is_file() for name in HF_WEIGHT_FILES) or any(path.glob("*.safetensors"))


def hooked_config_from_hf(
    hf_config: PretrainedConfig,
    model_name: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    architecture: str | None = None,
) -> HookedTransformerConfig:
    """A HookedTransformerConfig for any architecture TransformerLens can convert.

    Args:
        architecture: the HF model class name, e.g. "GPT2LMHeadModel"; defaults to the config's
            `architectures[0]` (which a config read from a GGUF file lacks).
    """
    architecture = architecture or (hf_config.architectures or [None])[0]
    if architecture is None:
        raise ValueError("the HF config names no architecture; pass `architecture`")
    if architecture in NAME_BASED:
        cfg = HookedTransformerConfig(
            model_name=model_name,
            original_architecture=architecture,
            init_weights=False,
            device=None if device is None else str(device),
            dtype=dtype,
            **NAME_BASED[architecture](hf_config),
        )
        return with_tie_flag(cfg, hf_config)
    hf_config = copy.deepcopy(hf_config)
    hf_config.architectures = [architecture]
    _restore_fields_tl_reads(hf_config)
    with tempfile.TemporaryDirectory(prefix="ct-hf-config-") as tmp:
        hf_config.save_pretrained(tmp)
        cfg = get_pretrained_model_config(
            tmp, hf_cfg=hf_config.to_dict(), fold_ln=False, device=device, dtype=dtype
        )
    cfg.model_name = model_name
    cfg.tokenizer_name = None  # the tokenizer is attached explicitly, never looked up by name
    if cfg.positional_embedding_type == "rotary" and cfg.n_ctx > MAX_ROTARY_CTX:
        cfg.n_ctx = MAX_ROTARY_CTX
    return with_tie_flag(cfg, hf_config)


def with_tie_flag(cfg: HookedTransformerConfig, hf_config: PretrainedConfig) -> HookedTransformerConfig:
    """Record the HF config's `tie_word_embeddings` (TransformerLens 3.9 copies it for a few
    architectures only): the real parameter count (`models.params`) counts the untied copy once."""
    cfg.tie_word_embeddings = bool(getattr(hf_config, "tie_word_embeddings", False))
    return cfg


def _restore_fields_tl_reads(hf_config: PretrainedConfig) -> None:
    """Put back the config attributes TransformerLens 3.9 reads and transformers 5 moved."""
    if type(hf_config).__name__ == "GPT2Config" and not hasattr(hf_config, "n_ctx"):
        hf_config.n_ctx = hf_config.n_positions


def _convert_state_dict(hf_model: PreTrainedModel, cfg: HookedTransformerConfig) -> dict[str, torch.Tensor]:
    with tempfile.TemporaryDirectory(prefix="ct-hf-model-") as tmp:  # a neutral "name"
        return get_pretrained_state_dict(tmp, cfg, hf_model=hf_model, dtype=cfg.dtype)


def hooked_from_hf(
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    model_name: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    cfg: HookedTransformerConfig | None = None,
) -> HookedTransformer:
    """Convert an in-memory HF causal LM (plus its tokenizer) into an unprocessed HookedTransformer.

    Args:
        cfg: the HookedTransformerConfig to convert into (e.g. one of TransformerLens's built-in
            configs); by default it is derived from `hf_model.config`, and `device`/`dtype` apply.
    """
    if cfg is None:
        cfg = hooked_config_from_hf(
            hf_model.config, model_name, device=device, dtype=dtype, architecture=type(hf_model).__name__
        )
    state_dict = _convert_state_dict(hf_model, cfg)
    model = HookedTransformer(cfg, move_to_device=True)
    # TransformerLens fills a weight its converter does not write (BLOOM's unused pos_embed.W_pos)
    # with torch.empty: uninitialised memory, sometimes NaN, which would make the weights'
    # fingerprint, checkpoints and deltas vary from load to load. Zeros instead.
    for name, param in model.named_parameters():
        if name not in state_dict:
            state_dict[name] = torch.zeros_like(param)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    # TransformerLens 3.9 builds the MoE router and experts as nn.Linear in torch's default dtype,
    # whatever cfg.dtype says: a float64 MoE model would mix dtypes and fail in its first matmul.
    if any(p.dtype != dtype for p in model.parameters()):
        model.to(dtype)
    attach_tokenizer(model, tokenizer)
    model.eval()
    return model


def read_hf_dir(path: str | os.PathLike) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The HF causal LM (float32) and tokenizer of a local Hugging Face directory, offline."""
    path = Path(path)
    hf_config = AutoConfig.from_pretrained(str(path))
    if not any((path / name).is_file() for name in HF_TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{path} has model weights but no tokenizer (none of {', '.join(HF_TOKENIZER_FILES)}): "
            f"save one there with `tokenizer.save_pretrained({str(path)!r})`"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    hf_model = AutoModelForCausalLM.from_pretrained(str(path), config=hf_config, dtype=torch.float32)
    return hf_model, tokenizer


def load_hf_dir(
    path: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32
) -> HookedTransformer:
    """Load a local Hugging Face checkpoint directory (config, weights, tokenizer) as a HookedTransformer."""
    hf_model, tokenizer = read_hf_dir(path)
    return hooked_from_hf(hf_model, tokenizer, model_name=Path(path).name, device=device, dtype=dtype)
