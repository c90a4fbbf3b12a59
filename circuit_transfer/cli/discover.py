"""`discover` and `compare`: find a circuit in a checkpoint, compare two circuits.

Discovery set: a label-balanced, seeded sample (`--n-examples` per class) of the proxy language's
*held-out* split, `valid` for NusaX-Senti (24 per class at most: the neutral class has 24) and
`dev` for XNLI (which has no other non-test split). Held-out text shows the mechanism the model
uses on sentences it did not fit; the test split is never touched. `--split train` gives more
examples per class when wanted.
"""

from __future__ import annotations

import argparse

from circuit_transfer.choices import BASELINE_KINDS, ESTIMATORS, SCORES, SELECTIONS
from circuit_transfer.cli.common import (
    add_backend_arg,
    add_overwrite_arg,
    add_task_args,
    check_out_file,
    default_lang,
    positive_int,
    task_for_checkpoint,
)
from circuit_transfer.table import markdown_table

DISCOVERY_SPLIT = {"nusax-senti": "valid", "xnli": "dev"}


def _k(text: str) -> int | float:
    """A head count ("12") or a fraction of all heads ("0.1")."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "discover",
        help="find the task circuit (attention heads) of a checkpoint",
        description="Score every attention head by its task-directional relevance (CD-T with a label-balanced "
        "mean baseline, or attribution patching) on a label-balanced discovery set, select a circuit, "
        "print the top heads and its faithfulness, and save it as JSON.",
    )
    add_task_args(p)
    p.add_argument("--model", required=True, help="checkpoint directory (or any load_model spec)")
    add_backend_arg(p)
    p.add_argument(
        "--lang",
        help="language of the discovery set (default: ind; with --data-file, the data's only language)",
    )
    p.add_argument("--k", type=_k, help="heads to select: a count (12) or a fraction of all heads (0.1)")
    p.add_argument("--selection", choices=SELECTIONS, default="top-k")
    p.add_argument("--threshold", type=float, help="score threshold for --selection threshold")
    p.add_argument(
        "--rounds", type=positive_int, default=2, help="rounds of --selection iterative (default 2)"
    )
    p.add_argument(
        "--n-examples", type=positive_int, default=24, help="discovery examples per class (default 24)"
    )
    p.add_argument(
        "--split", help="split to sample the discovery set from (default: valid; XNLI: dev; own data: valid)"
    )
    p.add_argument("--estimator", choices=ESTIMATORS, default="cdt")
    p.add_argument(
        "--stabilize",
        action="store_true",
        help="CD-T sign-stability rule; use it on deep gated models (e.g. smollm2-135m) whose early heads overflow",
    )
    p.add_argument("--score", choices=SCORES, default="directional")
    p.add_argument("--margin", choices=("mean", "max"), default="mean")
    p.add_argument("--baseline", choices=BASELINE_KINDS, default="label-balanced")
    p.add_argument("--positions", choices=("pooled", "from-end"), default="pooled")
    p.add_argument("--per-layer-norm", action="store_true", help="divide scores by the layer's mean |score|")
    p.add_argument("--seed", type=int, default=0, help="seeds the discovery sample and random circuits")
    p.add_argument("--top", type=positive_int, default=10, help="heads to print (default 10)")
    p.add_argument("--no-faithfulness", action="store_true", help="skip the faithfulness evaluation")
    p.add_argument("--out", help="write the circuit (with its scores) as JSON here")
    add_overwrite_arg(p, "file")
    p.set_defaults(run=run_discover)

    c = subparsers.add_parser(
        "compare",
        help="compare two circuits (Jaccard, overlap at k, Spearman of scores)",
        description="Compare two circuit JSON files of the same model, e.g. found on two languages.",
    )
    c.add_argument("a", help="circuit JSON")
    c.add_argument("b", help="circuit JSON")
    c.add_argument("--k", type=positive_int, help="k for the overlap (default: the smaller circuit's size)")
    c.add_argument("--out", help="write the comparison as JSON here")
    add_overwrite_arg(c, "file")
    c.set_defaults(run=run_compare)


def run_discover(args: argparse.Namespace) -> int:
    from circuit_transfer.discovery import discover, faithfulness
    from circuit_transfer.models import load_model
    from circuit_transfer.tasks import balanced_sample

    check_out_file(args.out, args.overwrite)
    task = task_for_checkpoint(args, args.model)
    lang = default_lang(task, args.lang)
    split = args.split or (DISCOVERY_SPLIT[task.name] if task.data is None else "valid")
    pool = task.examples(lang, split, args.data_dir)
    examples = balanced_sample(pool, args.n_examples, seed=args.seed, n_labels=task.n_labels)
    model = load_model(args.model, backend=args.backend)
    common = dict(
        baseline=args.baseline, positions=args.positions, batch_size=args.batch_size, max_len=args.max_len
    )
    circuit = discover(
        model,
        task,
        examples,
        k=args.k,
        selection=args.selection,
        score=args.score,
        estimator=args.estimator,
        margin=args.margin,
        threshold=args.threshold,
        seed=args.seed,
        rounds=args.rounds,
        per_layer_norm=args.per_layer_norm,
        stabilize=args.stabilize,
        progress=True,
        **common,
    )
    circuit = _with_params(
        circuit, {"split": split, "n_per_class": args.n_examples, "sample_seed": args.seed}
    )
    print(
        f"discovery set: {len(examples)} examples of {task.name}/{lang} {split} ({args.n_examples} per class)"
    )
    if circuit.scores is not None:
        stderr = circuit.scores.stderr
        rows = [
            {
                "rank": i + 1,
                "head": f"L{ly}H{h}",
                "score": s,
                "stderr": None if stderr is None else float(stderr[ly, h]),
                "in circuit": "yes" if (ly, h) in circuit else "",
            }
            for i, ((ly, h), s) in enumerate(circuit.scores.ranked()[: args.top])
        ]
        print(markdown_table(rows))
    print(repr(circuit))
    cut = circuit.boundary
    if cut is not None and cut.unstable:
        print(f"unstable selection: {cut.describe()}")
    if not args.no_faithfulness:
        f = faithfulness(model, task, circuit, examples, margin=args.margin, **common)
        print(
            f"faithfulness {f.faithfulness:.3f} (mean margin: circuit {f.circuit.margin:.3f}, full "
            f"{f.full.margin:.3f}, all heads ablated {f.empty.margin:.3f}; accuracy: circuit "
            f"{f.circuit.accuracy:.3f}, full {f.full.accuracy:.3f}, empty {f.empty.accuracy:.3f}; "
            f"on the discovery set)"
        )
        circuit = _with_params(circuit, {"faithfulness": f.to_dict()})
    if args.out:
        circuit.save(args.out)
        print(f"wrote {args.out}")
    return 0


def _with_params(circuit, extra: dict):
    from dataclasses import replace

    return replace(circuit, params={**circuit.params, **extra})


def run_compare(args: argparse.Namespace) -> int:
    from circuit_transfer.discovery import Circuit, compare
    from circuit_transfer.io import atomic_write_json

    check_out_file(args.out, args.overwrite)
    a, b = Circuit.load(args.a), Circuit.load(args.b)
    result = compare(a, b, k=args.k)
    rho = "-" if result.spearman is None else f"{result.spearman:.3f}"
    print(f"A: {a!r}\nB: {b!r}")
    print(
        f"Jaccard {result.jaccard:.3f}, overlap at k={result.k} {result.overlap_at_k:.3f}, "
        f"Spearman of scores {rho}"
    )
    if a.scores is not None and b.scores is not None:
        ra, rb = a.scores.ranked(), b.scores.ranked()
        rows = [
            {
                "rank": i + 1,
                "A head": f"L{ha[0]}H{ha[1]}",
                "A score": sa,
                "B head": f"L{hb[0]}H{hb[1]}",
                "B score": sb,
            }
            for i, ((ha, sa), (hb, sb)) in enumerate(zip(ra, rb))
        ][: max(result.k, 10)]
        print(markdown_table(rows))
    else:
        print(
            markdown_table(
                [
                    {
                        "shared": ", ".join(result.shared),
                        "only A": ", ".join(result.only_a),
                        "only B": ", ".join(result.only_b),
                    }
                ]
            )
        )
    if args.out:
        atomic_write_json(args.out, result.to_dict())
        print(f"wrote {args.out}")
    return 0
