"""Benchmark: step time and optimizer state of CT-SFT (a ~5%-of-heads circuit) vs full fine-tuning.

One training step = forward + backward + optimizer step (`optim.MaskedAdamW`: masked grads,
clipping, decay through the mask, Adam), on random tokens with the next-token LM loss. Both
set-ups run side by side in one process, alternating step by step, on two copies of the same
model, so machine load affects both alike. The first step of each is a warm-up (it also
allocates the Adam state) and is not timed.

    .venv/bin/python analyses/bench_masking.py --model smollm2-135m --batch 8 --seq 64 --steps 5

Models: `smollm2-135m` (real weights via `circuit_transfer.models.load_model`; falls back to a
random model of the same shape if that cannot load), `smollm2-shape-random` (random Llama-like
model of SmolLM2-135M's shape: 30 layers x 9 heads, 3 KV heads, d_model 576, d_mlp 1536,
vocab 49152; step time does not depend on the weights), `gpt2-like-random` (tiny, for a smoke run).

Writes `<out>/<model>.json` and `<out>/<model>.md`.
"""

from __future__ import annotations

import argparse
import copy
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuit_transfer.io import atomic_write_json, atomic_write_text
from circuit_transfer.masking import FULL, MaskPolicy, masked_training
from circuit_transfer.optim import MaskedAdamW, OptimConfig

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_masking"


def smollm2_shape_cfg(device: str) -> HookedTransformerConfig:
    """A random Llama-like config with SmolLM2-135M's shape."""
    return HookedTransformerConfig(
        n_layers=30, d_model=576, n_heads=9, d_head=64, d_mlp=1536, n_ctx=2048, d_vocab=49152,
        n_key_value_heads=3, act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
        rotary_dim=64, rotary_base=100000, gated_mlp=True, final_rms=True, eps=1e-5, device=device, seed=0,
    )  # fmt: skip


def gpt2_like_cfg(device: str) -> HookedTransformerConfig:
    """A tiny GPT-2-like config (LayerNorm, learned positions), for smoke runs."""
    return HookedTransformerConfig(
        n_layers=4, d_model=128, n_heads=8, d_head=16, d_mlp=512, n_ctx=256, d_vocab=5000,
        act_fn="gelu_new", normalization_type="LN", device=device, seed=0,
    )  # fmt: skip


def build_model(name: str, device: str) -> tuple[HookedTransformer, str]:
    """The model to benchmark and a note on where its weights come from."""
    if name == "smollm2-135m":
        try:
            from circuit_transfer.models import load_model

            return load_model("smollm2-135m", device=device), "SmolLM2-135M-Instruct weights (load_model)"
        except Exception as err:  # noqa: BLE001 - any failure: fall back, and say so in the results
            print(
                f"load_model('smollm2-135m') failed ({err!r}); using a random model of its shape",
                file=sys.stderr,
            )
            model = HookedTransformer(smollm2_shape_cfg(device))
            return model, f"random weights, SmolLM2-135M shape (load_model failed: {type(err).__name__})"
    if name == "smollm2-shape-random":
        return HookedTransformer(smollm2_shape_cfg(device)), "random weights, SmolLM2-135M shape"
    if name == "gpt2-like-random":
        return HookedTransformer(gpt2_like_cfg(device)), "random weights, tiny GPT-2-like"
    raise ValueError(f"unknown model {name!r}")


