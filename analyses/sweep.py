"""The transfer sweep shared by `nusax_transfer.py` and `xnli_transfer.py`.

One cell = (proxy language, target, method, k, n_train, seed) -> one `transfer()` run writing
`<work>/runs/<proxy>/<target>/<method>[-k<k>]/n<n_train>/seed<seed>/{result.json,delta.safetensors}`
(work defaults to the git-ignored runs/analyses/<name>). Cells whose result.json exists are skipped
(resume). All result records are collected into `<out>/records.json` (committable, no weights). Seeds are the outer loop, so an interrupted sweep has complete method
comparisons for the first seeds. Settings that do not change a method's outcome are not swept for
it: zero-shot is run once per target; `full` and `ln-only` ignore k.

The summary (`summary.json`) and tables (`table.md`) are rebuilt from records.json only, so
`--tables-only` reproduces them exactly.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from common import (
    Manifest,
    aggregate,
    ci95,
    common_parser,
    default_out,
    default_work,
    ensure_proxy,
    fmt_ci,
    head_scores,
    jsonable,
    k_heads,
    paired,
    paired_bootstrap,
    run_cached,
    write_table,
)

from circuit_transfer.evaluate import degenerate_readout, load_predictions
from circuit_transfer.io import atomic_write, atomic_write_json, atomic_write_text, read_json
from circuit_transfer.statistics import holm
from circuit_transfer.transfer import PREDICTIONS

K_METHODS = ("ct-sft", "near-zero", "random")
METHOD_ORDER = ("zero-shot", "full", "ct-sft", "near-zero", "random", "ln-only")


def build_parser(name: str, defaults: dict[str, Any], quick: dict[str, Any]):
    p = common_parser(f"{name}: cross-lingual transfer sweep (CT-SFT and controls).")
    p.add_argument(
        "--proxy-langs", nargs="+", default=None, help=f"proxy languages (full: {defaults['proxy_langs']})"
    )
    p.add_argument(
        "--targets", nargs="+", default=None, help=f"target languages (full: {defaults['targets']})"
    )
    p.add_argument("--methods", nargs="+", default=None, help=f"methods (full: {defaults['methods']})")
    p.add_argument("--k", type=float, nargs="+", default=None, help="head fractions (<1) or counts (>=1)")
    p.add_argument("--n-train", type=int, nargs="+", default=None)
    p.add_argument("--n-test", type=int, default=None, help="test sentences per language (stratified, fixed)")
    p.add_argument("--n-valid", type=int, default=None, help="valid sentences that select the epoch (fixed)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate, the same for every method")
    p.add_argument(
        "--lr-from",
        type=Path,
        default=None,
        help="selection.json of analyses/lr_selection.py: each method's own learning rate (else --lr)",
    )
    p.add_argument(
        "--lr-from-proxy",
        default=None,
        help="with --lr-from: use the rates chosen there for this proxy language, whatever this sweep's proxy "
        "(e.g. an XNLI sweep with the NusaX Indonesian selection: execution notes, fifth part)",
    )
    p.add_argument(
        "--exclude-epoch0",
        action="store_true",
        help="epoch 0 (the unchanged proxy) is not an epoch-selection candidate (the second round's rule)",
    )
    p.add_argument("--retention", nargs="*", default=None, help="untouched languages evaluated before/after")
    p.epilog = f"Full-mode defaults: {defaults}. Quick-mode defaults: {quick}."
    return p


def settings_from(args, defaults: dict[str, Any], quick: dict[str, Any]) -> dict[str, Any]:
    """Flags override the mode's defaults (quick or full)."""
    base = dict(defaults)
    if args.quick:
        base.update(quick)
    names = [
        "model", "proxy_langs", "targets", "methods", "k", "n_train", "n_test", "n_valid", "epochs", "lr", "retention",
        "seeds", "max_len", "batch_size", "discovery_per_class", "proxy_epochs",
    ]  # fmt: skip
    for n in names:
        value = getattr(args, n, None)
        if value is not None and not (n == "model" and args.quick and value == "smollm2-135m"):
            base[n] = value
    base["estimator"] = args.estimator
    base["stabilize"] = args.stabilize
    if getattr(args, "exclude_epoch0", False):
        base["start_is_candidate"] = False
    if getattr(args, "lr_from", None) is not None:
        base["lr_by_method"] = chosen_lrs(args.lr_from)
        source = getattr(args, "lr_from_proxy", None)
        if source is not None:
            if source not in base["lr_by_method"]:
                raise SystemExit(
                    f"--lr-from-proxy {source}: {args.lr_from} chose rates for proxy "
                    f"{sorted(base['lr_by_method'])} only; name one of those."
                )
            base["lr_by_method"] = {pl: base["lr_by_method"][source] for pl in base["proxy_langs"]}
            base["lr_from_proxy"] = source
    elif getattr(args, "lr_from_proxy", None) is not None:
        raise SystemExit("--lr-from-proxy needs --lr-from (the selection.json it reads the rates from).")
    return base


