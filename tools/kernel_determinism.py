"""Whether pinning the CPU instruction set changes a model's floating-point results on this machine.

A retrained proxy is bit-identical to an earlier one only when every kernel sums in the same order.
ATen picks its kernels by the CPU it finds (AVX2, AVX-512, ...), MKL and oneDNN likewise, so
`analyses/round2.sh` pins them (analyses/README.md, execution notes, fourth part). This tool runs
one forward and backward pass of a checkpoint on 8 NusaX sentences, in a fresh process per setting,
and hashes the logits and every gradient: settings with one hash compute the same bits here.

    python tools/kernel_determinism.py --model runs/analyses/round2/gemma3-270m/proxy-ind \\
        --out runs/kernel_determinism.json

Expected on an AVX2-only machine: the unpinned run equals the AVX2-pinned one, and
`ATEN_CPU_CAPABILITY=default` (ATen's scalar kernels) differs, which shows the hash can tell.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

SETTINGS = {
    "unpinned": {},
    "pinned AVX2 (round2.sh)": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "DNNL_MAX_CPU_ISA": "AVX2",
    },
    "ATen scalar kernels": {"ATEN_CPU_CAPABILITY": "default"},
}


def pass_hash(model_spec: str) -> dict:
    """SHA-256 (16 hex digits) of the logits and all gradients of one forward and backward pass."""
    import torch

    from circuit_transfer.models import load_model
    from circuit_transfer.tasks import get_task

    model = load_model(model_spec)
    task = get_task("nusax-senti")
    examples = task.test_examples("jav")[:8]
    tokens = model.tokenizer([task.render(e) for e in examples], return_tensors="pt", padding=True)
    logits = model(tokens["input_ids"], attention_mask=tokens["attention_mask"])
    logits[:, -1].logsumexp(-1).sum().backward()
    digest = hashlib.sha256(logits.detach().numpy().tobytes())
    for parameter in model.parameters():
        if parameter.grad is not None:
            digest.update(parameter.grad.numpy().tobytes())
    return {"hash": digest.hexdigest()[:16], "aten_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="checkpoint directory (or any load_model spec)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(pass_hash(args.model)))
        return {}
    results = {}
    for name, pins in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if k not in SETTINGS["pinned AVX2 (round2.sh)"]}
        env.update(pins, OMP_NUM_THREADS="1")
        child = [sys.executable, __file__, "--model", args.model, "--one"]
        done = subprocess.run(child, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{name}: the pass failed:\n{done.stderr[-2000:]}")
        line = done.stdout.splitlines()[-1]
        results[name] = {**json.loads(line), "pins": pins}
        print(f"{name:26} {results[name]['hash']}  (ATen {results[name]['aten_cpu_capability']})", flush=True)
    if args.out:
        from circuit_transfer.io import atomic_write_json

        atomic_write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
