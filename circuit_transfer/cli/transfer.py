"""`transfer`: one masked-transfer run from a proxy checkpoint to a target language."""

from __future__ import annotations

import argparse
from dataclasses import replace

from circuit_transfer.choices import METHODS
from circuit_transfer.cli.common import (
    add_overwrite_arg,
    add_task_args,
    check_out_dir,
    positive_int,
    task_for_checkpoint,
)
from circuit_transfer.table import markdown_table


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "transfer",
        help="fine-tune a proxy checkpoint on target-language data, circuit heads only (or a control)",
        description="Transfer a proxy checkpoint to a target language with CT-SFT or a control method; "
        "writes OUT/result.json and OUT/delta.safetensors (the adapter-only delta).",
    )
    add_task_args(p)
    p.add_argument("--proxy", required=True, help="proxy checkpoint directory (from prepare-proxy)")
    p.add_argument("--target", required=True, help="target language code, e.g. jav")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--circuit", help="circuit.json from `discover` (needed by ct-sft, near-zero, random)")
    p.add_argument("--n-train", type=positive_int, default=100, help="target training examples (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=positive_int, help="training epochs (default 5)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, help="decoupled weight decay (default 0.1)")
    p.add_argument("--retention", default="", help="extra comma-separated languages to measure forgetting on")
    p.add_argument(
        "--n-test", type=positive_int, help="cap test examples per language (default: whole split)"
    )
    p.add_argument(
        "--n-valid", type=positive_int, help="cap the valid examples that select the epoch (default: all)"
    )
    p.add_argument(
        "--b-o", choices=("frozen", "any-head"), default="frozen", help="policy for the shared b_O"
    )
    p.add_argument("--gqa-kv", choices=("any-query-head", "never"), default="any-query-head")
    p.add_argument("--norms", choices=("trainable", "frozen"), default="trainable")
    p.add_argument(
        "--qk-norm",
        choices=("with-norms", "frozen"),
        default="with-norms",
        help="QK-norm weights (Qwen3, Gemma 3, OLMo 2): follow --norms, or frozen",
    )
    p.add_argument("--out", required=True, help="run directory to write")
    add_overwrite_arg(p, "transfer run")
    p.set_defaults(run=run_transfer)


def run_transfer(args: argparse.Namespace) -> int:
    from circuit_transfer.discovery import Circuit
    from circuit_transfer.masking import MaskPolicy
    from circuit_transfer.transfer import TRANSFER_TRAIN, TransferSpec, is_run_dir, transfer

    check_out_dir(args.out, args.overwrite, "transfer run", is_run_dir)
    task = task_for_checkpoint(args, args.proxy)
    config = replace(TRANSFER_TRAIN, seed=args.seed, batch_size=args.batch_size, max_len=args.max_len)
    if args.epochs:
        config = replace(config, epochs=args.epochs)
    optim_changes = {k: v for k, v in (("lr", args.lr), ("weight_decay", args.weight_decay)) if v is not None}
    config = replace(config, optim=replace(config.optim, **optim_changes))
    spec = TransferSpec(
        method=args.method,
        target=task.normalise_lang(args.target),
        n_train=args.n_train,
        seed=args.seed,
        retention_langs=tuple(task.normalise_lang(x) for x in args.retention.split(",") if x),
        n_test=args.n_test,
        n_valid=args.n_valid,
        config=config,
        policy=MaskPolicy(b_O=args.b_o, gqa_kv=args.gqa_kv, norms=args.norms, qk_norm=args.qk_norm),
    )
    circuit = Circuit.load(args.circuit) if args.circuit else None
    if circuit is not None and not circuit.heads and args.method in ("ct-sft", "near-zero", "random"):
        raise ValueError(
            f"{args.circuit} is an empty circuit (0 heads): --method {args.method} would train only the norms "
            "(that is --method ln-only). Re-run `circuit-transfer discover` with --k, or a lower --threshold."
        )
    record = transfer(
        args.proxy, spec, circuit, out=args.out, task=task, data_dir=args.data_dir, progress=True
    )
    rows = [
        {
            "lang": lang,
            "before": record["before"][lang]["accuracy"],
            "after": record["after"][lang]["accuracy"],
        }
        for lang in record["after"]
    ]
    print(markdown_table(rows))
    print(
        f"{args.method}: target {spec.target} accuracy {record['target_accuracy']:.3f}, "
        f"forgetting {record['forgetting']:+.3f}, parameters changed {record['params_changed']:,} "
        f"({record['params_trainable_fraction']:.2%} trainable) -> {args.out}/result.json"
    )
    return 0