def chosen_lrs(path: Path) -> dict[str, dict[str, float]]:
    """{proxy_lang: {method: lr}} from a selection.json of analyses/lr_selection.py."""
    if not Path(path).exists():
        raise SystemExit(f"--lr-from {path}: no such file; run analyses/lr_selection.py first.")
    chosen = read_json(path).get("chosen")
    if not chosen:
        raise SystemExit(f"--lr-from {path}: holds no 'chosen' learning rates (not a selection.json?).")
    for pl, methods in chosen.items():
        for method, c in methods.items():
            if c.get("complete") is False:
                raise SystemExit(
                    f"--lr-from {path}: the selection for {method} (proxy {pl}) is incomplete (rates run on every "
                    f"target: {sorted(c['by_lr']) or 'none'}); finish the grid first (round2.sh MODEL lr)."
                )
    return {pl: {m: c["lr"] for m, c in methods.items()} for pl, methods in chosen.items()}


def lr_for(cell: dict, s: dict) -> float | None:
    """The learning rate of a cell: its own (a selection grid), the method's chosen one, or --lr."""
    if cell.get("lr") is not None:
        return cell["lr"]
    by_method = s.get("lr_by_method", {}).get(cell["proxy_lang"], {})
    if s.get("lr_by_method") and cell["method"] not in by_method and cell["method"] != "zero-shot":
        raise SystemExit(
            f"--lr-from names no learning rate for {cell['method']} with proxy {cell['proxy_lang']}: "
            "run the selection for that method too."
        )
    return by_method.get(cell["method"], s.get("lr"))


def cell_dir(root: Path, proxy_lang: str, target: str, method: str, k: float | None, n_train: int, seed: int):
    tag = method if method not in K_METHODS else f"{method}-k{k:g}"
    if method == "zero-shot":
        return root / "runs" / proxy_lang / target / "zero-shot"
    return root / "runs" / proxy_lang / target / tag / f"n{n_train}" / f"seed{seed}"


