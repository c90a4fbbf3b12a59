"""Benchmark: does head relevance agree with ground truth, and are the found circuits faithful?

On a trained proxy checkpoint (default: the tiny model trained on NusaX Indonesian, trained here
with `prepare_proxy` if `--model` is not given and no cached one exists):

1. Ground truth per head: the measured single-head mean-ablation effect on the task margin,
   `m(full) - m(head s ablated to its label-balanced mean)` (activation patching).
2. Directional relevance of every head by CD-T and by attribution patching, on the same discovery
   set and baseline; Spearman (and Pearson) against the ground truth, side by side, with timings.
3. Faithfulness curve: CD-T top-k circuits against random circuits of the same size (median,
   mean and std over seeds).

Writes `results.json` and `results.md` under `--out` (default analyses/results/bench_discovery).

    CT_DATA_DIR=/work/shared/data .venv/bin/python analyses/bench_discovery.py
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from circuit_transfer.data import load_split
from circuit_transfer.discovery import (
    ablated_metric,
    batches_for,
    faithfulness_curve,
    head_relevance,
    make_baseline,
)
from circuit_transfer.discovery.compare import spearman
from circuit_transfer.io import atomic_write_json, atomic_write_text
from circuit_transfer.models import load_model
from circuit_transfer.proxy import prepare_proxy, task_of_checkpoint
from circuit_transfer.table import markdown_table
from circuit_transfer.tasks import balanced_sample, get_task

DEFAULT_PROXY = Path("runs/bench_discovery/proxy-tiny-ind")


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.pow(2).sum() * b.pow(2).sum()).sqrt())


def ablation_effects(model, batches, base, margin: str) -> tuple[torch.Tensor, float]:
    """m(full) - m(one head mean-ablated), for every head; and m(full)."""
    cfg = model.cfg
    keep = torch.ones(cfg.n_layers, cfg.n_heads, dtype=torch.bool)
    full = ablated_metric(model, batches, keep, base, margin).margin
    effects = torch.zeros(cfg.n_layers, cfg.n_heads)
    for ly in range(cfg.n_layers):
        for h in range(cfg.n_heads):
            k = keep.clone()
            k[ly, h] = False
            effects[ly, h] = full - ablated_metric(model, batches, k, base, margin).margin
    return effects, full


def train_proxy(lang: str, out: Path, spec: str | None, max_len: int) -> None:
    """The tiny proxy: `prepare_proxy` for the standard shape, the same recipe for another shape."""
    from dataclasses import replace

    from circuit_transfer.evaluate import evaluate
    from circuit_transfer.models import TinyModelSpec, build_tiny_model, save_checkpoint
    from circuit_transfer.proxy import TINY_TRAIN, load_train_valid
    from circuit_transfer.train import train_classifier

    task = get_task("nusax-senti")
    config = replace(TINY_TRAIN, max_len=max_len)
    if spec is None:
        meta = prepare_proxy(task, lang, "tiny", out, config)
        print(f"proxy test accuracy {meta['test']['accuracy']:.3f}")
        return
    n_layers, n_heads = (int(x) for x in spec.lower().split("x"))
    train, valid = load_train_valid(task.name, lang)
    shape = TinyModelSpec(n_layers=n_layers, n_heads=n_heads, d_head=128 // n_heads)
    model = build_tiny_model([ex.text for ex in train], shape, extra_words=task.template_words())
    model.cfg.model_name = f"tiny-{spec}"
    result = train_classifier(model, task, train, valid, config)
    test = evaluate(model, task, load_split(task.name, lang, "test"), max_len=max_len)
    meta = {
        "kind": "proxy",
        "base_model": f"tiny {spec}",
        "task": {"name": task.name, "template": task.template, "label_words": list(task.label_words)},
        "lang": lang,
        "training": result.to_dict(),
        "test": test.to_dict(),
    }
    save_checkpoint(model, out, metadata=meta)
    print(f"proxy {spec} test accuracy {test.accuracy:.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", help="proxy checkpoint directory (default: train/reuse the tiny NusaX-ind proxy)"
    )
    p.add_argument("--lang", default="ind")
    p.add_argument("--split", default="valid", help="discovery split (default valid)")
    p.add_argument("--n-per-class", type=int, default=24)
    p.add_argument("--n-random", type=int, default=10)
    p.add_argument("--margin", default="mean", choices=("mean", "max"))
    p.add_argument("--positions", default="pooled", choices=("pooled", "from-end"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument(
        "--max-len", type=int, default=64, help="prompt length limit (the proxy's training max_len)"
    )
    p.add_argument(
        "--spec",
        help="without --model: train a tiny proxy of this shape, LAYERSxHEADS (e.g. 4x8; default: the "
        "standard 2x4 tiny proxy via prepare_proxy)",
    )
    p.add_argument("--out", default="analyses/results/bench_discovery")
    args = p.parse_args(argv)

    out = Path(args.out)
    if args.model is None:
        proxy = (
            DEFAULT_PROXY
            if args.spec is None
            else DEFAULT_PROXY.with_name(f"proxy-tiny-{args.spec}-{args.lang}")
        )
        args.model = str(proxy)
        if not (proxy / "circuit_transfer.json").exists():
            print(f"training the tiny proxy on nusax-senti/{args.lang} -> {proxy}")
            train_proxy(args.lang, proxy, args.spec, args.max_len)
    model = load_model(args.model)
    task = task_of_checkpoint(args.model)
    cfg = model.cfg
    pool = load_split(task.name, args.lang, args.split)
    examples = balanced_sample(pool, args.n_per_class, seed=args.seed, n_labels=task.n_labels)
    base = make_baseline(
        model,
        "label-balanced",
        examples,
        task,
        positions=args.positions,
        batch_size=args.batch_size,
        max_len=args.max_len,
    )
    batches = batches_for(model, task, examples, args.batch_size, args.max_len)
    common = dict(margin=args.margin, batch_size=args.batch_size, max_len=args.max_len)

    timings = {}
    t = time.perf_counter()
    truth, m_full = ablation_effects(model, batches, base, args.margin)
    timings["single-head ablation (ground truth)"] = time.perf_counter() - t
    scores = {}
    variants = {
        "cdt": dict(estimator="cdt"),
        "cdt (frozen attention)": dict(estimator="cdt", attention="frozen"),
        "attribution": dict(estimator="attribution"),
    }
    for name, kwargs in variants.items():
        t = time.perf_counter()
        scores[name] = head_relevance(model, task, examples, base, **kwargs, **common)
        timings[f"relevance {name}"] = time.perf_counter() - t

    agreement = [
        {
            "estimator": est,
            "spearman vs ablation": spearman(s.scores, truth),
            "pearson vs ablation": pearson(s.scores, truth),
            "top-1 = ablation top-1": s.ranked()[0][0] == divmod(int(truth.flatten().argmax()), cfg.n_heads),
            "seconds": timings[f"relevance {est}"],
        }
        for est, s in scores.items()
    ]
    agreement.append(
        {
            "estimator": "cdt vs attribution",
            "spearman vs ablation": spearman(scores["cdt"].scores, scores["attribution"].scores),
            "pearson vs ablation": pearson(scores["cdt"].scores, scores["attribution"].scores),
        }
    )
    heads = [
        {
            "head": f"L{ly}H{h}",
            "ablation effect": float(truth[ly, h]),
            "cdt": scores["cdt"][(ly, h)],
            "cdt stderr": float(scores["cdt"].stderr[ly, h]),
            "cdt frozen": scores["cdt (frozen attention)"][(ly, h)],
            "attribution": scores["attribution"][(ly, h)],
        }
        for ly in range(cfg.n_layers)
        for h in range(cfg.n_heads)
    ]
    heads.sort(key=lambda r: -r["ablation effect"])

    t = time.perf_counter()
    curve = faithfulness_curve(
        model, task, scores["cdt"], examples, base, n_random=args.n_random, seed=args.seed, **common
    )
    timings["faithfulness curve"] = time.perf_counter() - t

    result = {
        "model": args.model,
        "model_shape": f"{cfg.n_layers}x{cfg.n_heads}",
        "task": task.name,
        "lang": args.lang,
        "split": args.split,
        "n_examples": len(examples),
        "baseline": base.name,
        "margin": args.margin,
        "full_margin": m_full,
        "agreement": agreement,
        "heads": heads,
        "scores": {est: s.to_dict() for est, s in scores.items()},
        "faithfulness_curve": curve.to_dict(),
        "timings_s": timings,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    atomic_write_json(out / "results.json", result)
    md = [
        "# Discovery benchmark: relevance vs ground truth, faithfulness vs random\n",
        f"Model `{args.model}` ({cfg.n_layers} layers x {cfg.n_heads} heads), {task.name}/{args.lang} "
        f"{args.split}, {len(examples)} examples ({args.n_per_class} per class), baseline {base.name}, "
        f"margin {args.margin}. Full-model mean margin {m_full:.3f}.\n",
        "## Directional relevance against single-head mean ablation (ground truth)\n",
        markdown_table(agreement),
        "\n## Per head (sorted by ablation effect)\n",
        markdown_table(heads),
        f"\n## Faithfulness: CD-T top-k vs {args.n_random} random circuits of the same size\n",
        markdown_table(curve.rows()),
        f"\nFull model: margin {curve.full.margin:.3f}, accuracy {curve.full.accuracy:.3f}; all heads "
        f"ablated: margin {curve.empty.margin:.3f}, accuracy {curve.empty.accuracy:.3f}.\n",
        "\n## Timings (s)\n",
        markdown_table([{"step": k, "seconds": v} for k, v in timings.items()]),
        f"\nMachine: {result['machine']}.\n",
    ]
    atomic_write_text(out / "results.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
