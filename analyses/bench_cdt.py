"""Speed of the CD-T engine: all heads to the final-position logits, against the ideal and against patching.

Measured side by side on the same data in one run:
  (a) forward-equivalents = time(decompose_heads, all heads) / time(one plain forward pass), against the
      ideal n_heads * (n_layers + 1) / 2 (each source costs one forward pass from its layer up);
  (b) time(decompose_heads) / time(TransformerLens per-head mean-ablation patching,
      `get_act_patch_attn_head_out_all_pos` with a cache whose hook_z is the mean).
Targets: (a) within 1.3x of ideal, (b) at most 0.6.

Times are the process's CPU time (one thread: what the computation itself costs, robust to other
load on a shared machine); wall-clock times are recorded beside them. `--profile` adds the
operators that take the time in one label-column CD-T run (torch.profiler, self CPU time).

    python analyses/bench_cdt.py --model tiny
    python analyses/bench_cdt.py --model smollm2-135m --n-sentences 8 --stabilize --profile
    python analyses/bench_cdt.py --model gemma3-270m --n-sentences 8 --profile
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformer_lens import ActivationCache, HookedTransformer, HookedTransformerConfig
from transformer_lens.patching import get_act_patch_attn_head_out_all_pos

from circuit_transfer.cdt import decompose_heads

LABEL_WORDS = (" negative", " neutral", " positive")
MODELS = ("tiny", "smollm2-135m", "gemma3-270m")


def tiny_model() -> HookedTransformer:
    """A random GPT-2-like model (LN, learned positions, gelu_new, biases)."""
    cfg = HookedTransformerConfig(
        n_layers=4,
        d_model=128,
        d_head=32,
        n_heads=4,
        d_mlp=512,
        n_ctx=64,
        d_vocab=2000,
        act_fn="gelu_new",
        seed=0,
    )
    return HookedTransformer(cfg).eval()


def load_data(
    model_name: str, n_sentences: int
) -> tuple[HookedTransformer, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Model, tokens, attention mask and label-token columns."""
    if model_name == "tiny":
        model = tiny_model()
        tokens = torch.randint(
            0, model.cfg.d_vocab, (n_sentences, 32), generator=torch.Generator().manual_seed(0)
        )
        return model, tokens, torch.ones_like(tokens), torch.tensor([1, 2, 3])
    from circuit_transfer.data import load_split
    from circuit_transfer.models import load_model

    model = load_model(model_name)
    # the n shortest of the first 100 test sentences: keeps the CPU benchmark to a few minutes
    rows = sorted(load_split("nusax-senti", "indonesian", "test")[:100], key=lambda ex: len(ex.text))[
        :n_sentences
    ]
    enc = model.tokenizer([ex.text + "\nSentiment:" for ex in rows], return_tensors="pt", padding=True)
    columns = torch.tensor([model.tokenizer.encode(w, add_special_tokens=False)[0] for w in LABEL_WORDS])
    return model, enc["input_ids"], enc["attention_mask"], columns


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Minimum CPU time and minimum wall time over `repeats` runs (seconds)."""
    cpu, wall = [], []
    for _ in range(repeats):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return min(cpu), min(wall)


def profile_table(fn: Callable[[], object], rows: int = 15) -> list[str]:
    """Markdown rows: the operators with the most self CPU time in one run of `fn`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    lines = ["| operator | self CPU | share | calls |", "|---|---|---|---|"]
    for e in events[:rows]:
        share = e.self_cpu_time_total / total
        lines.append(f"| `{e.key}` | {e.self_cpu_time_total / 1e6:.2f} s | {share:.1%} | {e.count} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=MODELS, default="tiny")
    parser.add_argument("--n-sentences", type=int, default=16)
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed runs of the two slow methods (min is kept)"
    )
    parser.add_argument("--stabilize", action="store_true", help="CD-T stability rule (needed on SmolLM2)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one label-column CD-T run (operators by CPU time)",
    )
    parser.add_argument("--out", type=Path, default=Path("analyses/results/bench_cdt"))
    args = parser.parse_args()

    torch.manual_seed(0)
    model, tokens, mask, columns = load_data(args.model, args.n_sentences)
    cfg = model.cfg
    final = mask.sum(1) - 1
    heads = [(layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    with torch.no_grad():
        _, cache = model.run_with_cache(
            tokens, attention_mask=mask, names_filter=lambda n: n.endswith("hook_z")
        )
    real = mask[:, :, None, None].to(cfg.dtype)
    mu = torch.stack(
        [
            (cache[f"blocks.{i}.attn.hook_z"] * real).sum((0, 1)) / real.sum((0, 1))
            for i in range(cfg.n_layers)
        ]
    )

    def forward() -> None:
        with torch.no_grad():
            model(tokens, attention_mask=mask)

    def cdt() -> None:
        decompose_heads(model, tokens, heads, mu, logits_positions=final, stabilize=args.stabilize)

    def cdt_columns() -> None:
        decompose_heads(
            model,
            tokens,
            heads,
            mu,
            logits_positions=final,
            unembed_columns=columns,
            stabilize=args.stabilize,
        )

    mean_cache = ActivationCache(
        {f"blocks.{i}.attn.hook_z": mu[i].expand(*tokens.shape, -1, -1).clone() for i in range(cfg.n_layers)},
        model,
    )
    batch = torch.arange(tokens.shape[0])

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[batch, final][:, columns].sum()

    def patching() -> None:
        with torch.no_grad():
            get_act_patch_attn_head_out_all_pos(model, tokens, mean_cache, metric)

    forward()  # warm-up
    first = best_time(forward, 5)
    (t_cdt, w_cdt) = best_time(cdt, args.repeats)
    (t_cdt_columns, w_cdt_columns) = best_time(cdt_columns, args.repeats)
    (t_patch, w_patch) = best_time(patching, 1)
    again = best_time(forward, 5)  # again after the long runs, same conditions
    t_forward, w_forward = min(first[0], again[0]), min(first[1], again[1])
    profile = profile_table(cdt_columns) if args.profile else []

    ideal = cfg.n_heads * (cfg.n_layers + 1) / 2
    result = {
        "model": args.model,
        "n_sentences": int(tokens.shape[0]),
        "n_pos": int(tokens.shape[1]),
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "d_vocab": cfg.d_vocab,
        "stabilize": args.stabilize,
        "threads": torch.get_num_threads(),
        "clock": "process CPU time (wall-clock in wall_*)",
        "device": str(next(model.parameters()).device),
        "platform": platform.platform(),
        "t_forward_s": t_forward,
        "t_cdt_all_heads_s": t_cdt,
        "t_cdt_all_heads_label_columns_s": t_cdt_columns,
        "t_patching_s": t_patch,
        "wall_forward_s": w_forward,
        "wall_cdt_all_heads_s": w_cdt,
        "wall_cdt_all_heads_label_columns_s": w_cdt_columns,
        "wall_patching_s": w_patch,
        "forward_equivalents": t_cdt / t_forward,
        "ideal_forward_equivalents": ideal,
        "ratio_to_ideal": t_cdt / t_forward / ideal,
        "ratio_to_ideal_label_columns": t_cdt_columns / t_forward / ideal,
        "ratio_cdt_to_patching": t_cdt / t_patch,
        "ratio_cdt_label_columns_to_patching": t_cdt_columns / t_patch,
        "wall_ratio_to_ideal_label_columns": w_cdt_columns / w_forward / ideal,
        "wall_ratio_cdt_label_columns_to_patching": w_cdt_columns / w_patch,
        "targets": {"ratio_to_ideal": 1.3, "ratio_cdt_to_patching": 0.6},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench_{args.model}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    table = [
        f"# CD-T speed: {args.model} ({result['n_sentences']} sentences x {result['n_pos']} positions, "
        f"{cfg.n_layers} layers x {cfg.n_heads} heads, {result['threads']} CPU threads)",
        "",
        f"CPU time of this process (wall-clock: forward {w_forward:.3f} s, CD-T label columns "
        f"{w_cdt_columns:.2f} s, patching {w_patch:.2f} s).",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| one forward pass | {t_forward:.3f} s | |",
        f"| CD-T, all heads, final-position logits | {t_cdt:.2f} s | |",
        f"| ... only the 3 label columns | {t_cdt_columns:.2f} s | |",
        f"| TL mean-ablation patching, all heads | {t_patch:.2f} s | |",
        f"| forward-equivalents (ideal {ideal:g}) | {t_cdt / t_forward:.1f} | |",
        f"| ratio to ideal | {result['ratio_to_ideal']:.2f} (label columns {result['ratio_to_ideal_label_columns']:.2f}) | <= 1.3 |",
        f"| CD-T / patching | {result['ratio_cdt_to_patching']:.2f} (label columns {result['ratio_cdt_label_columns_to_patching']:.2f}) | <= 0.6 |",
    ]
    if profile:
        table += ["", "Where the time goes (one label-column CD-T run, torch.profiler):", "", *profile]
    stem.with_suffix(".md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
