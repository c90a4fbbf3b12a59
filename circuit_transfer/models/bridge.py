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

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers import (
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.pytorch_utils import Conv1D

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


def _hf_keys(bridge: TransformerBridge) -> list[tuple[str, nn.Parameter, str | None]]:
    """(bridge name, parameter, its HF state-dict key or None) for every parameter of the bridge.

    The bridge installs itself inside the HF module tree, so a parameter can have several names
    (GPT-2's `c_attn.weight` is first reached as `attn.qkv`), and the bridge adds parameters of its
    own (GPT-2's split q/k/v, the lm_head bias). The HF key is the name the architecture's own
    state dict has, read from an empty copy of it on the meta device.
    """
    with torch.device("meta"):
        hf_keys = set(AutoModelForCausalLM.from_config(bridge.original_model.config).state_dict())
    names: dict[int, list[str]] = {}
    for name, param in bridge.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(hf_param_name(name))
    out = []
    for name, param in bridge.named_parameters():
        known = [n for n in names[id(param)] if n in hf_keys]
        out.append((name, param, known[0] if known else None))
    return out


def split_views(bridge: TransformerBridge) -> dict[str, tuple[str, Callable[[Tensor], Tensor]]]:
    """The bridge's own parameters that are views into an HF parameter: name -> (the owner's bridge
    name, a function taking a tensor of the owner's shape and returning the same view of it).

    GPT-2's fused `c_attn` (Conv1D, `[d_model, 3 * n_heads * d_head]`) is split at boot into q, k
    and v `nn.Linear`s whose weights are `c_attn.weight[:, i*D:(i+1)*D].T` and biases slices of
    `c_attn.bias`: views sharing its memory. The forward runs them, so they get the gradients, and
    every update lands in `c_attn`; Phi-3's `qkv_proj` and `gate_up_proj` are split into row-block
    views the same way. The relation is read off the memory (offset, strides), not assumed from a
    layout. (NeoX's and BLOOM's split q/k/v are copies, not views: none here.)
    """
    entries = _hf_keys(bridge)
    owners = [(name, param) for name, param, key in entries if key is not None]
    out = {}
    for name, param, key in entries:
        if key is not None:
            continue
        owner = next(((n, o) for n, o in owners if _inside(param, o)), None)
        if owner is None:
            continue  # memory of its own
        if not owner[1].is_contiguous():
            raise NotImplementedError(f"{name} is a view of a non-contiguous parameter: no layout rule")
        size, stride = tuple(param.shape), param.stride()
        offset = param.storage_offset() - owner[1].storage_offset()

        def view(t: Tensor, size=size, stride=stride, offset=offset) -> Tensor:
            return t.as_strided(size, stride, t.storage_offset() + offset)

        out[name] = (owner[0], view)
    return out


def copy_bridge(bridge: TransformerBridge, memo: dict | None = None) -> TransformerBridge:
    """`copy.deepcopy` of a bridge whose split views still view their owner.

    `nn.Parameter.__deepcopy__` clones, so a plain deep copy of a GPT-2 bridge holds q/k/v that are
    copies of `c_attn`: training them would leave the copy's `c_attn` stale. Here each view is
    pointed back at the same entries of the copy's owner (equal values: the original's views and
    owner agree).
    """
    copied = copy.deepcopy(bridge, memo)
    params = dict(copied.named_parameters())
    for name, (owner, view) in split_views(bridge).items():
        params[name].data = view(params[owner].data)
    return copied


def _inside(view: Tensor, owner: Tensor) -> bool:
    """Whether every element of `view` lies in the memory of `owner` (same storage, within its extent)."""
    if view.untyped_storage().data_ptr() != owner.untyped_storage().data_ptr() or view.numel() == 0:
        return False
    first = view.storage_offset()
    last = first + sum((n - 1) * st for n, st in zip(view.shape, view.stride()))
    return owner.storage_offset() <= first and last < owner.storage_offset() + owner.numel()


def checkpoint_params(bridge: TransformerBridge) -> dict[str, nn.Parameter]:
    """The parameters a bridge checkpoint holds, by key: the HF state-dict key where the parameter
    has one (tied weights once), else its bridge name less `._original_component` (memory the
    bridge made: NeoX's split q/k/v copies, the lm_head bias). The bridge's views into an HF
    parameter (`split_views`) are skipped: their owner is saved."""
    views = split_views(bridge)
    return {key or hf_param_name(name): p for name, p, key in _hf_keys(bridge) if name not in views}


def hf_state_dict(bridge: TransformerBridge) -> dict[str, torch.Tensor]:
    """`checkpoint_params`, detached."""
    return {key: p.detach() for key, p in checkpoint_params(bridge).items()}


@dataclass(frozen=True)
class AttentionParams:
    """The modules of one attention layer, as the head masks need them.

    Attributes:
        q, k, v: the linears the forward runs (`q_proj`, `k_proj`, `v_proj`; for GPT-2 the
            bridge's q/k/v views into `c_attn`), `[n * d_head, d_model]`: k and v have
            `n_kv_heads * d_head` output rows (grouped-query attention when n_kv_heads < n_heads).
        o: the output projection: an `nn.Linear` `[d_model, n_heads * d_head]` (`o_proj`, a head
            is a block of columns) or GPT-2's Conv1D `c_proj` `[n_heads * d_head, d_model]` (a
            head is a block of rows); `o_heads_axis` says which.
        fused: the fused QKV parameters (GPT-2's `c_attn` weight and bias) whose memory q, k and v
            view: their masks are the views' masks (`split_views`), or () without fusion.
        q_norm, k_norm: the HF QK-norm modules (Qwen3, Gemma 3, OLMo 2), or None.
    """

    layer: int
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Module
    o_heads_axis: Literal["rows", "cols"]
    fused: tuple[nn.Parameter, ...]
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
    """Per layer, the q/k/v/o projections the forward runs, the fused QKV parameters they view,
    and the QK-norms.

    Raises:
        NotImplementedError: a fused QKV projection that the bridge copies rather than views
            (NeoX's `query_key_value`, whose per-head interleaved q/k/v rows no 2-D view can
            split): the forward then runs copies, training them leaves the HF parameter stale,
            so no head mask on either is the whole truth; or a projection of another type.
    """
    cfg = bridge.cfg
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    views = (
        split_views(bridge) if any(getattr(b.attn, "qkv", None) is not None for b in bridge.blocks) else {}
    )
    params = dict(bridge.named_parameters())
    names = {id(p): n for n, p in params.items()}
    out = []
    for layer, block in enumerate(bridge.blocks):
        attn = block.attn
        linears = {part: _hf_module(getattr(attn, part), f"blocks.{layer}.attn.{part}") for part in "qkvo"}
        fused: tuple[nn.Parameter, ...] = ()
        if getattr(attn, "qkv", None) is not None:
            owners = {
                views[names[id(p)]][0]
                for part in "qkv"
                for p in linears[part].parameters()
                if names[id(p)] in views
            }
            if not owners or any(
                names[id(p)] not in views for part in "qkv" for p in linears[part].parameters()
            ):
                raise NotImplementedError(
                    f"head masks on the bridge: layer {layer} of {cfg.model_name!r} fuses Q, K and V "
                    f"({type(attn).__name__}) and the bridge runs copies of them, not views: training "
                    "would leave the fused HF parameter stale. Use backend='hooked' for this model (or, "
                    "for a copy.deepcopy of a GPT-2 bridge, copy it with models.bridge.copy_bridge)."
                )
            fused = tuple(params[n] for n in sorted(owners))
        for part in "qkv":
            if not isinstance(linears[part], nn.Linear):
                raise NotImplementedError(
                    f"blocks.{layer}.attn.{part} is a {type(linears[part]).__name__}, not nn.Linear: no head-mask rule"
                )
        if isinstance(linears["o"], Conv1D):
            o_axis: Literal["rows", "cols"] = "rows"
        elif isinstance(linears["o"], nn.Linear):
            o_axis = "cols"
        else:
            raise NotImplementedError(
                f"blocks.{layer}.attn.o is a {type(linears['o']).__name__}: no head-mask rule"
            )
        norms = [getattr(attn, n, None) for n in ("q_norm", "k_norm")]
        out.append(
            AttentionParams(
                layer=layer,
                **linears,
                o_heads_axis=o_axis,
                fused=fused,
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
