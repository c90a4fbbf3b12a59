"""The second round's report: each model's pre-registered choices and each family's verdicts.

Reads only the committed JSON under `analyses/results/round2/<model>/` and writes
`analyses/results/round2/report.md` and `report.json`, so the Findings in `analyses/README.md`
quote figures that a script regenerates:

- per model: the proxies' test accuracy, the retention languages (RET), the discovery size D, and
  each method's chosen learning rate with how often epoch 0 would have won the selection;
- per pre-registered family (`nusax_primary`, `nusax_wider`, `xnli`): each claim's verdict by the
  decision rule (`sweep.verdicts`), and every contrast with its item-bootstrap difference, 95%
  interval, p and Holm-adjusted p. A family not run yet is listed as such; verdicts are recomputed
  from the contrasts, so a summary written before the verdicts existed is read the same way.

    python analyses/round2_report.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_table  # noqa: E402
from round2_choices import discovery_per_class, retention_language  # noqa: E402
from sweep import verdicts  # noqa: E402

from circuit_transfer.io import atomic_write_json, read_json  # noqa: E402

ROUND2 = RESULTS / "round2"
FAMILIES = {
    "nusax_primary": "NusaX family",
    "nusax_wider": "NusaX wider grid",
    "xnli": "XNLI family (sw, ur)",
    "xnli_hi_ar": "XNLI family (hi, ar)",
}
"""Each results folder holding a pre-registered family, each with its own Holm correction."""
SELECTIONS = {"lr_nusax": "NusaX"}
"""Learning-rate selections (XNLI reuses NusaX's rates: execution notes, fifth part)."""


def _or_none(choose, *args):
    """A pre-registered choice, or None while the step that decides it has not run."""
    try:
        return choose(*args)
    except SystemExit:
        return None


def model_choices(results: Path) -> dict:
    """The proxies, RET, D and the chosen learning rates of one model's results folder."""
    proxies = {}
    for path in sorted(results.glob("proxy-*.json")):
        meta = read_json(path)
        proxies[meta["lang"]] = {"task": meta["task"]["name"], **meta["test"]}
    rates = {}
    for folder, task in SELECTIONS.items():
        path = results / folder / "selection.json"
        if path.exists():
            selection = read_json(path)
            for proxy, methods in selection["chosen"].items():
                for method, chosen in methods.items():
                    rates[f"{task}/{proxy}/{method}"] = {
                        "lr": chosen["lr"],
                        "complete": chosen.get("complete", True),
                        "mean_best_valid_accuracy": chosen["mean_best_valid_accuracy"],
                        "by_lr": chosen["by_lr"],
                    }
            rates[f"{task}/epoch0_would_win"] = selection["epoch0_would_win"]
    return {
        "proxies": proxies,
        "ret": {
            "nusax": _or_none(retention_language, results, "nusax"),
            "xnli": _or_none(retention_language, results, "xnli"),
        },
        "discovery_per_class": _or_none(discovery_per_class, results),
        "rates": rates,
    }


def family_report(results: Path, family: str) -> dict | None:
    """One family's verdicts and contrasts, or None when it has not been run."""
    path = results / family / "summary.json"
    if not path.exists():
        return None
    summary = read_json(path)
    contrasts = summary.get("preregistered", {}).get("contrasts", [])
    complete = summary.get("preregistered", {}).get("complete", True)
    return {
        "targets": sorted({r["target"] for r in summary["rows"]}),
        "runs": summary["n_runs"],
        "family_size": summary.get("preregistered", {}).get("family_size", 0),
        "complete": complete,
        "verdicts": verdicts(contrasts, complete=complete),
        "contrasts": contrasts,
    }


def build(root: Path) -> dict:
    models = {}
    for results in sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("proxy-*.json"))):
        models[results.name] = {
            "choices": model_choices(results),
            "families": {name: family_report(results, name) for name in FAMILIES},
        }
    return {"models": models}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def render(report: dict, path: Path) -> str:
    sections = []
    for model, m in report["models"].items():
        c = m["choices"]
        choice_rows = [
            {
                "choice": f"proxy {lang} ({p['task']}) test accuracy % (n)",
                "value": f"{_pct(p['accuracy'])} ({p['n']})",
            }
            for lang, p in c["proxies"].items()
        ]
        choice_rows += [
            {
                "choice": "discovery sentences per label D",
                "value": str(c["discovery_per_class"] or "not decided"),
            },
            {"choice": "retention language RET, NusaX", "value": c["ret"]["nusax"] or "not decided"},
            {"choice": "retention language RET, XNLI", "value": c["ret"]["xnli"] or "not decided"},
        ]
        for key, r in c["rates"].items():
            if key.endswith("epoch0_would_win"):
                choice_rows.append(
                    {
                        "choice": f"{key.split('/')[0]}: epoch 0 would have won",
                        "value": f"{r['runs']} of {r['of']} runs",
                    }
                )
            else:
                grid = ", ".join(f"{lr}: {_pct(v)}" for lr, v in r["by_lr"].items())
                lr = "-" if r["lr"] is None else f"{r['lr']:g}"
                status = "" if r["complete"] else ", grid incomplete"
                choice_rows.append(
                    {"choice": f"learning rate {key}", "value": f"{lr} (mean best valid %: {grid}{status})"}
                )
        sections.append((f"{model}: pre-registered choices", choice_rows, ["choice", "value"]))
        for family, title in FAMILIES.items():
            f = m["families"][family]
            if f is None:
                sections.append((f"{model}, {title} (`{family}`): not run yet", [], []))
                continue
            title = f"{title} (`{family}`), targets {', '.join(f['targets'])}"
            verdict_rows = [
                {
                    "claim": f"{v['claim']}. {v['text']}",
                    "verdict": v["verdict"],
                    "units supported": f"{len(v['supported'])}/{v['units']}",
                    "significant the other way": ", ".join(v["significant_against"]) or "-",
                }
                for v in f["verdicts"]
            ]
            contrast_rows = [
                {
                    "target": x["cell"][1],
                    "ct-sft minus": x["versus"],
                    "measure": x["measure"],
                    "language": x["language"],
                    "difference pts [95%]": (
                        f"{100 * x['bootstrap']['difference']:+.1f} "
                        f"[{100 * x['bootstrap']['lo']:+.1f}, {100 * x['bootstrap']['hi']:+.1f}]"
                    )
                    if x.get("bootstrap")
                    else "-",
                    "p": f"{x['bootstrap']['p']:.4f}" if x.get("bootstrap") else "-",
                    "p Holm": f"{x['p_holm']:.4f}" if x.get("p_holm") is not None else "-",
                    "note": x.get("excluded") or x.get("missing", ""),
                }
                for x in f["contrasts"]
            ]
            sections.append(
                (
                    f"{model}, {title}: verdicts ({f['runs']} runs, {f['family_size']} tested contrasts)",
                    verdict_rows,
                    list(verdict_rows[0]) if verdict_rows else [],
                )
            )
            sections.append(
                (
                    f"{model}, {title}: contrasts",
                    contrast_rows,
                    list(contrast_rows[0]) if contrast_rows else [],
                )
            )
    notes = [
        "Rule (analyses/README.md, pre-registration): a claim holds when its Holm-adjusted p < 0.05 with the "
        "claimed sign (CT-SFT higher accuracy; a smaller drop) in every tested unit of the family, partly when in "
        "some, otherwise it is not supported; 'not tested' when no unit can be tested; 'not decided' while "
        "any contrast of the family lacks runs of a pre-registered seed (the contrasts are then interim "
        "estimates, and their Holm adjustment is over the contrasts that have runs).",
        "Differences: paired bootstrap over test items (10,000 resamples, seed 0, the items resampled jointly over "
        "the seeds both methods ran). Forgetting: CT-SFT's drop minus the other method's (negative = CT-SFT forgets less).",
        "Each family's own table.md has the per-method accuracies with seed intervals; this file is rebuilt by "
        "`python analyses/round2_report.py` from the committed JSON only.",
    ]
    return write_table(path, "Second round: choices and verdicts", sections, notes)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=ROUND2, help="analyses/results/round2")
    args = p.parse_args(argv)
    report = build(args.root)
    atomic_write_json(args.root / "report.json", report)
    render(report, args.root / "report.md")
    print(f"[round2_report] wrote {args.root / 'report.md'}")


if __name__ == "__main__":
    main()
