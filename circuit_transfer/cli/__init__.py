"""The `circuit-transfer` command line: one module per subcommand group, each with `register`.

Parsing imports nothing heavy (no torch, no TransformerLens), so `--help` and argument errors
answer at once; each subcommand imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from circuit_transfer.cli.common import add_common_args

# Subcommand modules, in the order of the pipeline; each defines `register(subparsers)`.
SUBCOMMAND_MODULES = (
    "circuit_transfer.cli.proxy",  # prepare-proxy, evaluate
    "circuit_transfer.cli.discover",  # discover, compare
    "circuit_transfer.cli.transfer",  # transfer
    "circuit_transfer.cli.report",
)
INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circuit-transfer",
        description="Circuit-Targeted Supervised Fine-Tuning (CT-SFT) on TransformerLens models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for sub in subparsers.choices.values():
        add_common_args(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (a message for the user, not a traceback)."""
    from safetensors import SafetensorError

    from circuit_transfer.models import CheckpointError
    from circuit_transfer.models.backend import HookedTransformerUnavailable

    return (
        ValueError,
        OSError,
        NotImplementedError,
        CheckpointError,
        SafetensorError,
        HookedTransformerUnavailable,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: 0 on success, 2 on bad input, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    name = f"circuit-transfer {args.command}"
    try:
        import torch

        torch.set_num_threads(args.threads)
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(
            f"{name}: interrupted; nothing was half-written (results are written atomically).",
            file=sys.stderr,
        )
        return INTERRUPTED
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