def plan(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Every cell of the sweep, seeds outermost, zero-shot first; duplicates removed."""
    cells, seen = [], set()
    for seed in s["seeds"]:
        for proxy_lang in s["proxy_langs"]:
            for target in s["targets"]:
                if target == proxy_lang:
                    continue
                for n_train in s["n_train"]:
                    for method in sorted(s["methods"], key=METHOD_ORDER.index):
                        for k in s["k"] if method in K_METHODS else [None]:
                            cell = dict(
                                proxy_lang=proxy_lang,
                                target=target,
                                method=method,
                                k=k,
                                n_train=0 if method == "zero-shot" else n_train,
                                seed=0 if method == "zero-shot" else seed,
                            )
                            key = tuple(cell.values())
                            if key not in seen:
                                seen.add(key)
                                cells.append(cell)
    return cells


def run_sweep(
    argv, *, name: str, task_name: str, defaults: dict, quick: dict, anchors: list[str], anchor=None
) -> dict:
    from circuit_transfer.models import checkpoint_fingerprint
    from circuit_transfer.tasks import get_task

    args = build_parser(name, defaults, quick).parse_args(argv)
    out = Path(args.out or default_out(name, args.quick))
    work = Path(args.work or default_work(name, args.quick))
    s = settings_from(args, defaults, quick)
    if args.tables_only:
        return write_outputs(out, name, anchors, anchor)
    for m in s["methods"]:
        if m not in METHOD_ORDER:
            raise SystemExit(f"unknown method {m!r}; choose from {', '.join(METHOD_ORDER)}")
    task = get_task(task_name)
    manifest = Manifest(out, f"analyses/{name}.py", argv, jsonable(s))
    proxies = ensure_proxies(args, s, task, work)
    fingerprints = {lang: checkpoint_fingerprint(path) for lang, path in proxies.items()}
    manifest.note(proxies={k: str(v) for k, v in proxies.items()}, proxy_fingerprints=fingerprints)
    for cell in plan(s):
        circuit = None
        if cell["method"] in K_METHODS:
            circuit = circuit_for(out, proxies[cell["proxy_lang"]], task, cell, s, args.data_dir)
        run_dir = cell_dir(
            work, **{k: cell[k] for k in ("proxy_lang", "target", "method", "k", "n_train", "seed")}
        )
        proxy, fingerprint = proxies[cell["proxy_lang"]], fingerprints[cell["proxy_lang"]]
        record, ran = run_cached(
            run_dir,
            lambda d, c=cell, ci=circuit, p=proxy, f=fingerprint: one_run(
                d, p, f, task, c, ci, s, args, before_cache(work, p, f, s)
            ),
        )
        check_settings(run_dir, record, cell, s)
        if record.get("proxy_fingerprint", fingerprint) != fingerprint:
            raise SystemExit(
                f"{run_dir} was run from another checkpoint than {proxy} (weights fingerprint "
                f"{record['proxy_fingerprint']}, now {fingerprint}): give this sweep its own --work and --out."
            )
        manifest.count(ran)
        print(f"[{name}] {'ran ' if ran else 'skip'} {run_dir.relative_to(work)}", flush=True)
        collect(work, out)
        write_outputs(out, name, anchors, anchor)
    manifest.finish()
    return write_outputs(out, name, anchors, anchor)


def ensure_proxies(args, s: dict, task, work: Path) -> dict[str, Path]:
    """The proxy checkpoint of every proxy language: `--proxy` for the first, else trained under `work`."""
    proxies = {}
    for i, lang in enumerate(s["proxy_langs"]):
        path = (
            args.proxy if (args.proxy is not None and i == 0) else work / "proxies" / f"{s['model']}-{lang}"
        )
        proxies[lang] = ensure_proxy(
            path, task, lang, s["model"], s.get("proxy_epochs"), data_dir=args.data_dir
        )
    return proxies


def check_settings(run_dir: Path, record: dict, cell: dict, s: dict) -> None:
    """A resumed run must have been trained with this sweep's learning rate and epoch-0 rule."""
    from circuit_transfer.transfer import TRANSFER_TRAIN

    if cell["method"] == "zero-shot":
        return
    config = record.get("train_config", {})
    want = {
        "lr": lr_for(cell, s) or TRANSFER_TRAIN.optim.lr,
        "start_is_candidate": s.get("start_is_candidate", True),
    }
    have = {
        "lr": config.get("optim", {}).get("lr"),
        "start_is_candidate": config.get("start_is_candidate", True),
    }
    if have != want:
        raise SystemExit(
            f"{run_dir} was trained with {have}, this sweep asks for {want}: give this sweep its own --work "
            "and --out (or delete that run folder)."
        )


def circuit_for(out: Path, proxy: Path, task, cell: dict, s: dict, data_dir):
    """The top-k circuit (with all head scores, for near-zero) of a proxy, discovered once and cached.

    The scores file lives in `<out>/circuits/` (small JSON, part of the results)."""
    from circuit_transfer.discovery import select_top_k

    scores = head_scores(
        proxy,
        task,
        cell["proxy_lang"],
        s["discovery_per_class"],
        out / "circuits" / f"scores-{cell['proxy_lang']}.json",
        estimator=s["estimator"],
        stabilize=s["stabilize"],
        max_len=s["max_len"],
        batch_size=s["batch_size"],
        data_dir=data_dir,
    )
    return select_top_k(scores, k_heads(cell["k"], scores.n_layers * scores.n_heads))


def one_run(
    run_dir: Path, proxy: Path, fingerprint: str, task, cell: dict, circuit, s: dict, args, known: Path
) -> dict:
    from circuit_transfer.train import TrainConfig
    from circuit_transfer.transfer import TRANSFER_TRAIN, TransferSpec, transfer

    lr = lr_for(cell, s)
    optim = replace(TRANSFER_TRAIN.optim, lr=lr) if lr else TRANSFER_TRAIN.optim
    config = TrainConfig(
        epochs=s["epochs"],
        batch_size=s["batch_size"],
        max_len=s["max_len"],
        seed=cell["seed"],
        start_is_candidate=s.get("start_is_candidate", True),
        optim=optim,
    )
    spec = TransferSpec(
        method=cell["method"],
        target=cell["target"],
        n_train=cell["n_train"],
        seed=cell["seed"],
        retention_langs=tuple(s["retention"]),
        n_test=s["n_test"],
        n_valid=s.get("n_valid"),
        config=config,
    )
    started = time.time()
    before = read_json(known) if known.exists() else {}
    record = transfer(proxy, spec, circuit, out=run_dir, task=task, data_dir=args.data_dir, before=before)
    items = load_predictions(run_dir / PREDICTIONS)
    measured = {
        lang: {**scores, "items": items[f"before/{lang}"].to_json()}
        for lang, scores in record["before"].items()
    }
    atomic_write_json(known, {**read_json(known), **measured} if known.exists() else measured)
    record["k_fraction"] = cell["k"]
    record["proxy_fingerprint"] = fingerprint
    record["sweep_wall_time_s"] = time.time() - started
    atomic_write_json(run_dir / "result.json", record)
    return record


def before_cache(work: Path, proxy: Path, fingerprint: str, s: dict) -> Path:
    """Where the unchanged proxy's test scores (and per-item predictions) are kept, by language, so
    each is measured once per sweep.

    Keyed by the proxy folder, its weights fingerprint and the settings that change them (test size,
    max_len); it lives in the work folder, beside the runs."""
    return work / "before" / f"{Path(proxy).name}-{fingerprint}-n{s['n_test']}-len{s['max_len']}.json"


def collect(work: Path, out: Path) -> list[dict]:
    """Every run's result.json under `work`, merged into `<out>/records.json` (kept records win ties).

    Records already in records.json whose run folder is gone (e.g. another machine's work folder)
    are kept, so results can be combined from several work folders."""
    merged = {r["_path"]: r for r in (load_records(out) if (out / "records.json").exists() else [])}
    for path in sorted((work / "runs").glob("**/result.json")):
        rec = read_json(path)
        rec["_path"] = str(path.parent.relative_to(work / "runs"))
        rec.pop("circuit", None)  # the heads are kept in "heads"; scores are in circuits/
        merged[rec["_path"]] = rec
        source, kept = path.parent / PREDICTIONS, predictions_path(out, rec)
        if source.exists() and (not kept.exists() or kept.stat().st_mtime_ns < source.stat().st_mtime_ns):
            atomic_write(kept, lambda tmp, source=source: shutil.copyfile(source, tmp))
    records = [merged[k] for k in sorted(merged)]
    atomic_write_json(out / "records.json", records)
    return records


def predictions_path(out: Path, record: dict) -> Path:
    """Where a run's per-item predictions are kept in the results folder (small, committable)."""
    return out / "predictions" / (record["_path"].replace("/", "__") + ".npz")


def load_records(out: Path) -> list[dict]:
    """The run records of a results folder (records.json)."""
    return read_json(out / "records.json")


def retention_langs(records: list[dict]) -> list[str]:
    langs = set()
    for r in records:
        langs |= set(r["after"]) - {r["target"], r["proxy_lang"]}
    return sorted(langs)


def metrics_for(records: list[dict]) -> dict:
    metrics = {
        "target_accuracy": lambda r: r["target_accuracy"],
        "target_macro_f1": lambda r: r["target_macro_f1"],
        "proxy_accuracy_after": lambda r: r["proxy_accuracy_after"],
        "forgetting": lambda r: r["forgetting"],
        "params_trainable_fraction": lambda r: r["params_trainable_fraction"],
        "params_changed": lambda r: r["params_changed"],
        "wall_time_s": lambda r: r["wall_time_s"],
        # epoch selection on target valid kept the unchanged proxy (epoch 0): the run changed nothing
        "kept_start": lambda r: None if r["method"] == "zero-shot" else float(r.get("best_epoch") == 0),
        # epoch 0 scored at least as well on target valid as the best trained epoch (whether or not it
        # was a candidate): how often training did not help on valid
        "start_would_win": lambda r: (
            None
            if r["method"] == "zero-shot" or not r.get("curve")
            else float(
                r["curve"][0]["valid_accuracy"] >= max(row["valid_accuracy"] for row in r["curve"][1:])
            )
        ),
    }
    for lang in retention_langs(records):
        metrics[f"{lang}_after"] = lambda r, lang=lang: r["after"].get(lang, {}).get("accuracy")
        metrics[f"{lang}_drop"] = lambda r, lang=lang: (
            r["before"][lang]["accuracy"] - r["after"][lang]["accuracy"] if lang in r["after"] else None
        )
    return metrics


def summarise(out: Path) -> dict:
    """summary.json content: per-cell means and 95% CIs over seeds, from the result.json files."""
    records = load_records(out)
    keys = ["proxy_lang", "target", "method", "k_fraction", "k", "n_train"]
    for r in records:
        r.setdefault("k_fraction", None)
        r["n_train"] = r["data"]["n_train"]
    rows = aggregate(records, keys, metrics_for(records))
    rows.sort(
        key=lambda r: (
            r["proxy_lang"],
            r["target"],
            r["n_train"],
            METHOD_ORDER.index(r["method"]),
            r["k"] or 0,
        )
    )
    proxies = {}
    for r in records:
        proxies.setdefault(r["proxy_lang"], {"proxy": r["proxy"], "before": r["before"][r["proxy_lang"]]})
    readouts = readout_checks(records)
    return {
        "rows": rows,
        "contrasts": contrasts(records),
        "preregistered": preregistered(out, records, readouts, requested_seeds(out)),
        "readouts": readouts,
        "proxies": proxies,
        "retention_langs": retention_langs(records),
        "n_runs": len(records),
    }


def contrasts(records: list[dict]) -> list[dict]:
    """CT-SFT's target accuracy minus each other method's, paired per seed (same training subset and
    schedule), with a 95% t-interval: the direct test of 'CT-SFT beats X' in each cell."""
    out = []
    for other in METHOD_ORDER:
        if other == "ct-sft":
            continue
        for (pl, tg, n, k), diffs in paired(records, "ct-sft", other, lambda r: r["target_accuracy"]).items():
            stat = ci95(diffs)
            resolved = stat["half"] is not None and abs(stat["mean"]) > stat["half"]
            out.append(
                {"proxy_lang": pl, "target": tg, "n_train": n, "k_fraction": k, "other": other,
                 "difference": stat, "resolved": resolved}
            )  # fmt: skip
    out.sort(
        key=lambda c: (
            c["proxy_lang"],
            c["target"],
            c["n_train"],
            c["k_fraction"],
            METHOD_ORDER.index(c["other"]),
        )
    )
    return out


PREREGISTERED_OTHERS = ("full", "near-zero", "random")


def readout_checks(records: list[dict]) -> dict[str, dict]:
    """Per proxy and language, whether the unchanged proxy's readout is usable for retention."""
    out: dict[str, dict] = {}
    for r in records:
        for lang, scores in r["before"].items():
            key = f"{r['proxy_lang']}/{lang}"
            if key not in out:
                reason = degenerate_readout(scores["predicted_counts"])
                out[key] = {"predicted_counts": scores["predicted_counts"], "degenerate": reason}
    return dict(sorted(out.items()))


def _correct(out: Path, record: dict, name: str):
    """Per-item 0/1 correctness and item ids of one prediction set of a run (None if not stored)."""
    path = predictions_path(out, record)
    if not path.exists():
        return None
    items = load_predictions(path).get(name)
    return None if items is None else (items.correct.numpy(), items.ids)


def requested_seeds(out: Path) -> list[int] | None:
    """Every seed a sweep invocation of this results folder asked for (its manifest), or None."""
    path = out / "manifest.json"
    if not path.exists():
        return None
    asked = {
        s
        for e in read_json(path).get("invocations", {}).values()
        for s in e.get("settings", {}).get("seeds", [])
    }
    return sorted(asked) or None


def preregistered(
    out: Path, records: list[dict], readouts: dict[str, dict], requested: list[int] | None = None
) -> dict:
    """The pre-registered family (analyses/README.md): in every cell (proxy, target, n_train, k),
    CT-SFT minus full, near-zero and random on target accuracy, and on forgetting in every usable
    retention language (the proxy language and the extra ones, unless the proxy's readout there is
    degenerate: those are listed as excluded). Each contrast is a paired bootstrap over test items
    (the same resample for every seed both methods ran); Holm's correction runs over the family.

    The family is `complete` when every tested contrast has runs of every seed in `requested` (the
    seeds the sweep asked for; default: every seed among the records); until then the contrasts
    are interim estimates and no claim is decided (`verdicts`)."""
    index = {
        (r["proxy_lang"], r["target"], r["method"], r.get("k_fraction"), r["data"]["n_train"], r["seed"]): r
        for r in records
    }
    cells = sorted({(pl, tg, n, k) for (pl, tg, m, k, n, _) in index if m == "ct-sft"}, key=str)
    family: list[dict] = []
    for pl, tg, n, k in cells:
        seeds = sorted(
            s for (p2, t2, m2, k2, n2, s) in index if (p2, t2, m2, k2, n2) == (pl, tg, "ct-sft", k, n)
        )
        langs = [tg] + [lang for lang in index[(pl, tg, "ct-sft", k, n, seeds[0])]["before"] if lang != tg]
        for other in PREREGISTERED_OTHERS:
            for lang in langs:
                entry = {
                    "cell": [pl, tg, n, k],
                    "versus": other,
                    "measure": "target accuracy" if lang == tg else "forgetting",
                    "language": lang,
                }
                degenerate = readouts.get(f"{pl}/{lang}", {}).get("degenerate")
                if lang != tg and degenerate:
                    entry["excluded"] = f"degenerate readout: {degenerate}"
                else:
                    entry.update(_item_contrast(out, index, (pl, tg, n, k), other, lang, seeds))
                family.append(entry)
    tested = [i for i, e in enumerate(family) if "excluded" not in e]
    adjusted = holm({str(i): family[i].get("bootstrap", {}).get("p") for i in tested})
    for i in tested:
        family[i]["p_holm"] = adjusted[str(i)]
    want = sorted(requested) if requested else sorted({r["seed"] for r in records})
    complete = all(sorted(family[i].get("seeds", [])) == want for i in tested)
    return {
        "family_size": len(tested),
        "seeds": want,
        "complete": complete,
        "contrasts": family,
        "verdicts": verdicts(family, complete=complete),
    }


CLAIMS = (
    ("CT-SFT beats full fine-tuning", "full", "target accuracy"),
    ("the circuit matters (editing): CT-SFT beats near-zero heads", "near-zero", "target accuracy"),
    ("the circuit matters (not just sparsity): CT-SFT beats random heads", "random", "target accuracy"),
    ("CT-SFT forgets less than full fine-tuning", "full", "forgetting"),
    ("CT-SFT forgets less than near-zero heads", "near-zero", "forgetting"),
    ("CT-SFT forgets less than random heads", "random", "forgetting"),
)
"""The pre-registered claims 1-6 (analyses/README.md): the other method and the measure of each."""


def verdicts(family: list[dict], alpha: float = 0.05, complete: bool = True) -> list[dict]:
    """Each claim's verdict by the pre-registered rule, from its Holm-adjusted contrasts.

    A unit is one tested contrast of the claim (a target, or a target's retention language). The
    claimed sign is CT-SFT higher on target accuracy (difference > 0) and a smaller drop on
    forgetting (drop minus drop < 0). "holds": every unit has p_holm < alpha with the claimed sign;
    "partly": some do; "not supported": none do (units significant the other way are counted too).
    "not tested": the claim has no tested unit (every retention language degenerate). While the
    family is not `complete` (runs missing), every claim is "not decided (family incomplete)": a
    partial family would decide on fewer units and a smaller Holm correction than pre-registered.
    A complete family whose records have no per-item predictions (the first round's) decides
    nothing either."""
    out = []
    for number, (claim, other, measure) in enumerate(CLAIMS, start=1):
        units = [
            c
            for c in family
            if c["versus"] == other and c["measure"] == measure and "p_holm" in c and c.get("bootstrap")
        ]
        sign = 1 if measure == "target accuracy" else -1
        supported = [c for c in units if c["p_holm"] < alpha and sign * c["bootstrap"]["difference"] > 0]
        against = [c for c in units if c["p_holm"] < alpha and sign * c["bootstrap"]["difference"] < 0]
        if not complete:
            verdict = "not decided (family incomplete)"
        elif not any(c.get("bootstrap") for c in family):
            verdict = "not decided (no per-item predictions stored)"
        elif not units:
            verdict = "not tested"
        elif len(supported) == len(units):
            verdict = "holds"
        elif supported:
            verdict = "partly"
        else:
            verdict = "not supported"
        out.append(
            {
                "claim": number,
                "text": claim,
                "versus": other,
                "measure": measure,
                "verdict": verdict,
                "units": len(units),
                "supported": [_unit(c) for c in supported],
                "significant_against": [_unit(c) for c in against],
            }
        )
    return out


def _unit(c: dict) -> str:
    return f"{c['cell'][1]}/{c['language']}"


def _item_contrast(out: Path, index: dict, cell: tuple, other: str, lang: str, seeds: list[int]) -> dict:
    """CT-SFT minus `other` on one language's per-item correctness after transfer, over shared seeds.

    On the target: accuracy(ct-sft) - accuracy(other). On a retention language: drop(ct-sft) -
    drop(other) = after(other) - after(ct-sft), the 'before' model and items being the same. With no
    seed of both, `missing` says why: the other method has not run, or the runs kept no predictions."""
    pl, tg, n, k = cell
    ct_rows, other_rows, used, unpaired = [], [], [], False
    for seed in seeds:
        rb = index.get((pl, tg, other, k, n, seed)) or index.get((pl, tg, other, None, n, seed))
        unpaired |= rb is None
        a = _correct(out, index[(pl, tg, "ct-sft", k, n, seed)], f"after/{lang}")
        b = None if rb is None else _correct(out, rb, f"after/{lang}")
        if a is None or b is None:
            continue
        if a[1] != b[1]:
            raise SystemExit(f"{pl}->{tg} seed {seed}: ct-sft and {other} were tested on other {lang} items")
        ct_rows.append(a[0])
        other_rows.append(b[0])
        used.append(seed)
    if not used:
        return {"missing": f"no {other} run yet" if unpaired else "no per-item predictions"}
    boot = paired_bootstrap(ct_rows, other_rows) if lang == tg else paired_bootstrap(other_rows, ct_rows)
    return {"bootstrap": boot, "seeds": used}


def write_outputs(out: Path, name: str, anchors: list[str], anchor=None) -> dict:
    summary = summarise(out)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "target_accuracy.svg", figure_svg(summary))
    render(out, name, summary, anchors, anchor)
    return summary


