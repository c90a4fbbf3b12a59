"""Experiment 3: the editing-preserving trade-off.

Per target language: transfer difficulty = zero-shot gap (proxy test accuracy minus the target's
zero-shot accuracy) against which variant wins (CT-SFT minus near-zero target accuracy, paired per
seed). The paper's claim: hard transfers (large gap) favour editing the circuit heads (CT-SFT wins,
difference > 0); easy ones favour updating near-zero-relevance heads (difference < 0), i.e. a
positive Spearman correlation between gap and difference. Reads experiments 1 and 2.

    python analyses/editing_vs_preserving.py --quick
    python analyses/editing_vs_preserving.py            # reads analyses/results/{nusax,xnli}_transfer
    python analyses/editing_vs_preserving.py --tables-only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Manifest,
    ci95,
    default_out,
    ensure_transfer_results,
    fmt_ci,
    paired,
    spearman_permutation_p,
    spearman_rho,
    write_table,
)
from sweep import load_records  # noqa: E402

from circuit_transfer.io import atomic_write_json, read_json  # noqa: E402

NAME = "editing_vs_preserving"


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="use (and if missing produce) quick exp. 1 results")
    p.add_argument("--tables-only", action="store_true", help="rebuild table.md from tradeoff.json")
    p.add_argument(
        "--nusax",
        type=Path,
        nargs="+",
        default=None,
        help="experiment 1 results folder(s), pooled (e.g. two families)",
    )
    p.add_argument("--xnli", type=Path, default=None, help="experiment 2 results folder (used when present)")
    p.add_argument("--proxy", type=Path, default=None, help="tiny proxy to reuse in quick mode")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def analyse(datasets: dict[str, list[dict]]) -> dict:
    points = []
    for dataset, records in datasets.items():
        zero = {(r["proxy_lang"], r["target"]): r for r in records if r["method"] == "zero-shot"}
        diffs = paired(records, "ct-sft", "near-zero", lambda r: r["target_accuracy"])
        for (pl, tg, n, k), d in sorted(diffs.items(), key=lambda kv: str(kv[0])):
            z = zero.get((pl, tg))
            if z is None:
                continue
            proxy_acc = z["before"][pl]["accuracy"]
            target_zero = z["before"][tg]["accuracy"]
            stat = ci95(d)
            points.append(
                {
                    "dataset": dataset,
                    "proxy_lang": pl,
                    "target": tg,
                    "n_train": n,
                    "k_fraction": k,
                    "proxy_accuracy": proxy_acc,
                    "target_zero_shot": target_zero,
                    "gap": proxy_acc - target_zero,
                    "ct_sft_minus_near_zero": stat,
                    "winner": _winner(stat),
                }
            )
    # One point per target in each group: within a data set, and across data sets at the same
    # (n_train, k), so a k sweep on one target does not count that target twice.
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["dataset"], p["n_train"], p["k_fraction"]), []).append(p)
        groups.setdefault(("all", p["n_train"], p["k_fraction"]), []).append(p)
    correlations = []
    for key, pts in groups.items():
        if key[0] == "all" and len({p["dataset"] for p in pts}) < 2:
            continue
        gaps, diffs = [p["gap"] for p in pts], [p["ct_sft_minus_near_zero"]["mean"] for p in pts]
        correlations.append(
            {
                "group": "/".join(map(str, key)),
                "points": len(pts),
                "spearman": spearman_rho(gaps, diffs),
                "p_value": spearman_permutation_p(gaps, diffs),
            }
        )
    return {"points": points, "correlations": correlations}


def _winner(stat: dict) -> str:
    if stat["mean"] is None:
        return "-"
    side = "ct-sft (editing)" if stat["mean"] > 0 else "near-zero (preserving)" if stat["mean"] < 0 else "tie"
    resolved = stat["half"] is not None and abs(stat["mean"]) > stat["half"]
    return side + ("" if resolved else ", not resolved")


def render(out: Path, data: dict) -> str:
    rows = [
        {
            "dataset": p["dataset"],
            "proxy": p["proxy_lang"],
            "target": p["target"],
            "n_train": p["n_train"],
            "k": f"{p['k_fraction']:g}",
            "proxy acc %": f"{100 * p['proxy_accuracy']:.1f}",
            "target zero-shot %": f"{100 * p['target_zero_shot']:.1f}",
            "gap pts": f"{100 * p['gap']:.1f}",
            "ct-sft minus near-zero pts": fmt_ci(p["ct_sft_minus_near_zero"]),
            "winner": p["winner"],
        }
        for p in sorted(data["points"], key=lambda p: (p["dataset"], p["n_train"], p["k_fraction"], p["gap"]))
    ]
    corr = [
        {
            "group (dataset/n_train/k)": c["group"],
            "points": c["points"],
            "spearman(gap, ct-sft minus near-zero)": "- (fewer than 3 points)"
            if c["spearman"] is None
            else f"{c['spearman']:.2f}",
            "permutation p (two-sided)": "-" if c["p_value"] is None else f"{c['p_value']:.2f}",
        }
        for c in data["correlations"]
    ]
    notes = [
        "gap = proxy-language test accuracy of the proxy checkpoint minus the target's zero-shot accuracy "
        "(same checkpoint, same test sentences); larger = harder transfer.",
        "The paper's trade-off predicts a positive correlation: CT-SFT (editing the circuit) wins on hard "
        "transfers, near-zero heads (preserving it) on easy ones.",
        "'not resolved': the 95% interval of the paired per-seed difference contains 0, or only one seed ran. "
        "With a handful of targets a Spearman coefficient is descriptive only (with 3 points only ±1 and ±0.5 are possible); "
        "the permutation p-value is exact over all orderings of the targets (3 points: p >= 0.33).",
        "Groups: one data set at one (n_train, k); 'all/<n_train>/<k>' pools the data sets at that setting.",
    ]
    return write_table(
        out / "table.md",
        "Editing-preserving trade-off",
        [
            ("Per target", rows, list(rows[0]) if rows else []),
            ("Correlation", corr, list(corr[0]) if corr else []),
        ],
        notes,
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    out = Path(args.out or default_out(NAME, args.quick))
    if args.tables_only:
        data = read_json(out / "tradeoff.json")
        render(out, data)
        return data
    nusax = args.nusax or [out.parent / "nusax_transfer"]
    xnli = args.xnli or out.parent / "xnli_transfer"
    manifest = Manifest(
        out,
        f"analyses/{NAME}.py",
        argv,
        {"nusax": [str(x) for x in nusax], "xnli": str(xnli), "quick": args.quick},
    )
    for folder in nusax:
        ensure_transfer_results(folder, args.quick, args.proxy)
    datasets = {"nusax-senti": [r for folder in nusax for r in load_records(folder)]}
    if (xnli / "records.json").exists():
        datasets["xnli"] = load_records(xnli)
    data = analyse(datasets)
    data["sources"] = {
        "nusax-senti": [str(x) for x in nusax],
        **({"xnli": str(xnli)} if "xnli" in datasets else {}),
    }
    atomic_write_json(out / "tradeoff.json", data)
    render(out, data)
    manifest.finish()
    return data


if __name__ == "__main__":
    main()
