"""The `circuit-transfer` command line: one module per subcommand group, each with `register`."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order of the pipeline; each defines `register(subparsers)`.
SUBCOMMAND_MODULES = (
    "circuit_transfer.cli.proxy",  # prepare-proxy, evaluate
    "circuit_transfer.cli.discover",  # discover, compare
    "circuit_transfer.cli.transfer",  # transfer
    "circuit_transfer.cli.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circuit-transfer",
        description="Circuit-Targeted Supervised Fine-Tuning (CT-SFT) on TransformerLens models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, NotImplementedError) as err:
        print(f"circuit-transfer {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
