"""Experiment 4: circuits of one proxy checkpoint discovered in different NusaX languages.

NusaX is parallel, so the discovery sets are the *same sentence ids* (drawn label-balanced from the
proxy language's valid split) in every language. Head relevance is scored once per language;
head sets (top-k) are compared with Jaccard and overlap@k, score vectors with Spearman
(docs/method.md §6). When experiment 1's results are present, each target's similarity to the proxy
language's circuit is joined with its transfer outcome (CT-SFT gain over zero-shot), to ask
whether circuit similarity predicts transfer success.

    python analyses/circuits_across_languages.py --quick
    OMP_NUM_THREADS=1 python analyses/circuits_across_languages.py --proxy runs/analyses/proxy-smollm2-ind \\
        --langs ind jav sun bug eng min --discovery-per-class 10 --estimator attribution
    python analyses/circuits_across_languages.py --tables-only
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Manifest,
    ci95,
    common_parser,
    default_out,
    discovery_sample,
    ensure_proxy,
    head_scores,
    jsonable,
    k_heads,
    spearman_permutation_p,
    spearman_rho,
    write_table,
)
from sweep import load_records  # noqa: E402

from circuit_transfer.io import atomic_write_json, read_json  # noqa: E402

NAME = "circuits_across_languages"
FULL = dict(model="smollm2-135m", proxy_lang="ind", langs=["ind", "jav", "sun", "bug", "eng", "min"], k=0.05,
            discovery_per_class=10, max_len=64, batch_size=8, resamples=[1, 2])  # fmt: skip
QUICK = dict(
    model="tiny", proxy_lang="ind", langs=["ind", "jav", "eng"], k=0.25, discovery_per_class=4, resamples=[1]
)


def parse(argv):
    p = common_parser(__doc__.splitlines()[0])
    p.add_argument(
        "--proxy-lang", default=None, help="language the proxy was trained on (and sentence ids come from)"
    )
    p.add_argument("--langs", nargs="+", default=None, help=f"discovery languages (full: {FULL['langs']})")
    p.add_argument("--k", type=float, default=None, help="head fraction (<1) or count for the head sets")
    p.add_argument("--transfer", type=Path, default=None, help="experiment 1 results folder to join")
    p.add_argument(
        "--resamples",
        type=int,
        nargs="*",
        default=None,
        help="seeds of other discovery samples in the proxy language, disjoint from the main one: the "
        f"within-language baseline for the similarities (full: {FULL['resamples']}; none: no baseline)",
    )
    args = p.parse_args(argv)
    s = dict(FULL)
    if args.quick:
        s.update(QUICK)
    for name in ("proxy_lang", "langs", "k", "discovery_per_class", "max_len", "batch_size", "resamples"):
        if getattr(args, name) is not None:
            s[name] = getattr(args, name)
    if not args.quick or args.model != "smollm2-135m":
        s["model"] = args.model if not args.quick else s["model"]
    s["estimator"] = args.estimator
    s["stabilize"] = args.stabilize
    s["seed"] = (args.seeds or [0])[0]
    return args, s


def discover_all(out: Path, proxy: Path, s: dict, data_dir=None) -> dict:
    """Head scores per language on the same sentence ids; cached per language."""
    from circuit_transfer.data import load_split
    from circuit_transfer.models import load_model
    from circuit_transfer.proxy import task_of_checkpoint

    task = task_of_checkpoint(proxy)
    sample = discovery_sample(task, s["proxy_lang"], s["discovery_per_class"], s["seed"], data_dir)
    ids = [ex.id for ex in sample]
    splits = ("valid", "train")  # where discovery_sample draws from (NusaX ids differ across splits)
    model = None
    scores = {}
    for lang in s["langs"]:
        path = out / "scores" / f"{lang}.json"
        if model is None and not path.exists():
            model = load_model(str(proxy))
        rows = {ex.id: ex for split in splits for ex in load_split(task.name, lang, split, data_dir)}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise ValueError(
                f"{lang} valid+train lacks sentence ids {missing[:5]}: NusaX should be parallel."
            )
        scores[lang] = head_scores(
            proxy, task, lang, s["discovery_per_class"], path, estimator=s["estimator"], stabilize=s["stabilize"], max_len=s["max_len"],
            batch_size=s["batch_size"], data_dir=data_dir, model=model, examples=[rows[i] for i in ids],
        )  # fmt: skip
    return scores


def discover_resamples(out: Path, proxy: Path, s: dict, main_ids: list, data_dir=None) -> dict:
    """Head scores in the proxy language on other label-balanced samples, disjoint from the main one.

    Two discovery sets in the *same* language measure how much a circuit moves from sampling alone: a
    cross-language similarity is only evidence of a different circuit where it falls below this."""
    from circuit_transfer.proxy import task_of_checkpoint

    task = task_of_checkpoint(proxy)
    scores = {}
    for seed in s["resamples"]:
        examples = discovery_sample(
            task, s["proxy_lang"], s["discovery_per_class"], seed, data_dir, exclude_ids=main_ids
        )
        path = out / "scores" / f"{s['proxy_lang']}-resample{seed}.json"
        scores[seed] = head_scores(
            proxy, task, s["proxy_lang"], s["discovery_per_class"], path, estimator=s["estimator"], stabilize=s["stabilize"],
            max_len=s["max_len"], batch_size=s["batch_size"], data_dir=data_dir, examples=examples,
        )  # fmt: skip
    return scores


def within_language(main, resamples: dict, k: int, lang: str) -> list[dict]:
    """Jaccard / overlap@k / Spearman between the main proxy-language scores and each resample's."""
    from circuit_transfer.discovery import compare

    rows = []
    for seed, sc in resamples.items():
        c = compare(main, sc, k=k)
        rows.append({"lang": lang, "seed": seed, "jaccard": c.jaccard, "overlap_at_k": c.overlap_at_k,
                     "spearman": c.spearman})  # fmt: skip
    return rows


