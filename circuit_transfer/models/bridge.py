"""The TransformerBridge backend: a Hugging Face model wrapped by TransformerLens, weights untouched.

`TransformerBridge` (TransformerLens 3.9's `model_bridge`, the only model class of TL 4.x) runs
the Hugging Face module itself and exposes TransformerLens's hook names. We boot it from an
in-memory HF model (`bridge_from_hf`) or a local HF directory (`load_bridge_hf_dir`), offline,
and always call `enable_compatibility_mode(no_processing=True)`: that gives the legacy hook
names (`blocks.{l}.attn.hook_z`, `ln1.hook_scale`, ...) without folding the norms, because
CT-SFT trains the norms and `fold_ln` would rewrite them.

The trainable parameters are the HF module's own (`q_proj.weight`, `input_layernorm.weight`,
...); `bridge.named_parameters()` names them with `._original_component` inserted at every
wrapped module, and `hf_param_name` strips those to the HF state-dict key. `attention_params`
tells which HF linear holds which head: head h of a `[n_heads * d_head, d_model]` projection is
rows `h * d_head : (h + 1) * d_head`, and of o_proj `[d_model, n_heads * d_head]` the same columns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from circuit_transfer.models.backend import TransformerBridge
from circuit_transfer.models.hf_convert import read_hf_dir
from circuit_transfer.models.tokenizer import attach_tokenizer

_WRAPPED = "._original_component"


def is_bridge(model: object) -> bool:
    """Whether `model` is a TransformerBridge."""
    return isinstance(model, TransformerBridge)


def backend_of(model: object) -> str:
    """ "bridge" for a TransformerBridge, "hooked" otherwise."""
    return "bridge" if is_bridge(model) else "hooked"


def hf_param_name(name: str) -> str:
    """The HF state-dict key of a bridge parameter name (drops every `._original_component`)."""
    return name.replace(_WRAPPED, "")


def delta_names_backend(names: list[str]) -> str:
    """Which backend parameter names come from: "bridge" if any is a wrapped HF name, else "hooked"."""
    return "bridge" if any(_WRAPPED in name for name in names) else "hooked"


def bridge_from_hf(
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    model_name: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> TransformerBridge:
    """Wrap an in-memory HF causal LM in an unprocessed TransformerBridge (the HF model is reused).

    `model_name` is only recorded (`cfg.model_name`); nothing is looked up by it. The tokenizer
    is attached as on the hooked backend (pad token, right padding, BOS flags from the tokenizer).
    The HF model is cast to `dtype` in place.
    """
    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]  # the bridge picks its adapter by it
    hf_model.to(dtype=dtype).eval()  # the bridge's dtype argument sets its config, not the HF weights
    bridge = TransformerBridge.boot_transformers(
        model_name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
    )
    bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    bridge.cfg.model_name = model_name
    attach_tokenizer(bridge, tokenizer)
    bridge.eval()
    return bridge


def load_bridge_hf_dir(
    path: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32
) -> TransformerBridge:
    """A local Hugging Face directory (config, weights, tokenizer) as an unprocessed TransformerBridge."""
    hf_model, tokenizer = read_hf_dir(path)
    return bridge_from_hf(hf_model, tokenizer, model_name=Path(path).name, device=device, dtype=dtype)


def hf_state_dict(bridge: TransformerBridge) -> dict[str, torch.Tensor]:
    """The bridge's parameters under their HF state-dict keys (tied weights once), detached."""
    return {hf_param_name(name): p.detach() for name, p in bridge.named_parameters()}


@dataclass(frozen=True)
class AttentionParams:
    """The HF modules of one attention layer, as the head masks need them.

    Attributes:
        q, k, v, o: the HF linears (`q_proj`, `k_proj`, `v_proj`, `o_proj`); k and v have
            `n_kv_heads * d_head` output rows (grouped-query attention when n_kv_heads < n_heads).
        q_norm, k_norm: the HF QK-norm modules (Qwen3, Gemma 3, OLMo 2), or None.
    """

    layer: int
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    q_norm: nn.Module | None
    k_norm: nn.Module | None
    n_heads: int
    n_kv_heads: int
    d_head: int


def _hf_module(component: Any, what: str) -> nn.Module:
    module = getattr(component, "original_component", None)
    if module is None:
        raise NotImplementedError(f"TransformerBridge component {what} wraps no HF module")
    return module


def attention_params(bridge: TransformerBridge) -> list[AttentionParams]:
    """Per layer, the HF q/k/v/o linears and QK-norms (separate projections only).

    Raises:
        NotImplementedError: an architecture whose attention fuses Q, K and V into one
            projection (GPT-2's `c_attn`, NeoX's `query_key_value`): the bridge shows split views
            of it, so a head mask on the split weights would not reach the real parameter.
    """
    cfg = bridge.cfg
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    out = []
    for layer, block in enumerate(bridge.blocks):
        attn = block.attn
        if getattr(attn, "qkv", None) is not None:
            raise NotImplementedError(
                f"head masks on the bridge need separate q/k/v projections; layer {layer} of "
                f"{cfg.model_name!r} fuses them ({type(attn).__name__}). Use backend='hooked' for this model."
            )
        linears = {}
        for part in ("q", "k", "v", "o"):
            module = _hf_module(getattr(attn, part), f"blocks.{layer}.attn.{part}")
            if not isinstance(module, nn.Linear):
                raise NotImplementedError(
                    f"blocks.{layer}.attn.{part} is a {type(module).__name__}, not nn.Linear: no head-mask rule"
                )
            linears[part] = module
        norms = [getattr(attn, n, None) for n in ("q_norm", "k_norm")]
        out.append(
            AttentionParams(
                layer=layer,
                **linears,
                q_norm=None if norms[0] is None else _hf_module(norms[0], "q_norm"),
                k_norm=None if norms[1] is None else _hf_module(norms[1], "k_norm"),
                n_heads=cfg.n_heads,
                n_kv_heads=n_kv,
                d_head=cfg.d_head,
            )
        )
    return out


def norm_modules(bridge: TransformerBridge) -> list[nn.Module]:
    """The HF modules of every residual-stream norm the bridge maps (ln1, ln2, sandwich norms, ln_final)."""
    from transformer_lens.model_bridge.generalized_components import NormalizationBridge

    out = []
    for name, component in bridge.named_modules():
        if isinstance(component, NormalizationBridge):
            if name.rpartition(".")[2] in ("q_norm", "k_norm"):
                continue  # QK-norms: their own policy (attention_params)
            out.append(_hf_module(component, name))
    return out
