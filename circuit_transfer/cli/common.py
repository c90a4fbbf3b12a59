"""Arguments and checks shared by several subcommands.

Everything here is cheap to import (no torch, no TransformerLens): `circuit-transfer --help` and
the argument checks run before any model is loaded. The heavy modules are imported inside the
functions that need them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from circuit_transfer.data import DATASETS
from circuit_transfer.tasks import Task, get_task

DEFAULT_TASK = "nusax-senti"


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (so `--batch-size 0` is refused at parse time)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def default_threads() -> int:
    """`$OMP_NUM_THREADS` when set, else 1.

    One thread is the measured best for the tiny model and for any model on shared cores: two
    OpenMP threads stall whenever something else runs on the machine (the CLI with torch's default
    ran 6x slower than the single-threaded demo on 2 shared cores). On a dedicated machine with a
    pretrained model, pass `--threads` with the number of free cores.
    """
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else 1


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """--threads, on every subcommand."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=default_threads(),
        help="CPU threads for torch (default: $OMP_NUM_THREADS, else 1: the fastest on shared or small "
        "machines; raise it on a dedicated machine with a pretrained model)",
    )


def add_overwrite_arg(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace an existing {what} at --out (default: refuse, so no result is overwritten silently)",
    )


def add_task_args(parser: argparse.ArgumentParser) -> None:
    """--task, --template, --label-words, --data-dir, --max-len, --batch-size."""
    parser.add_argument(
        "--task",
        choices=DATASETS,
        help=f"data set / task (default: the one a checkpoint was trained on, else {DEFAULT_TASK})",
    )
    parser.add_argument("--template", help="prompt template with {text} (and {text_pair}); default per task")
    parser.add_argument(
        "--label-words", help="comma-separated label words in label order, e.g. ' bad, so-so, good'"
    )
    parser.add_argument(
        "--data-dir",
        help="folder with nusax-senti/ and xnli/ (default: $CT_DATA_DIR, ../shared/data, the hub)",
    )
    parser.add_argument("--max-len", type=positive_int, default=128, help="maximum prompt length in tokens")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="examples per forward pass")


def task_from_args(args: argparse.Namespace) -> Task:
    words = args.label_words.split(",") if args.label_words else None
    return get_task(args.task or DEFAULT_TASK, template=args.template, label_words=words)


def task_for_checkpoint(args: argparse.Namespace, checkpoint: str) -> Task:
    """The task a checkpoint was trained with; the command line may change its prompt, not its task.

    A checkpoint records its task, template and label words; reading them back keeps every step
    of a pipeline on the same prompt format. A `--task` other than the recorded one is refused
    (the checkpoint's label readout was trained for its own labels). `--template` and
    `--label-words` take precedence, with a warning naming what the checkpoint was trained with.
    A model that records no task (a pretrained model, an HF directory) uses the flags.
    """
    from circuit_transfer.models.checkpoint import is_checkpoint_dir
    from circuit_transfer.proxy import task_of_checkpoint

    if not is_checkpoint_dir(checkpoint):  # a model name or an HF directory: no recorded task
        return task_from_args(args)
    try:
        recorded = task_of_checkpoint(checkpoint)
    except ValueError:  # a checkpoint saved without a task
        return task_from_args(args)
    if args.task and args.task != recorded.name:
        raise ValueError(
            f"{checkpoint} was trained on {recorded.name}, not {args.task}: its readout knows "
            f"{recorded.name}'s labels ({', '.join(recorded.labels)}). Drop --task {args.task}, or use a "
            f"checkpoint trained on {args.task} (`circuit-transfer prepare-proxy --task {args.task}`)."
        )
    if not (args.template or args.label_words):
        return recorded
    task = get_task(
        recorded.name,
        template=args.template or recorded.template,
        label_words=args.label_words.split(",") if args.label_words else recorded.label_words,
    )
    for flag, mine, theirs in (
        ("--label-words", task.label_words, recorded.label_words),
        ("--template", task.template, recorded.template),
    ):
        if mine != theirs:
            print(
                f"circuit-transfer {args.command}: warning: {checkpoint} was trained with "
                f"{flag.removeprefix('--').replace('-', ' ')} {theirs!r}; {flag} replaces them with {mine!r}, "
                "so its readout sees a prompt it was not trained on.",
                file=sys.stderr,
            )
    return task


# ---------------------------------------------------------------------------------------------
# Output checks, run before any compute


def _writable_parent(path: Path) -> None:
    """Refuse a path whose nearest existing ancestor is not a writable directory."""
    parent = path.parent.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {parent} is a file, not a directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: {parent} is not writable; choose another --out.")


def check_out_file(path: str | None, overwrite: bool) -> None:
    """An output file: absent (or `overwrite`), and creatable."""
    if path is None:
        return
    out = Path(path)
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a directory; give a file name.")
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} exists: pass --overwrite to replace it, or choose another path.")
    _writable_parent(out)


def check_out_dir(path: str, overwrite: bool, what: str, owns) -> None:
    """An output folder: absent or empty, or (with `overwrite`) one that `owns(path)` recognises.

    A folder holding anything else is never replaced, with or without `--overwrite`.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder for the {what}.")
    if out.is_dir() and any(out.iterdir()):
        if not owns(out):
            raise FileExistsError(
                f"--out {out} exists and is not a {what} (it holds other files); it is never replaced: "
                "choose another --out."
            )
        if not overwrite:
            raise FileExistsError(
                f"--out {out} already holds a {what}: pass --overwrite to replace it, or choose another --out."
            )
    _writable_parent(out / "x")
