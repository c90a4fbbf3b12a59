"""Model loading: `load_model(spec)` for every model, our checkpoint format, and the tiny proxy model.

    from circuit_transfer.models import load_model, save_checkpoint, build_tiny_model
    model = load_model("smollm2-135m")          # or a checkpoint dir, an HF dir, a TL name
    save_checkpoint(model, "runs/x/model", metadata={"task": "sentiment"})
    model = load_model("runs/x/model")          # bit-identical weights, same config and tokenizer

Every model comes back unprocessed (no LayerNorm folding), as a `HookedTransformer` or, with
`backend="bridge"`, a `TransformerBridge` (`bridge.py`), with `model.tokenizer` a fast HF
tokenizer that pads on the right.
"""

from circuit_transfer.models.checkpoint import (
    CheckpointError,
    checkpoint_backend,
    checkpoint_fingerprint,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from circuit_transfer.models.hf_convert import hooked_from_hf
from circuit_transfer.models.loading import ModelSpecError, SpecKind, load_model, resolve_spec
from circuit_transfer.models.tiny import TinyModelSpec, build_tiny_model
from circuit_transfer.models.tokenizer import attach_tokenizer, single_token_id

__all__ = [
    "CheckpointError",
    "ModelSpecError",
    "SpecKind",
    "TinyModelSpec",
    "attach_tokenizer",
    "build_tiny_model",
    "checkpoint_backend",
    "checkpoint_fingerprint",
    "hooked_from_hf",
    "load_checkpoint",
    "load_model",
    "read_checkpoint_metadata",
    "resolve_spec",
    "save_checkpoint",
    "single_token_id",
]