def render(out: Path, name: str, summary: dict, anchors: list[str], anchor=None) -> str:
    """table.md from summary.json; `anchor` = (column name, row -> str) puts a quoted reference figure beside each row."""
    ret = summary["retention_langs"]
    rows = []
    for r in summary["rows"]:
        row = {
            "proxy": r["proxy_lang"],
            "target": r["target"],
            "n_train": r["n_train"],
            "method": r["method"],
            "k": f"{r['k']} ({r['k_fraction']:g})" if r["method"] in K_METHODS else "-",
            "target acc %": fmt_ci(r["target_accuracy"]),
            "target F1 %": fmt_ci(r["target_macro_f1"]),
            **({anchor[0]: anchor[1](r)} if anchor else {}),
            "proxy acc after %": fmt_ci(r["proxy_accuracy_after"]),
            "forgetting (proxy) pts": fmt_ci(r["forgetting"]),
        }
        for lang in ret:
            row[f"{lang} drop pts"] = fmt_ci(r.get(f"{lang}_drop"))
        row["trainable %"] = fmt_ci(r["params_trainable_fraction"], digits=3).split(" ")[0]
        row["params changed"] = (
            "-" if r["params_changed"]["mean"] is None else f"{r['params_changed']['mean']:.0f}"
        )
        kept = r.get("kept_start", {})
        row["kept proxy (runs)"] = (
            "-" if not kept.get("n") else f"{round(kept['mean'] * kept['n'])}/{kept['n']}"
        )
        wins = r.get("start_would_win", {})
        row["epoch 0 >= best (runs)"] = (
            "-" if not wins.get("n") else f"{round(wins['mean'] * wins['n'])}/{wins['n']}"
        )
        row["s/run"] = f"{r['wall_time_s']['mean']:.0f}"
        rows.append(row)
    columns = list(rows[0]) if rows else []
    contrast_rows = [
        {
            "proxy": c["proxy_lang"],
            "target": c["target"],
            "n_train": c["n_train"],
            "k": f"{c['k_fraction']:g}",
            "ct-sft minus": c["other"],
            "target acc difference pts": fmt_ci(c["difference"]),
            "resolved": "yes" if c["resolved"] else "no",
        }
        for c in summary.get("contrasts", [])
    ]
    prereg_rows = [_prereg_row(c) for c in summary.get("preregistered", {}).get("contrasts", [])]
    degenerate = [
        f"{key} ({r['degenerate']})" for key, r in summary.get("readouts", {}).items() if r["degenerate"]
    ]
    proxy_rows = [
        {
            "proxy": lang,
            "checkpoint": _short(p["proxy"]),
            "proxy test acc (n)": f"{100 * p['before']['accuracy']:.1f} ({p['before']['n']})",
        }
        for lang, p in sorted(summary["proxies"].items())
    ]
    notes = [
        "Mean over seeds with a 95% Student-t interval; 'n=1, no CI' when only one seed ran.",
        "Forgetting = proxy-language test accuracy before minus after transfer (positive = forgot). On a "
        "parallel corpus (NusaX) the target training sentences are translations of proxy training "
        "sentences, so proxy-language forgetting is confounded; '<lang> drop' columns are untouched "
        "retention languages (docs/method.md §7).",
        *(
            f"With {n} test sentences the standard error of one accuracy is about ±{50 / n**0.5:.1f} points: "
            "differences smaller than that are not resolved by one run."
            for n in sorted({p["before"]["n"] for p in summary["proxies"].values()})
        ),
        "'kept proxy (runs)': runs in which selecting the epoch on target valid kept epoch 0, the unchanged "
        "proxy (training only made target valid worse), so the run equals zero-shot. 'epoch 0 >= best': runs "
        "in which the unchanged proxy scored at least as well on target valid as the best trained epoch, "
        "whether or not epoch 0 was a candidate (--exclude-epoch0 makes it none).",
        "Paired contrasts: per seed, CT-SFT's target accuracy minus the other method's on the same training "
        "subset (zero-shot: the one deterministic run); 'resolved' = the 95% interval excludes 0.",
        f"Runs: {summary['n_runs']} records in records.json.",
        *anchors,
    ]
    return write_table(
        out / "table.md",
        f"{name}: transfer results",
        [
            ("Proxy checkpoints", proxy_rows, ["proxy", "checkpoint", "proxy test acc (n)"]),
            ("Transfer", rows, columns),
            (
                "CT-SFT against each other method (paired per seed)",
                contrast_rows,
                list(contrast_rows[0]) if contrast_rows else [],
            ),
            (
                "Pre-registered contrasts (paired bootstrap over test items, Holm over the family)",
                prereg_rows,
                list(prereg_rows[0]) if prereg_rows else [],
            ),
        ],
        notes
        + [
            "Pre-registered family (analyses/README.md): CT-SFT minus full, near-zero and random, on target "
            "accuracy and on forgetting (drop minus drop: negative = CT-SFT forgets less), per cell. 95% "
            "percentile interval of a paired bootstrap over test items (10,000 resamples, seed 0, the same "
            "items for every seed); p two-sided; Holm-adjusted over the "
            f"{summary.get('preregistered', {}).get('family_size', 0)} tested contrasts.",
            "Verdicts by the pre-registered rule (Holm-adjusted p < 0.05 with the claimed sign in every tested "
            "unit: holds; in some: partly; in none: not supported): "
            + "; ".join(
                f"{v['claim']}. {v['text']}: {v['verdict']}"
                + (f" ({len(v['supported'])}/{v['units']} units)" if v["units"] else "")
                + (
                    f", significant the other way in {', '.join(v['significant_against'])}"
                    if v["significant_against"]
                    else ""
                )
                for v in summary.get("preregistered", {}).get("verdicts", [])
            )
            + ".",
            "Degenerate readouts of the unchanged proxy (never used as retention languages): "
            + (", ".join(degenerate) if degenerate else "none")
            + " (the proxy predicts one label for > 75% of the items, or a label for < 5%).",
        ],
    )


