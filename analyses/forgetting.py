"""Experiment 5: forgetting after transfer, read from experiment 1's runs.

For every method: proxy-language test accuracy before and after transfer, and accuracy on the
untouched retention languages (e.g. English: the target data cannot help there, unlike the
proxy language on a parallel corpus, docs/method.md §7). Also the paired per-seed difference in
forgetting between CT-SFT and each other method (negative = CT-SFT forgets less).

    python analyses/forgetting.py --quick                       # runs exp. 1 quick first if needed
    python analyses/forgetting.py   # reads analyses/results/nusax_transfer (and xnli_transfer when present)
    python analyses/forgetting.py --transfer analyses/results/nusax_transfer
    python analyses/forgetting.py --tables-only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Manifest, ci95, default_out, ensure_transfer_results, fmt_ci, paired, write_table  # noqa: E402
from sweep import METHOD_ORDER, load_records, retention_langs  # noqa: E402

from circuit_transfer.io import atomic_write_json, read_json  # noqa: E402

NAME = "forgetting"


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="use (and if missing produce) quick exp. 1 results")
    p.add_argument("--tables-only", action="store_true", help="rebuild table.md from forgetting.json")
    p.add_argument(
        "--transfer", type=Path, nargs="+", default=None, help="experiment 1 and/or 2 results folders"
    )
    p.add_argument("--proxy", type=Path, default=None, help="tiny proxy to reuse in quick mode")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def analyse(records: list[dict]) -> dict:
    langs = retention_langs(records)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["proxy_lang"], r["target"], r["data"]["n_train"], r["method"], r.get("k_fraction"))
        groups.setdefault(key, []).append(r)
    rows = []
    for (pl, tg, n, m, k), recs in sorted(
        groups.items(), key=lambda kv: (kv[0][:3], METHOD_ORDER.index(kv[0][3]), kv[0][4] or 0)
    ):
        row = {
            "proxy_lang": pl,
            "target": tg,
            "n_train": n,
            "method": m,
            "k_fraction": k,
            "seeds": sorted(r["seed"] for r in recs),
            "proxy_before": ci95(r["proxy_accuracy_before"] for r in recs),
            "proxy_after": ci95(r["proxy_accuracy_after"] for r in recs),
            "proxy_drop": ci95(r["forgetting"] for r in recs),
        }
        for lang in langs:
            row[f"{lang}_before"] = ci95(r["before"][lang]["accuracy"] for r in recs if lang in r["before"])
            row[f"{lang}_after"] = ci95(r["after"][lang]["accuracy"] for r in recs if lang in r["after"])
            row[f"{lang}_drop"] = ci95(
                r["before"][lang]["accuracy"] - r["after"][lang]["accuracy"]
                for r in recs
                if lang in r["after"]
            )
        rows.append(row)
    contrasts = []
    for other in ("full", "near-zero", "random", "ln-only"):
        for what, value in [("proxy", lambda r: r["forgetting"])] + [
            (
                lang,
                lambda r, lang=lang: (
                    r["before"][lang]["accuracy"] - r["after"][lang]["accuracy"]
                    if lang in r["after"]
                    else None
                ),
            )
            for lang in langs
        ]:
            for (pl, tg, n, k), diffs in paired(records, "ct-sft", other, value).items():
                contrasts.append(
                    {"proxy_lang": pl, "target": tg, "n_train": n, "k_fraction": k, "versus": other,
                     "language": what, "ct_sft_minus_other_drop": ci95(diffs)}
                )  # fmt: skip
    return {"retention_langs": langs, "rows": rows, "contrasts": contrasts, "n_runs": len(records)}


def render(out: Path, data: dict) -> str:
    """table.md: one before/after table and one contrast table per transfer experiment read."""
    sections, notes = [], []
    for source, part in data["sources"].items():
        (rows, cols), (contrast_rows, ccols) = _tables(part)
        name = Path(source).name
        sections += [
            (f"{name}: accuracy before/after", rows, cols),
            (f"{name}: CT-SFT versus the others", contrast_rows, ccols),
        ]
        notes.append(f"{name}: {part['n_runs']} runs read from {source}.")
    notes = [
        "drop = accuracy before minus after (positive = forgot); mean over seeds with a 95% t-interval.",
        "Proxy-language drop is confounded on parallel corpora (NusaX, and XNLI, which is translated: target "
        "training sentences are translations of proxy sentences; docs/method.md §7); untouched retention languages "
        "are the cleaner measure.",
        "Contrasts: per-seed paired CT-SFT drop minus the other method's drop; negative = CT-SFT forgets less. "
        "An interval containing 0 (or n=1) does not resolve the difference.",
        *notes,
    ]
    return write_table(out / "table.md", "Forgetting after transfer", sections, notes)


def _tables(data: dict) -> tuple[tuple[list, list], tuple[list, list]]:
    langs = data["retention_langs"]
    rows = []
    for r in data["rows"]:
        row = {
            "proxy": r["proxy_lang"],
            "target": r["target"],
            "n_train": r["n_train"],
            "method": r["method"] + (f" (k={r['k_fraction']:g})" if r["k_fraction"] is not None else ""),
            "proxy before %": fmt_ci(r["proxy_before"]),
            "proxy after %": fmt_ci(r["proxy_after"]),
            "proxy drop pts": fmt_ci(r["proxy_drop"]),
        }
        for lang in langs:
            row[f"{lang} after %"] = fmt_ci(r[f"{lang}_after"])
            row[f"{lang} drop pts"] = fmt_ci(r[f"{lang}_drop"])
        rows.append(row)
    contrast_rows = [
        {
            "proxy": c["proxy_lang"],
            "target": c["target"],
            "n_train": c["n_train"],
            "k": "-" if c["k_fraction"] is None else f"{c['k_fraction']:g}",
            "language": c["language"],
            "ct-sft drop minus": c["versus"],
            "difference pts": fmt_ci(c["ct_sft_minus_other_drop"]),
        }
        for c in data["contrasts"]
    ]
    cols = list(rows[0]) if rows else []
    ccols = list(contrast_rows[0]) if contrast_rows else []
    return (rows, cols), (contrast_rows, ccols)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    out = Path(args.out or default_out(NAME, args.quick))
    if args.tables_only:
        data = read_json(out / "forgetting.json")
        render(out, data)
        return data
    xnli = out.parent / "xnli_transfer"
    sources = args.transfer or [
        out.parent / "nusax_transfer",
        *([xnli] if (xnli / "records.json").exists() else []),
    ]
    manifest = Manifest(
        out, f"analyses/{NAME}.py", argv, {"transfer": [str(s) for s in sources], "quick": args.quick}
    )
    ensure_transfer_results(sources[0], args.quick, args.proxy)
    data = {"sources": {str(src): analyse(load_records(src)) for src in sources}}
    atomic_write_json(out / "forgetting.json", data)
    render(out, data)
    manifest.finish()
    return data


if __name__ == "__main__":
    main()
