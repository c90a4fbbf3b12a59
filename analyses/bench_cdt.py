"""Speed of the CD-T engine: all heads to the final-position logits, against the ideal and against patching.

Measured side by side on the same data in one run:
  (a) forward-equivalents = time(decompose_heads, all heads) / time(one plain forward pass), against the
      ideal n_heads * (n_layers + 1) / 2 (each source costs one forward pass from its layer up);
  (b) time(decompose_heads) / time(TransformerLens per-head mean-ablation patching,
      `get_act_patch_attn_head_out_all_pos` with a cache whose hook_z is the mean).
Targets: (a) within 1.3x of ideal, (b) at most 0.6.

    python analyses/bench_cdt.py --model tiny
    python analyses/bench_cdt.py --model smollm2-135m --n-sentences 16
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
    columns = torch.tensor([model.tokenizer.encode(w)[0] for w in LABEL_WORDS])
    return model, enc["input_ids"], enc["attention_mask"], columns


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time over `repeats` runs (the least disturbed by other load on the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["tiny", "smollm2-135m"], default="tiny")
    parser.add_argument("--n-sentences", type=int, default=16)
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed runs of the two slow methods (min is kept)"
    )
    parser.add_argument("--stabilize", action="store_true", help="CD-T stability rule (needed on SmolLM2)")
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
    t_forward = best_time(forward, 5)
    t_cdt = best_time(cdt, args.repeats)
    t_cdt_columns = best_time(cdt_columns, args.repeats)
    t_patch = best_time(patching, 1)
    t_forward = min(t_forward, best_time(forward, 5))  # again after the long runs, same conditions

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
        "device": str(next(model.parameters()).device),
        "platform": platform.platform(),
        "t_forward_s": t_forward,
        "t_cdt_all_heads_s": t_cdt,
        "t_cdt_all_heads_label_columns_s": t_cdt_columns,
        "t_patching_s": t_patch,
        "forward_equivalents": t_cdt / t_forward,
        "ideal_forward_equivalents": ideal,
        "ratio_to_ideal": t_cdt / t_forward / ideal,
        "ratio_to_ideal_label_columns": t_cdt_columns / t_forward / ideal,
        "ratio_cdt_to_patching": t_cdt / t_patch,
        "ratio_cdt_label_columns_to_patching": t_cdt_columns / t_patch,
        "targets": {"ratio_to_ideal": 1.3, "ratio_cdt_to_patching": 0.6},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench_{args.model}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    table = [
        f"# CD-T speed: {args.model} ({result['n_sentences']} sentences x {result['n_pos']} positions, "
        f"{cfg.n_layers} layers x {cfg.n_heads} heads, {result['threads']} CPU threads)",
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
    stem.with_suffix(".md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
