"""`report`: one self-contained HTML page of a run directory (results, circuits, circuits on text)."""

from __future__ import annotations

import argparse

from circuit_transfer.cli.common import add_overwrite_arg, check_out_file, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report of a run directory",
        description="Gather a run directory's transfer results, circuits (relevance grids, cross-language "
        "comparison) and circuitsvis renderings of the circuit on a parallel test sentence per language into "
        "one HTML file that works offline. RUN_DIR holds proxy/, circuits/<lang>.json and "
        "transfer/<method>/result.json (as `make demo` writes).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (e.g. runs/demo)")
    p.add_argument("--out", required=True, help="HTML file to write")
    add_overwrite_arg(p, "file")
    p.add_argument("--screenshot", help="also save a headless-Chromium PNG screenshot of the report here")
    p.add_argument("--example", type=int, default=0, help="index of the test sentence to render (default 0)")
    p.add_argument("--max-len", type=positive_int, default=128, help="maximum prompt length in tokens")
    p.add_argument(
        "--data-dir",
        help="folder with nusax-senti/ and xnli/ (default: $CT_DATA_DIR, ../shared/data, the hub)",
    )
    p.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    from circuit_transfer.views import write_report

    check_out_file(args.out, args.overwrite)
    check_out_file(args.screenshot, args.overwrite)
    path = write_report(
        args.run_dir,
        args.out,
        screenshot_path=args.screenshot,
        data_dir=args.data_dir,
        example_index=args.example,
        max_len=args.max_len,
    )
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.2f} MB, self-contained)")
    if args.screenshot:
        print(f"wrote {args.screenshot}")
    return 0
