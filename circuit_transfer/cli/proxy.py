"""`prepare-proxy` and `evaluate`: the proxy checkpoint and per-language scores."""

from __future__ import annotations

import argparse
import sys

from circuit_transfer.cli.common import (
    add_backend_arg,
    add_overwrite_arg,
    add_task_args,
    check_out_dir,
    check_out_file,
    default_lang,
    positive_int,
    task_for_checkpoint,
    task_from_args,
)
from circuit_transfer.io import atomic_write_json
from circuit_transfer.table import markdown_table


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare-proxy",
        help="train the proxy checkpoint on the proxy language",
        description="Fine-tune a model (or train the tiny model from scratch) on the proxy language with the "
        "label-word readout, keep the epoch with the best valid accuracy, save a checkpoint directory.",
    )
    add_task_args(p)
    p.add_argument(
        "--lang", help="proxy language code (default: ind; with --data-file, the data's only language)"
    )
    p.add_argument(
        "--model",
        default="tiny",
        help="tiny | smollm2-135m | gemma3-270m | a checkpoint or HF directory | a TL name",
    )
    add_backend_arg(p)
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    add_overwrite_arg(p, "checkpoint")
    p.add_argument(
        "--epochs", type=positive_int, help="training epochs (default: 8 for tiny, 3 for pretrained)"
    )
    p.add_argument("--lr", type=float, help="peak learning rate (default: 2e-3 tiny, 3e-5 pretrained)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--n-train", type=positive_int, help="train on a label-stratified subset of this size (default: all)"
    )
    p.add_argument(
        "--n-valid", type=positive_int, help="select the epoch on a subset of this size (default: all)"
    )
    p.add_argument(
        "--n-test",
        type=positive_int,
        help="report test scores on a fixed stratified subset of this size (default: all)",
    )
    p.set_defaults(run=run_prepare_proxy)

    e = subparsers.add_parser(
        "evaluate",
        help="accuracy and macro-F1 per language",
        description="Evaluate a checkpoint with the label-word readout on one split of many languages.",
    )
    add_task_args(e)
    e.add_argument("--model", required=True, help="checkpoint directory (or any load_model spec)")
    add_backend_arg(e)
    e.add_argument("--langs", default="all", help="comma-separated language codes, or 'all'")
    e.add_argument("--split", default="test", help="split to evaluate (default: test)")
    e.add_argument(
        "--n",
        type=positive_int,
        help="a fixed stratified subset of this size per language, seed 0 (default: all);"
        " the same rows as the sweeps' --n-test",
    )
    e.add_argument("--out", help="write the results as JSON here")
    add_overwrite_arg(e, "file")
    e.set_defaults(run=run_evaluate)


def run_prepare_proxy(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from circuit_transfer.models.checkpoint import is_checkpoint_dir
    from circuit_transfer.proxy import PRETRAINED_TRAIN, TINY_TRAIN, prepare_proxy, training_state_path

    check_out_dir(args.out, args.overwrite, "checkpoint", is_checkpoint_dir)
    task = task_from_args(args)
    lang = default_lang(task, args.lang)
    config = TINY_TRAIN if args.model == "tiny" else PRETRAINED_TRAIN
    config = replace(config, seed=args.seed, batch_size=args.batch_size, max_len=args.max_len)
    if args.epochs:
        config = replace(config, epochs=args.epochs)
    if args.lr:
        config = replace(config, optim=replace(config.optim, lr=args.lr))
    try:
        meta = prepare_proxy(
            task,
            lang,
            args.model,
            args.out,
            config,
            data_dir=args.data_dir,
            progress=True,
            n_train=args.n_train,
            n_valid=args.n_valid,
            n_test=args.n_test,
            backend=args.backend,
        )
    except KeyboardInterrupt:
        state = training_state_path(args.out)
        if state.is_file():
            print(f"prepare-proxy: run the same command again to resume from {state}", file=sys.stderr)
        raise
    print(markdown_table(meta["training"]["curve"]))
    test = meta["test"]
    print(
        f"proxy {args.model} on {task.name}/{lang}: best epoch {meta['training']['best_epoch']}, "
        f"test accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f} (n={test['n']}), "
        f"{meta['wall_time_s']:.0f}s -> {args.out}"
    )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from circuit_transfer.evaluate import evaluate
    from circuit_transfer.models import load_model
    from circuit_transfer.tasks import stratified_cap

    check_out_file(args.out, args.overwrite)
    task = task_for_checkpoint(args, args.model)
    langs = (
        task.languages() if args.langs == "all" else [task.normalise_lang(x) for x in args.langs.split(",")]
    )
    examples_by_lang = {
        lang: stratified_cap(task.examples(lang, args.split, args.data_dir), args.n, task.n_labels)
        for lang in langs
    }
    model = load_model(args.model, backend=args.backend)
    rows = []
    for lang, examples in examples_by_lang.items():
        result = evaluate(model, task, examples, args.batch_size, args.max_len, progress=lang)
        rows.append({"lang": lang, **result.to_dict()})
    print(markdown_table(rows, ["lang", "accuracy", "macro_f1", "n", "predicted_counts"]))
    if args.out:
        atomic_write_json(
            args.out, {"model": args.model, "task": task.name, "split": args.split, "results": rows}
        )
        print(f"wrote {args.out}")
    return 0
