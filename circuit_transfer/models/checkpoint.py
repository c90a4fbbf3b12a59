"""Our checkpoint format: a directory that reloads to the same model bit for bit, on either backend.

Layout of a checkpoint directory:
- `weights.safetensors`: the model's parameters (buffers such as the causal mask and rotary
  tables are rebuilt from the config, so they are not stored);
- `config.json`: for a HookedTransformer the `HookedTransformerConfig` fields as JSON (dtype as a
  string, no device); for a TransformerBridge the Hugging Face config, with the weights under
  their HF state-dict keys (`models.bridge.hf_state_dict`);
- `tokenizer/`: `tokenizer.save_pretrained` output;
- `circuit_transfer.json`: the marker, with the format version, the backend that wrote it
  ("hooked" when absent: checkpoints from before the bridge), the model name and the caller's
  metadata.

A bridge checkpoint holds plain HF weights, so it loads on both backends (`load_checkpoint(...,
backend="hooked")` converts it with TransformerLens's own weight conversion); a hooked one holds
TransformerLens's layout and loads only as a HookedTransformer (TransformerLens 3.x).

A checkpoint is written to a temporary directory beside its destination and renamed into place,
so a reader sees either a complete checkpoint or none.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from circuit_transfer.choices import BACKENDS
from circuit_transfer.io import atomic_write_dir, read_json
from circuit_transfer.models.backend import HookedTransformer, HookedTransformerConfig, Model
from circuit_transfer.models.bridge import bridge_from_hf, checkpoint_params, hf_state_dict, is_bridge
from circuit_transfer.models.hf_convert import hooked_from_hf
from circuit_transfer.models.tokenizer import attach_tokenizer
from circuit_transfer.tasks import Task

MARKER = "circuit_transfer.json"
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer"
FORMAT = "circuit-transfer-checkpoint"
FORMAT_VERSION = 1
REQUIRED = (MARKER, WEIGHTS, CONFIG, TOKENIZER)
_FIX = "re-create it with `circuit-transfer prepare-proxy` (or `save_checkpoint(model, dir)`)"


class CheckpointError(Exception):
    """A checkpoint directory is incomplete, unreadable, or of an unknown format."""


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    """Whether `path` looks like one of our checkpoints (complete or not)."""
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in (MARKER, WEIGHTS, TOKENIZER))


def config_to_dict(cfg: HookedTransformerConfig) -> dict[str, Any]:
    """The config's fields as JSON-ready values; `config_from_dict` inverts it."""
    out: dict[str, Any] = {}
    for key, value in cfg.to_dict().items():
        if key == "device":
            continue  # where to load is the loader's choice
        if isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        elif hasattr(value, "item") and not isinstance(value, torch.Tensor):
            value = value.item()  # numpy scalars, e.g. attn_scale
        out[key] = value
    json.dumps(out)  # fail here, not half-way through a write, if a field is not JSON
    return out


def config_from_dict(d: dict[str, Any], device: str | torch.device | None = None) -> HookedTransformerConfig:
    """Rebuild a config written by `config_to_dict`."""
    d = dict(d)
    if isinstance(d.get("dtype"), str):
        d["dtype"] = getattr(torch, d["dtype"])
    d["device"] = None if device is None else str(device)
    return HookedTransformerConfig(**d)


