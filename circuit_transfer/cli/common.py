"""Arguments and loading steps shared by several subcommands."""

from __future__ import annotations

import argparse

from circuit_transfer.data import DATASETS
from circuit_transfer.tasks import Task, get_task


def add_task_args(parser: argparse.ArgumentParser) -> None:
    """--task, --template, --label-words, --data-dir, --max-len, --batch-size."""
    parser.add_argument("--task", choices=DATASETS, default="nusax-senti", help="data set / task")
    parser.add_argument("--template", help="prompt template with {text} (and {text_pair}); default per task")
    parser.add_argument(
        "--label-words", help="comma-separated label words in label order, e.g. ' bad, so-so, good'"
    )
    parser.add_argument(
        "--data-dir",
        help="folder with nusax-senti/ and xnli/ (default: $CT_DATA_DIR, ../shared/data, the hub)",
    )
    parser.add_argument("--max-len", type=int, default=128, help="maximum prompt length in tokens")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per forward pass")


def task_from_args(args: argparse.Namespace) -> Task:
    words = args.label_words.split(",") if args.label_words else None
    return get_task(args.task, template=args.template, label_words=words)


def task_for_checkpoint(args: argparse.Namespace, checkpoint: str) -> Task:
    """The task a checkpoint was trained with, unless the user overrides it on the command line.

    A checkpoint records its template and label words; reading them back keeps every step of a
    pipeline on the same prompt format. --template/--label-words, or a --task other than the
    recorded one, take precedence.
    """
    from circuit_transfer.proxy import task_of_checkpoint

    if args.template or args.label_words:
        return task_from_args(args)
    try:
        recorded = task_of_checkpoint(checkpoint)
    except (ValueError, OSError):
        return task_from_args(args)
    return recorded if recorded.name == args.task else task_from_args(args)
