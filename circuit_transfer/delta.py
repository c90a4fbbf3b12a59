"""Adapter-only checkpoints: save just the entries a mask lets change, apply them to the base model.

A *delta* is a flat `dict[str, Tensor]` (safetensors-compatible). For every parameter `name`
with at least one trainable entry it holds:

- `"{name}.runs"`: int64 [n_runs, 2], the trainable entries of the flattened parameter as runs
  (start, length). A head slice `W_Q[h]` is contiguous, so a head-masked tensor costs one run
  per selected head; a fully trainable norm costs one run.
- `"{name}.values"`: the trained values at those entries, in run order (the parameter's dtype).

Names are the model's `named_parameters()` names, so a delta is written in the layout of the
backend it was made on: TransformerLens names (`blocks.0.attn.W_Q`) on the hooked backend, the
bridge's wrapped HF names (`model.layers.0._original_component.self_attn...q_proj._original_component.weight`)
on the bridge, whose head slices are rows, not leading indices. `apply_delta` applies a delta of the
other backend through `convert_delta` (the HF <-> TransformerLens map of `models.param_map`: the
attention and norm tensors of the Llama-layout families), and refuses, saying what to do, a delta
it cannot map (another architecture, an MLP or embedding entry, a trained value for a bias that
only TransformerLens's conversion has).

A bridge's views into a fused parameter (GPT-2's q/k/v of `c_attn`) are not stored: the fused
parameter holds the same entries.

Values, not differences, are stored: applying them is an exact copy, so a base model plus the
delta reproduces the trained model bit for bit. Frozen entries are not stored at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from circuit_transfer.io import atomic_write
from circuit_transfer.masking import ParamMasks
from circuit_transfer.models.backend import Model
from circuit_transfer.models.bridge import (
    backend_of,
    delta_names_backend,
    hf_param_name,
    is_bridge,
    split_views,
)
from circuit_transfer.models.param_map import architecture_of, param_links, with_offset

Delta = dict[str, torch.Tensor]
"""`"{param}.runs"` -> int64 [n_runs, 2] (start, length) and `"{param}.values"` -> values, per
parameter with a trainable entry (see the module docstring)."""

_RUNS, _VALUES = ".runs", ".values"


def mask_runs(mask: torch.Tensor) -> torch.Tensor:
    """The non-zero entries of the flattened `mask` as int64 [n_runs, 2] (start, length) runs."""
    flat = mask.reshape(-1).ne(0).to(torch.int8).cpu()
    edges = torch.diff(torch.cat([torch.zeros(1, dtype=torch.int8), flat, torch.zeros(1, dtype=torch.int8)]))
    starts = torch.nonzero(edges == 1).flatten()
    ends = torch.nonzero(edges == -1).flatten()
    return torch.stack([starts, ends - starts], dim=1).to(torch.int64)


def runs_to_index(runs: torch.Tensor) -> torch.Tensor:
    """Flat int64 indices covered by (start, length) `runs`, in order."""
    if runs.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    starts, lengths = runs[:, 0], runs[:, 1]
    offsets = torch.cumsum(lengths, 0) - lengths  # where each run begins in the output
    position = torch.arange(int(lengths.sum()), dtype=torch.int64)
    run_of = torch.repeat_interleave(torch.arange(len(runs)), lengths)
    return starts[run_of] + (position - offsets[run_of])


@torch.no_grad()
def extract_delta(
    model: Model,
    base_state_dict: Mapping[str, torch.Tensor],
    masks: ParamMasks,
    check_frozen: bool = True,
) -> Delta:
    """The trainable entries of `model`'s parameters, as a delta over `base_state_dict`.

    Args:
        model: the trained model.
        base_state_dict: the weights training started from (e.g. a copy of the proxy checkpoint's
            `state_dict()`), used to check that nothing outside the masks changed.
        masks: what could change (`masking.head_grad_masks`).
        check_frozen: verify every masked entry equals the base bit for bit (raise otherwise).

    Raises:
        ValueError: `check_frozen` and a masked entry differs from the base, or a shape mismatch.
    """
    delta: Delta = {}
    views = split_views(model) if is_bridge(model) else {}
    for name, param in model.named_parameters():
        if name in views:
            continue  # a view into a fused parameter (GPT-2's q/k/v of c_attn): its owner holds it
        mask = masks[name]
        base = base_state_dict[name]
        if base.shape != param.shape or mask.shape != param.shape:
            raise ValueError(
                f"{name}: parameter {tuple(param.shape)}, base {tuple(base.shape)}, mask {tuple(mask.shape)}"
            )
        keep = mask.ne(0)
        if check_frozen:
            frozen_now = param.detach()[~keep]
            frozen_base = base.to(param.device)[~keep]
            if not torch.equal(frozen_now, frozen_base):
                n_diff = int((frozen_now != frozen_base).sum())
                raise ValueError(f"{name}: {n_diff} entries outside the mask differ from the base model")
        runs = mask_runs(mask)
        if len(runs) == 0:
            continue
        index = runs_to_index(runs).to(param.device)
        delta[name + _RUNS] = runs
        delta[name + _VALUES] = param.detach().reshape(-1)[index].cpu().contiguous()
    return delta


def delta_num_values(delta: Delta) -> int:
    """Number of parameter entries a delta carries."""
    return sum(t.numel() for k, t in delta.items() if k.endswith(_VALUES))


def save_delta(path: str | os.PathLike, delta: Delta, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write `delta` atomically as safetensors; `metadata` (JSON-serialisable) is kept in the header."""
    header = {"format": "circuit-transfer-delta/1", "metadata": json.dumps(dict(metadata or {}))}
    tensors = {k: v.detach().cpu().contiguous() for k, v in delta.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def load_delta(path: str | os.PathLike) -> tuple[Delta, dict[str, Any]]:
    """Read a delta written by `save_delta`; returns (delta, metadata)."""
    delta: Delta = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if header.get("format") != "circuit-transfer-delta/1":
                raise ValueError(f"{path} is not a circuit-transfer delta (format {header.get('format')!r})")
            for key in f.keys():
                delta[key] = f.get_tensor(key)
    except SafetensorError as err:  # its message names no file
        raise ValueError(f"{path} is unreadable ({err}): it may be truncated; re-run the transfer.") from None
    return delta, json.loads(header.get("metadata", "{}"))


@torch.no_grad()
def apply_delta(model: Model, delta: Delta) -> Model:
    """Write the delta's values into `model`'s parameters in place (e.g. a fresh copy of the base
    model); returns `model`.

    Raises:
        ValueError: the delta names a parameter the model lacks or does not fit its shape.
    """
    names = _delta_params(delta)
    if names and delta_names_backend(names) != backend_of(model):
        delta = convert_delta(delta, model)
        names = _delta_params(delta)
    params = dict(model.named_parameters())
    for name in names:
        if name not in params:
            raise ValueError(f"delta has values for {name}, which the model does not have")
        param = params[name]
        index = runs_to_index(delta[name + _RUNS])
        values = delta[name + _VALUES]
        if len(index) != values.numel() or (len(index) and int(index.max()) >= param.numel()):
            raise ValueError(f"delta for {name} does not fit its shape {tuple(param.shape)}")
        flat = param.data.view(-1)  # TransformerLens parameters are contiguous
        flat[index.to(param.device)] = values.to(device=param.device, dtype=param.dtype)
    return model


def _delta_params(delta: Delta) -> list[str]:
    return [k[: -len(_RUNS)] for k in delta if k.endswith(_RUNS)]


def convert_delta(delta: Delta, model: Model) -> Delta:
    """A delta made on the other backend, in `model`'s parameter names and layouts.

    Each parameter's trained entries are scattered into its full source layout, moved with the
    link's reshape / transpose (`models.param_map`), and gathered again as runs; Gemma's norm
    offset is added (to TransformerLens) or taken off (to HF) in float32 as TransformerLens's
    conversion does, so bridge -> hooked reproduces the conversion of the trained HF weights bit
    for bit, and hooked -> bridge to float32 rounding of `w - 1`.

    Raises:
        ValueError: the architecture has no map, an entry is no attention or norm tensor (a full
            fine-tuning delta), or a hooked delta trained a bias the HF model does not have.
    """
    names = _delta_params(delta)
    made_on, target_backend = delta_names_backend(names), backend_of(model)
    fix = f"apply it to the base model loaded with backend={made_on!r} (load_model(..., backend={made_on!r}))"
    try:
        links = param_links(model)
    except ValueError as err:
        raise ValueError(
            f"this delta was made on the {made_on} backend, the model is a {target_backend} model, and {err}: {fix}"
        ) from None
    params = {n: p for n, p in model.named_parameters()}
    if target_backend == "bridge":
        by_source = {link.tl: link for link in links}
        target_name = {hf_param_name(n): n for n in params}
    else:
        by_source = {link.hf: link for link in links}
        target_name = {n: n for n in params}
    out: Delta = {}
    for name in names:
        link = by_source.get(hf_param_name(name) if made_on == "bridge" else name)
        if link is None:
            raise ValueError(
                f"delta entry {name} has no counterpart on the {target_backend} backend: deltas cross "
                "backends for the attention and norm tensors a head set trains (ct-sft, random, "
                f"near-zero, ln-only), not for a full fine-tuning delta's MLP or embeddings; {fix}"
            )
        index, values = runs_to_index(delta[name + _RUNS]), delta[name + _VALUES]
        source, target = (link.tl, link.hf) if made_on == "hooked" else (link.hf, link.tl)
        if target not in target_name:
            if made_on == "hooked" and not values.any():
                continue  # a zero bias TransformerLens's conversion added; the HF model has none
            raise ValueError(
                f"delta entry {source} holds trained values, but the {architecture_of(model)} HF model has "
                f"no {target}: TransformerLens's conversion adds it as zeros and training moved it. Train "
                f"on backend='bridge' (its head-set deltas apply on both backends), or {fix}"
            )
        param = params[target_name[target]]
        to_source, to_target = (link.to_tl, link.to_hf) if made_on == "hooked" else (link.to_hf, link.to_tl)
        source_shape = to_source(torch.zeros(param.shape)).shape
        if len(index) != values.numel() or (len(index) and int(index.max()) >= source_shape.numel()):
            raise ValueError(f"delta for {name} does not fit the layout {tuple(source_shape)} of {source}")
        dense = torch.zeros(source_shape.numel(), dtype=values.dtype)
        keep = torch.zeros(source_shape.numel(), dtype=torch.int8)
        dense[index], keep[index] = values, 1
        dense_t, keep_t = to_target(dense.reshape(source_shape)), to_target(keep.reshape(source_shape))
        runs = mask_runs(keep_t)
        moved = dense_t.reshape(-1)[runs_to_index(runs)]
        out[target_name[target] + _RUNS] = runs
        out[target_name[target] + _VALUES] = with_offset(moved, link.offset, 1 if made_on == "bridge" else -1)
    return out