def compare_all(scores: dict, k: float) -> dict:
    from circuit_transfer.discovery import compare

    langs = list(scores)
    first = scores[langs[0]]
    n = k_heads(k, first.n_layers * first.n_heads)
    pairs = []
    for a in langs:
        for b in langs:
            c = compare(scores[a], scores[b], k=n)
            pairs.append(
                {"a": a, "b": b, "jaccard": c.jaccard, "overlap_at_k": c.overlap_at_k, "spearman": c.spearman}
            )
    top = {lang: [list(h) for h, _ in sc.ranked()[:n]] for lang, sc in scores.items()}
    finite = {lang: bool(sc.scores.isfinite().all()) for lang, sc in scores.items()}
    timings = {lang: sc.extra.get("wall_time_s") for lang, sc in scores.items()}
    return {
        "k": n,
        "langs": langs,
        "pairs": pairs,
        "top_heads": top,
        "all_scores_finite": finite,
        "discovery_s": timings,
    }


def join_transfer(data: dict, transfer_dir: Path, proxy_lang: str) -> list[dict]:
    """Per target: similarity to the proxy language's circuit vs CT-SFT gain over zero-shot (if present)."""
    if not (transfer_dir / "records.json").exists():
        return []
    records = [r for r in load_records(transfer_dir) if r["proxy_lang"] == proxy_lang]
    sim = {p["b"]: p for p in data["pairs"] if p["a"] == proxy_lang}
    zero = {r["target"]: r["target_accuracy"] for r in records if r["method"] == "zero-shot"}
    out = []
    for target in sorted({r["target"] for r in records}):
        if target not in sim:
            continue
        ct = [r for r in records if r["target"] == target and r["method"] == "ct-sft"]
        for kf in sorted({r.get("k_fraction") for r in ct}):
            for n in sorted({r["data"]["n_train"] for r in ct}):
                accs = [
                    r["target_accuracy"]
                    for r in ct
                    if r.get("k_fraction") == kf and r["data"]["n_train"] == n
                ]
                gain = ci95(a - zero[target] for a in accs) if target in zero else ci95([])
                out.append({"target": target, "k_fraction": kf, "n_train": n, "jaccard": sim[target]["jaccard"],
                            "spearman": sim[target]["spearman"], "ct_sft_accuracy": ci95(accs), "gain_over_zero_shot": gain})  # fmt: skip
    return out


def join_correlations(join: list[dict]) -> list[dict]:
    """Does similarity to the proxy-language circuit predict CT-SFT's gain over zero-shot? One Spearman
    (with an exact permutation p-value) per similarity measure and per (k, n_train), one point per target."""
    groups: dict[tuple, list[dict]] = {}
    for j in join:
        if j["gain_over_zero_shot"]["mean"] is not None:
            groups.setdefault((j["k_fraction"], j["n_train"]), []).append(j)
    rows = []
    for (kf, n), pts in sorted(groups.items(), key=lambda kv: str(kv[0])):
        gains = [j["gain_over_zero_shot"]["mean"] for j in pts]
        for measure in ("jaccard", "spearman"):
            sims = [j[measure] for j in pts]
            rows.append({"k_fraction": kf, "n_train": n, "similarity": measure, "targets": len(pts),
                         "spearman": spearman_rho(sims, gains), "p_value": spearman_permutation_p(sims, gains)})  # fmt: skip
    return rows