def _prereg_row(c: dict) -> dict:
    pl, tg, n, k = c["cell"]
    boot = c.get("bootstrap")
    if "excluded" in c:
        result = {"difference pts [95%]": "-", "p": "-", "p Holm": "-", "seeds": c["excluded"]}
    elif boot is None:
        result = {"difference pts [95%]": "-", "p": "-", "p Holm": "-", "seeds": c["missing"]}
    else:
        result = {
            "difference pts [95%]": f"{100 * boot['difference']:+.1f} [{100 * boot['lo']:+.1f}, {100 * boot['hi']:+.1f}]",
            "p": f"{boot['p']:.4f}",
            "p Holm": f"{c['p_holm']:.4f}",
            "seeds": ",".join(str(s) for s in c["seeds"]) + f" ({boot['n_items']} items)",
        }
    return {
        "proxy": pl,
        "target": tg,
        "n_train": n,
        "k": "-" if k is None else f"{k:g}",
        "ct-sft minus": c["versus"],
        "measure": c["measure"],
        "language": c["language"],
        **result,
    }


def figure_svg(summary: dict, metric: str = "target_accuracy", width: int = 640) -> str:
    """A bar chart (SVG text, no dependencies): `metric` per method for each proxy/target/n_train, with
    95% CI whiskers where more than one seed ran."""
    groups: dict[str, list[dict]] = {}
    for r in summary["rows"]:
        groups.setdefault(f"{r['proxy_lang']}->{r['target']}", []).append(r)
    colours = dict(zip(METHOD_ORDER, ("#999999", "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd")))
    bar, gap, top, height = 18, 24, 30, 200
    n_bars = sum(len(v) for v in groups.values())
    width = max(width, 60 + n_bars * bar + len(groups) * gap)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + height + 60}" font-family="sans-serif" font-size="10">',
        f'<text x="10" y="16" font-size="12">{metric} (%), mean and 95% CI over seeds</text>',
    ]
    for pct in (0, 25, 50, 75, 100):
        y = top + height - pct / 100 * height
        parts.append(f'<line x1="40" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="10" y="{y + 3:.1f}">{pct}</text>')
    x = 50
    for label, rows in groups.items():
        start = x
        for r in rows:
            stat = r[metric]
            if stat["mean"] is not None:
                h = stat["mean"] * height
                parts.append(
                    f'<rect x="{x}" y="{top + height - h:.1f}" width="{bar - 3}" height="{h:.1f}" '
                    f'fill="{colours.get(r["method"], "#333")}"><title>{r["method"]} k={r["k"]} n_train={r["n_train"]}: '
                    f"{100 * stat['mean']:.1f}</title></rect>"
                )
                if stat["half"] is not None:
                    lo, hi = (stat["mean"] - stat["half"]) * height, (stat["mean"] + stat["half"]) * height
                    cx = x + (bar - 3) / 2
                    parts.append(
                        f'<line x1="{cx}" x2="{cx}" y1="{top + height - hi:.1f}" y2="{top + height - lo:.1f}" stroke="black"/>'
                    )
            x += bar
        parts.append(f'<text x="{start}" y="{top + height + 14}">{label}</text>')
        x += gap
    for i, m in enumerate(METHOD_ORDER):
        parts.append(
            f'<rect x="{50 + i * 95}" y="{top + height + 30}" width="10" height="10" fill="{colours[m]}"/>'
        )
        parts.append(f'<text x="{64 + i * 95}" y="{top + height + 39}">{m}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _short(path: str) -> str:
    """A path relative to the repository root when it lies inside it (tables stay machine-independent)."""
    root = Path(__file__).resolve().parent.parent
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return path