def _write_checkpoint(model: Model, out: Path, metadata: dict[str, Any]) -> None:
    if is_bridge(model):
        params = {name: p.cpu().contiguous() for name, p in hf_state_dict(model).items()}
        config = model.original_model.config.to_json_string()
    else:
        params = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()}
        config = json.dumps(config_to_dict(model.cfg), indent=2) + "\n"
    save_file(params, str(out / WEIGHTS))
    (out / CONFIG).write_text(config, encoding="utf-8")
    model.tokenizer.save_pretrained(str(out / TOKENIZER))
    marker = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backend": "bridge" if is_bridge(model) else "hooked",
        "model_name": str(model.cfg.model_name),
        "metadata": metadata,
    }
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def save_checkpoint(
    model: Model,
    out_dir: str | os.PathLike,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = True,
    task: Task | None = None,
    lang: str | None = None,
) -> Path:
    """Save `model` (weights, config, tokenizer) and `metadata` as a checkpoint directory.

    Two metadata entries are read back by later steps, as defaults for what they are not told:
    - `"task"`: the prompt format, `Task.to_dict()` (name, labels, template, label words), read
      by `proxy.task_of_checkpoint` (discover, evaluate and transfer use it unless given a task);
    - `"lang"`: the language the model is competent in (the proxy language), which `transfer`
      measures forgetting on unless given `proxy_lang=`.
    Pass them as `task=` and `lang=`; everything else in `metadata` is kept for the record only.

    Args:
        metadata: JSON-serialisable facts to keep with the weights (training figures, ...);
            `read_checkpoint_metadata` returns it.
        overwrite: replace an existing checkpoint at `out_dir`. A directory that is not one of
            our checkpoints is never replaced.
        task: the task the model was trained on, recorded as `metadata["task"]`.
        lang: its language, recorded as `metadata["lang"]`.

    Returns:
        The checkpoint directory.
    """
    if model.tokenizer is None:
        raise ValueError(
            "save_checkpoint needs a model with a tokenizer (model.tokenizer is None): attach one with "
            "`circuit_transfer.models.attach_tokenizer(model, tokenizer)`."
        )
    out = Path(out_dir)
    metadata = dict(metadata or {})
    if task is not None:
        metadata["task"] = task.to_dict()
    if lang is not None:
        metadata["lang"] = lang
    json.dumps(metadata)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
        if not out.is_dir() or (any(out.iterdir()) and not is_checkpoint_dir(out)):
            raise FileExistsError(f"{out} exists and is not a circuit-transfer checkpoint; not replacing it")
    atomic_write_dir(out, lambda tmp: _write_checkpoint(model, tmp, metadata))
    return out