def render(out: Path, data: dict) -> str:
    langs = data["langs"]
    idx = {(p["a"], p["b"]): p for p in data["pairs"]}

    def matrix(key):
        return [
            {"": a, **{b: "-" if idx[(a, b)][key] is None else f"{idx[(a, b)][key]:.2f}" for b in langs}}
            for a in langs
        ]

    join = data.get("join", [])
    join_rows = [
        {"target": j["target"], "k": j["k_fraction"], "n_train": j["n_train"], "jaccard with proxy lang": f"{j['jaccard']:.2f}",
         "spearman with proxy lang": "-" if j["spearman"] is None else f"{j['spearman']:.2f}",
         "ct-sft acc %": "-" if j["ct_sft_accuracy"]["mean"] is None else f"{100 * j['ct_sft_accuracy']['mean']:.1f}",
         "gain over zero-shot pts": "-" if j["gain_over_zero_shot"]["mean"] is None else f"{100 * j['gain_over_zero_shot']['mean']:.1f}"}
        for j in join
    ]  # fmt: skip
    corr_rows = [
        {"k": c["k_fraction"], "n_train": c["n_train"], "similarity measure": c["similarity"], "targets": c["targets"],
         "spearman(similarity, ct-sft gain)": "-" if c["spearman"] is None else f"{c['spearman']:.2f}",
         "permutation p": "-" if c["p_value"] is None else f"{c['p_value']:.2f}"}
        for c in data.get("join_correlations", [])
    ]  # fmt: skip
    within = data.get("within_language", [])
    within_rows = [
        {"pair": f"{w['lang']} sample 0 vs {w['lang']} sample {w['seed']} (disjoint sentences)",
         "jaccard": f"{w['jaccard']:.2f}", "overlap@k": f"{w['overlap_at_k']:.2f}",
         "spearman": "-" if w["spearman"] is None else f"{w['spearman']:.2f}"}
        for w in within
    ]  # fmt: skip
    notes = [
        f"Head sets: top {data['k']} heads by relevance ({data['estimator']} estimator, {data['n_examples']} "
        f"discovery sentences per language, the same sentence ids in every language).",
        f"All scores finite: {data['all_scores_finite']}.",
        "Similarity predicts transfer? Spearman across targets of similarity to the proxy-language circuit and "
        "CT-SFT's gain over zero-shot, with an exact two-sided permutation p-value (needs >= 3 targets; "
        "3 targets cannot give p < 0.33).",
        "Within-language baseline: the same language and estimator on other, disjoint discovery sentences. A "
        "cross-language similarity at or above it is within discovery's sampling noise; only one clearly below "
        "it says the circuit differs.",
    ]
    sections = [("Jaccard of top-k head sets", matrix("jaccard"), ["", *langs]),
                ("Spearman of head scores", matrix("spearman"), ["", *langs])]  # fmt: skip
    if within_rows:
        sections.append(
            ("Within-language baseline (sampling noise of discovery)", within_rows, list(within_rows[0]))
        )
    if join_rows:
        sections.append(
            (
                "Similarity to the proxy-language circuit vs transfer (experiment 1)",
                join_rows,
                list(join_rows[0]),
            )
        )
    if corr_rows:
        sections.append(("Does similarity predict transfer?", corr_rows, list(corr_rows[0])))
    return write_table(out / "table.md", "Circuits across languages", sections, notes)


def main(argv: list[str] | None = None) -> dict:
    from circuit_transfer.tasks import get_task

    args, s = parse(argv)
    out = Path(args.out or default_out(NAME, args.quick))
    if args.tables_only:
        data = read_json(out / "circuits.json")
        render(out, data)
        return data
    manifest = Manifest(out, f"analyses/{NAME}.py", argv, jsonable(s))
    proxy_path = args.proxy or out / "proxies" / f"{s['model']}-{s['proxy_lang']}"
    proxy = ensure_proxy(
        proxy_path,
        get_task("nusax-senti"),
        s["proxy_lang"],
        s["model"],
        args.proxy_epochs,
        data_dir=args.data_dir,
    )
    scores = discover_all(out, proxy, s, args.data_dir)
    data = compare_all(scores, s["k"])
    data["within_language"] = []
    if s["resamples"] and s["proxy_lang"] in scores:
        main_scores = scores[s["proxy_lang"]]
        resamples = discover_resamples(out, proxy, s, main_scores.extra["example_ids"], args.data_dir)
        data["within_language"] = within_language(main_scores, resamples, data["k"], s["proxy_lang"])
    data.update(proxy=str(proxy), estimator=s["estimator"], n_examples=3 * s["discovery_per_class"])
    transfer_dir = args.transfer or out.parent / "nusax_transfer"
    data["join"] = join_transfer(data, transfer_dir, s["proxy_lang"])
    data["join_correlations"] = join_correlations(data["join"])
    data["transfer_source"] = str(transfer_dir)
    atomic_write_json(out / "circuits.json", jsonable(data))
    render(out, data)
    manifest.finish()
    return data


if __name__ == "__main__":
    main()