def spread_heads(n_layers: int, n_heads: int, k: int, seed: int) -> list[tuple[int, int]]:
    """k heads spread over the layers: one per contiguous band of layers (a random layer in each
    band, a random head in it); more than one per layer only when k > n_layers. Seeded."""
    rng = random.Random(seed)
    if k > n_layers:
        return sorted(rng.sample([(layer, h) for layer in range(n_layers) for h in range(n_heads)], k))
    bounds = [round(i * n_layers / k) for i in range(k + 1)]
    return sorted((rng.randrange(bounds[i], bounds[i + 1]), rng.randrange(n_heads)) for i in range(k))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Runner:
    """One training set-up (a model copy, its masked_training block and its optimizer)."""

    def __init__(self, label: str, model: HookedTransformer, heads, policy: MaskPolicy, total_steps: int):
        self.label, self.model = label, model
        self._ctx = masked_training(model, heads, policy)
        self.tset = self._ctx.__enter__()
        self.opt = MaskedAdamW(model, OptimConfig(), total_steps=total_steps, masks=self.tset.masks)
        self.times: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": [], "step": []}

    def step(self, tokens: torch.Tensor, record: bool) -> None:
        device = str(tokens.device)
        _sync(device)
        t0 = time.perf_counter()
        loss = self.model(tokens, return_type="loss")
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        self.opt.step()
        _sync(device)
        t3 = time.perf_counter()
        if record:
            for key, value in (
                ("forward", t1 - t0),
                ("backward", t2 - t1),
                ("optimizer", t3 - t2),
                ("step", t3 - t0),
            ):
                self.times[key].append(value)

    def close(self) -> None:
        self._ctx.__exit__(None, None, None)

    def summary(self) -> dict:
        params_in_opt = sum(p.numel() for p in self.opt.params)
        return {
            "label": self.label,
            "n_trainable": self.tset.n_trainable,
            "n_total": self.tset.n_total,
            "trainable_fraction": self.tset.fraction,
            "tensors_optimised": len(self.opt.params),
            "params_in_optimised_tensors": params_in_opt,
            "optimizer_state_bytes": self.opt.optimizer_state_bytes(),
            "grad_bytes": sum(p.numel() * p.element_size() for p in self.opt.params),
            **{f"{k}_s_median": statistics.median(v) for k, v in self.times.items()},
            "step_s_mean": statistics.mean(self.times["step"]),
            "step_s_min": min(self.times["step"]),
            "step_s_all": self.times["step"],
        }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        choices=["smollm2-135m", "smollm2-shape-random", "gpt2-like-random"],
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument(
        "--steps", type=int, default=5, help="timed steps per set-up (after one warm-up step)"
    )
    parser.add_argument("--head-fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared CPU, multi-threaded step times are dominated "
        "by OpenMP barrier stalls when another process holds a core); 0 = torch's default",
    )
    parser.add_argument(
        "--also-frozen-norms",
        action="store_true",
        help="add a third set-up: the same circuit with norms frozen (backward stops at its first layer)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    base, weights = build_model(args.model, args.device)
    cfg = base.cfg
    n_all = cfg.n_layers * cfg.n_heads
    k = max(1, round(args.head_fraction * n_all))
    heads = spread_heads(cfg.n_layers, cfg.n_heads, k, args.seed)
    total = args.steps + 1
    setups = [("ct-sft", heads, MaskPolicy()), ("full", FULL, MaskPolicy())]
    if args.also_frozen_norms:
        setups.insert(1, ("ct-sft-norms-frozen", heads, MaskPolicy(norms="frozen")))
    before = {n: p.detach().to("cpu", copy=True) for n, p in base.named_parameters()}
    runners = [
        Runner(label, copy.deepcopy(base) if i else base, h, p, total)
        for i, (label, h, p) in enumerate(setups)
    ]
    gen = torch.Generator().manual_seed(args.seed)
    batches = [
        torch.randint(0, cfg.d_vocab, (args.batch, args.seq), generator=gen).to(args.device)
        for _ in range(total)
    ]
    for i, tokens in enumerate(batches):
        order = runners if i % 2 == 0 else runners[::-1]  # alternate who goes first
        for runner in order:
            runner.step(tokens, record=i > 0)
        print(
            f"step {i}: "
            + ", ".join(
                f"{r.label} {r.times['step'][-1]:.3f}s" for r in runners if r.times["step"] and i > 0
            ),
            file=sys.stderr,
        )
    results = {r.label: r.summary() for r in runners}
    for r in runners[:-1]:  # the masked set-ups: check the acceptance property on this model too
        results[r.label].update(check_masked_entries(r.model, before, r.tset.masks))
    for r in runners:
        r.close()
    ct, full = results["ct-sft"], results["full"]
    record = {
        "model": args.model,
        "weights": weights,
        "shape": {
            "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads,
            "n_key_value_heads": cfg.n_key_value_heads,
            "d_model": cfg.d_model,
            "d_head": cfg.d_head,
            "d_mlp": cfg.d_mlp,
            "d_vocab": cfg.d_vocab,
        },
        "batch": args.batch,
        "seq": args.seq,
        "timed_steps": args.steps,
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "heads": [list(h) for h in heads],
        "n_heads_selected": k,
        "n_heads_total": n_all,
        "optim": {"lr": 1e-3, "weight_decay": 0.1, "max_grad_norm": 1.0, "schedule": "cosine"},
        "results": results,
        "ratios": {
            "step_time_ct_over_full": ct["step_s_median"] / full["step_s_median"],
            # per step, the two set-ups ran back to back on the same batch: less sensitive to machine load
            "step_time_ct_over_full_paired_median": statistics.median(
                a / b for a, b in zip(ct["step_s_all"], full["step_s_all"])
            ),
            "optimizer_state_ct_over_full": ct["optimizer_state_bytes"] / full["optimizer_state_bytes"],
            "trainable_ct_over_full": ct["n_trainable"] / full["n_trainable"],
        },
        "targets": {"step_time_ratio_max": 0.85, "optimizer_state_ratio_max": 0.10},
    }
    record["targets_met"] = {
        "step_time": record["ratios"]["step_time_ct_over_full"] <= 0.85,
        "optimizer_state": record["ratios"]["optimizer_state_ct_over_full"] <= 0.10,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"{args.model}.json", record)
    atomic_write_text(args.out / f"{args.model}.md", render_markdown(record))
    print(render_markdown(record))
    return record


@torch.no_grad()
def check_masked_entries(model: HookedTransformer, before: dict, masks: dict) -> dict:
    """Are all masked entries bit-identical to the weights before training? How many entries moved?"""
    identical, changed = True, 0
    for name, p in model.named_parameters():
        now, keep = p.detach().cpu(), masks[name].cpu().bool()
        identical &= torch.equal(now[~keep], before[name][~keep])
        changed += int(now.ne(before[name]).sum())
    return {"masked_entries_bit_identical": identical, "entries_changed": changed}


def render_markdown(rec: dict) -> str:
    """A short table of the results."""
    mb = 1024**2
    lines = [
        f"# Masked (CT-SFT) vs full fine-tuning step: {rec['model']}",
        "",
        f"Weights: {rec['weights']}. Batch {rec['batch']} x seq {rec['seq']}, {rec['timed_steps']} timed steps "
        f"(median), device {rec['device']} ({rec['threads']} threads), torch {rec['torch']}. "
        f"CT-SFT circuit: {rec['n_heads_selected']} of {rec['n_heads_total']} heads, spread over layers "
        f"(seeded): {', '.join(f'L{a}H{b}' for a, b in rec['heads'])}; policy: default (norms trainable, "
        "b_O frozen, GQA K/V of a selected head's group trainable). Optimizer: MaskedAdamW, wd 0.1, clip 1.0, cosine.",
        "",
        "| set-up | trainable params | fraction | step (s) | forward | backward | optimizer | optimizer state (MiB) | tensors optimised |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in rec["results"].values():
        lines.append(
            f"| {r['label']} | {r['n_trainable']:,} | {r['trainable_fraction']:.3%} | {r['step_s_median']:.3f} | "
            f"{r['forward_s_median']:.3f} | {r['backward_s_median']:.3f} | {r['optimizer_s_median']:.3f} | "
            f"{r['optimizer_state_bytes'] / mb:.1f} | {r['tensors_optimised']} |"
        )
    ratios, met = rec["ratios"], rec["targets_met"]
    lines += [
        "",
        f"- step time ct-sft / full: **{ratios['step_time_ct_over_full']:.2f}x** (target <= 0.85: "
        f"{'met' if met['step_time'] else 'NOT met'}); median of per-step paired ratios: "
        f"{ratios['step_time_ct_over_full_paired_median']:.2f}x",
        f"- optimizer state ct-sft / full: **{ratios['optimizer_state_ct_over_full']:.2%}** (target <= 10%: "
        f"{'met' if met['optimizer_state'] else 'NOT met'})",
        "- masked entries bit-identical after the run: "
        + ", ".join(
            f"{r['label']}: {r['masked_entries_bit_identical']} ({r['entries_changed']:,} entries changed)"
            for r in rec["results"].values()
            if "masked_entries_bit_identical" in r
        ),
        f"- trainable parameters ct-sft / full: {ratios['trainable_ct_over_full']:.3%}; the optimizer state is "
        "larger than that because head-masked tensors (W_Q, W_O, ...) keep full-size Adam moments.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
