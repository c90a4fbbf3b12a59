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

from circuit_transfer.choices import BACKENDS
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


def add_backend_arg(parser: argparse.ArgumentParser) -> None:
    """--backend: HookedTransformer or TransformerBridge (default: a checkpoint's own, else hooked on TL 3.x)."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="hooked (HookedTransformer, TransformerLens 3.x) or bridge (TransformerBridge around the HF model); "
        "default: a checkpoint's own backend, else hooked where TransformerLens has it",
    )


def add_task_args(parser: argparse.ArgumentParser) -> None:
    """--task, --template, --label-words, --data-dir, the own-data options, --max-len, --batch-size."""
    parser.add_argument(
        "--task",
        help=f"built-in task: {', '.join(DATASETS)} (default: the one a checkpoint was trained on, else "
        f"{DEFAULT_TASK}); with --data-file, the name of your task (default: the checkpoint's, else the file's name)",
    )
    parser.add_argument("--template", help="prompt template with {text} (and {text_pair}); default per task")
    parser.add_argument(
        "--label-words", help="comma-separated label words in label order, e.g. ' bad, so-so, good'"
    )
    parser.add_argument(
        "--data-dir",
        help="folder with nusax-senti/ and xnli/ (default: $CT_DATA_DIR, ../shared/data, the hub)",
    )
    own = parser.add_argument_group(
        "your own data",
        "a CSV/TSV/JSONL/JSON file of labelled rows instead of a built-in data set (needs --template and "
        "--label-words unless a checkpoint records them). Without a split column, a seeded split stratified "
        "by label takes 10%% valid and 20%% test per language.",
    )
    own.add_argument("--data-file", help="your labelled data: .csv, .tsv, .jsonl or .json")
    own.add_argument("--text-column", default="text", help="column with the text (default: text)")
    own.add_argument(
        "--text-pair-column", help="column with the second text of pair tasks, e.g. hypothesis ({text_pair})"
    )
    own.add_argument("--label-column", default="label", help="column with the label (default: label)")
    own.add_argument(
        "--labels", help="comma-separated label names in label-id order (default: the label words, stripped)"
    )
    own.add_argument("--lang-column", help="column with each row's language (default: all rows are 'und')")
    own.add_argument("--split-column", help="column with each row's split: train, valid (or dev), test")
    own.add_argument("--id-column", help="column with each row's id (default: the row number)")
    parser.add_argument("--max-len", type=positive_int, default=128, help="maximum prompt length in tokens")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="examples per forward pass")


def task_from_args(args: argparse.Namespace, recorded: Task | None = None) -> Task:
    """The task the arguments name: a built-in one, or your own from --data-file.

    `recorded` (a checkpoint's task) supplies the name, labels, template and label words the
    arguments do not give."""
    words = args.label_words.split(",") if args.label_words else None
    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    if recorded is not None:
        words = words or list(recorded.label_words)
        labels = labels or (None if args.label_words else list(recorded.labels))
    template = args.template or (recorded.template if recorded is not None else None)
    if not args.data_file:
        name = args.task or (recorded.name if recorded is not None else DEFAULT_TASK)
        return get_task(name, template=template, label_words=words, labels=labels)
    if template is None or words is None:
        raise ValueError(
            f"--data-file {args.data_file} needs --template (with {{text}}) and --label-words (one per class), "
            "e.g. --template '{text}\\nSentiment:' --label-words ' bad, good'."
        )
    name = args.task or (recorded.name if recorded is not None else Path(args.data_file).stem)
    return get_task(
        name,
        template=template,
        label_words=words,
        labels=labels,
        data=args.data_file,
        text_column=args.text_column,
        label_column=args.label_column,
        text_pair_column=args.text_pair_column,
        lang_column=args.lang_column,
        split_column=args.split_column,
        id_column=args.id_column,
        seed=0,
    )


def task_for_checkpoint(args: argparse.Namespace, checkpoint: str) -> Task:
    """The task a checkpoint was trained with; the command line may change its prompt, not its task.

    A checkpoint records its task, template and label words; reading them back keeps every step
    of a pipeline on the same prompt format. A `--task` other than the recorded one is refused
    (the checkpoint's label readout was trained for its own labels). `--template`, `--label-words`
    and `--labels` take precedence, with a warning naming what the checkpoint was trained with;
    `--data-file` gives the examples of your own task. A model that records no task (a pretrained
    model, an HF directory) uses the flags.
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
    task = task_from_args(args, recorded)
    for flag, mine, theirs in (
        ("--label-words", task.label_words, recorded.label_words),
        ("--template", task.template, recorded.template),
        ("--labels", task.labels, recorded.labels),
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


def default_lang(task: Task, lang: str | None, builtin_default: str = "ind") -> str:
    """`lang` checked against the task, or the default: `builtin_default` for a built-in task, the only
    language of your own data (a choice is needed when it has several)."""
    if lang is not None:
        return task.normalise_lang(lang)
    if task.data is None:
        return task.normalise_lang(builtin_default)
    langs = task.languages()
    if len(langs) > 1:
        raise ValueError(f"The data has the languages {', '.join(langs)}: choose one with --lang.")
    return langs[0]