def _check_complete(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist; {_FIX}")
    for name in REQUIRED:
        if not (path / name).exists():
            raise CheckpointError(f"checkpoint {path} is missing `{name}`; {_FIX}")
    marker = read_json(path / MARKER)
    if marker.get("format") != FORMAT:
        raise CheckpointError(f"{path / MARKER} is not a {FORMAT} marker; {_FIX}")
    if marker.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {marker.get('format_version')}, "
            f"this code reads version {FORMAT_VERSION}; {_FIX}"
        )
    return marker


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """A short hash of a checkpoint's weights (first 16 hex digits of their SHA-256).

    Two checkpoints with the same fingerprint hold the same parameters, so results cached for one
    (head scores, 'before' accuracies) hold for the other; a proxy retrained into the same folder
    gets a new fingerprint, and caches keyed by it are not reused by mistake. Hashing a 540 MB file
    takes seconds, so the result is remembered per weights file (path, size, modification time)."""
    path = Path(path)
    _check_complete(path)
    weights = (path / WEIGHTS).resolve()
    stat = weights.stat()
    key = (str(weights), stat.st_size, stat.st_mtime_ns)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _FINGERPRINTS[key] = digest.hexdigest()[:16]
    return _FINGERPRINTS[key]


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata dict saved with a checkpoint."""
    return _check_complete(Path(path))["metadata"]


def checkpoint_backend(path: str | os.PathLike) -> str:
    """The backend that wrote a checkpoint: "hooked" or "bridge"."""
    return _check_complete(Path(path)).get("backend", "hooked")


def _read_weights(path: Path, device: str | torch.device | None) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path / WEIGHTS), device=str(device or "cpu"))
    except SafetensorError as err:  # its message names no file
        raise CheckpointError(
            f"{path / WEIGHTS} is unreadable ({err}): it may be truncated; {_FIX}"
        ) from None


def _check_names(path: Path, expected: set[str], state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path / WEIGHTS} does not match {path / CONFIG}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; {_FIX}"
        )


def _load_bridge_checkpoint(
    path: Path,
    marker: dict[str, Any],
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    backend: str,
) -> Model:
    """A bridge checkpoint on either backend, its weights bit for bit (in the saved dtype by default).

    The bridge gives the HF `lm_head` a zero bias of its own (TransformerLens's `b_U`), which the
    HF architecture lacks: it is restored on the bridge, and dropped for the hooked backend only
    while it is still zero.
    """
    state = _read_weights(path, "cpu")
    saved_dtype = next(iter(state.values())).dtype
    hf_model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path)), dtype=saved_dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(path / TOKENIZER))
    name = marker.get("model_name", path.name)
    if backend == "hooked":
        expected = {n for n, _ in hf_model.named_parameters()}
        for key in sorted(state.keys() - expected):
            if state[key].any():
                raise CheckpointError(
                    f"checkpoint {path} trained {key}, which the Hugging Face architecture does not have "
                    "(the bridge added it): load it with backend='bridge'"
                )
            del state[key]
        _check_names(path, expected, state)
        hf_model.load_state_dict(state, strict=False)  # tied weights are stored once
        return hooked_from_hf(hf_model, tokenizer, name, device=device, dtype=dtype or saved_dtype)
    bridge = bridge_from_hf(hf_model, tokenizer, name, device=device, dtype=dtype or saved_dtype)
    params = checkpoint_params(bridge)
    _check_names(path, set(params), state)
    with torch.no_grad():
        for key, param in params.items():
            param.copy_(state[key])
    return bridge


def load_checkpoint(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    backend: str | None = None,
) -> Model:
    """Load a checkpoint written by `save_checkpoint`.

    Args:
        dtype: convert the weights to this dtype; None keeps the saved dtype (bit-exact).
        backend: "hooked" or "bridge"; None: the backend that wrote it. A bridge checkpoint loads
            on both; a hooked one only as a HookedTransformer.

    Raises:
        CheckpointError: incomplete or unreadable, or a hooked checkpoint asked for as a bridge.
    """
    path = Path(path)
    marker = _check_complete(path)
    saved = marker.get("backend", "hooked")
    backend = backend or saved
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if saved == "bridge":
        return _load_bridge_checkpoint(path, marker, device, dtype, backend)
    if backend == "bridge":
        raise CheckpointError(
            f"checkpoint {path} was written from a HookedTransformer (TransformerLens weight layout), "
            "which the bridge cannot load: load it with backend='hooked' (TransformerLens 3.x), or "
            "re-create it from the Hugging Face model with backend='bridge'"
        )
    cfg = config_from_dict(read_json(path / CONFIG), device=device)
    init_weights = cfg.init_weights
    cfg.init_weights = False  # the weights come from the file
    model = HookedTransformer(cfg, move_to_device=True)
    cfg.init_weights = init_weights
    state = _read_weights(path, cfg.device)
    _check_names(path, {name for name, _ in model.named_parameters()}, state)
    model.load_state_dict(state, strict=False)
    if dtype is not None and dtype != cfg.dtype:
        model = model.to(dtype)
        model.cfg.dtype = dtype
    attach_tokenizer(model, AutoTokenizer.from_pretrained(str(path / TOKENIZER)))
    model.eval()
    return model


def load_or_convert(
    cached: str | os.PathLike,
    convert: Callable[[], Model],
    metadata: dict[str, Any],
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    backend: str | None = None,
) -> Model:
    """The checkpoint at `cached`, first built by `convert()` and saved there when it is missing.

    For the models converted from a download (SmolLM2, Gemma 3): an incomplete or old cache is
    rebuilt; when another process caches the same model at the same moment, its copy is used.
    """
    cached = Path(cached)
    if cached.exists():
        try:
            return load_checkpoint(cached, device=device, dtype=dtype, backend=backend)
        except CheckpointError:
            pass  # incomplete or old cache: rebuild it below
    model = convert()
    try:
        save_checkpoint(model, cached, metadata=metadata)
    except OSError:
        if not cached.exists():
            raise
    return load_checkpoint(cached, device=device, dtype=dtype, backend=backend)
