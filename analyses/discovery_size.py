"""How many discovery sentences a circuit needs: head-set stability per estimator and size, estimator
agreement, and faithfulness against random circuits of the same size.

The first round chose circuits from 30 sentences, and two disjoint 30-sentence Indonesian samples
agreed at Jaccard 0.17-0.27: the circuit was mostly sampling noise. Here, for every estimator (CD-T,
attribution patching, exact mean-ablation patching) and discovery size (30, 90, 150 sentences,
label-balanced), `--repeats` pairs of *disjoint* samples are drawn from the proxy language's
held-out pool; each pair's top-k head sets (Jaccard) and score vectors (Spearman) are compared. The
spread over pairs is a split-half bootstrap of the circuit. At the largest size, the estimators are
compared on the same samples, and each one's top-k circuit is mean-ablation faithful against
`--n-random` random circuits of its size, on held-out test sentences.

Pool: NusaX valid (100 sentences) then train (500; the proxy was fine-tuned on them, but no test
sentence is ever used for discovery); XNLI the valid 20% of dev (498). `--pool valid` keeps to
valid only (it caps the size at half the pool).

Recommended size (pre-registered rule, analyses/README.md): the smallest size whose mean split-half
Jaccard is >= 0.5 and mean Spearman >= 0.8; otherwise the largest size run.

    python analyses/discovery_size.py --quick                    # tiny model, well under a minute
    OMP_NUM_THREADS=1 python analyses/discovery_size.py --model smollm2-135m --stabilize
    python analyses/discovery_size.py --tables-only
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
    default_work,
    discovery_pool,
    ensure_proxy,
    fmt_ci,
    head_scores,
    jsonable,
    k_heads,
    write_table,
)

from circuit_transfer.choices import ESTIMATORS as CHOICES  # noqa: E402
from circuit_transfer.io import atomic_write_json, read_json  # noqa: E402

NAME = "discovery_size"
ESTIMATORS = list(CHOICES)
FULL = dict(
    model="smollm2-135m", task="nusax-senti", proxy_lang="ind", sizes=[30, 90, 150], estimators=ESTIMATORS,
    repeats=5, k=0.05, n_eval=150, n_random=10, max_len=64, batch_size=8, pool="valid+train",
)  # fmt: skip
QUICK = dict(model="tiny", sizes=[6, 12], repeats=2, k=0.25, n_eval=30, n_random=3, max_len=48)
JACCARD_STABLE, SPEARMAN_STABLE = 0.5, 0.8


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny model, two sizes, two repeats")
    p.add_argument("--tables-only", action="store_true", help="rebuild table.md from stability.json")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--work", type=Path, default=None, help="where a missing proxy is trained")
    p.add_argument("--proxy", type=Path, default=None, help="proxy checkpoint (trained in --work if missing)")
    p.add_argument("--model", default=None, help=f"base model of the proxy (full: {FULL['model']})")
    p.add_argument("--task", choices=("nusax-senti", "xnli"), default=None)
    p.add_argument("--proxy-lang", default=None)
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="discovery sentences (multiples of 3)")
    p.add_argument("--estimators", nargs="+", choices=ESTIMATORS, default=None)
    p.add_argument("--repeats", type=int, default=None, help="disjoint sample pairs per size")
    p.add_argument("--k", type=float, default=None, help="head fraction (<1) or count of the top-k sets")
    p.add_argument("--n-eval", type=int, default=None, help="test sentences for faithfulness")
    p.add_argument("--n-random", type=int, default=None, help="random circuits per estimator")
    p.add_argument("--pool", choices=("valid", "valid+train"), default=None)
    p.add_argument("--max-len", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--stabilize", action="store_true", help="CD-T's sign-stable rule (deep models)")
    p.add_argument("--data-dir", default=None)
    p.epilog = f"Full-mode defaults: {FULL}. Quick-mode defaults: {QUICK}."
    return p.parse_args(argv)


def settings(args) -> dict:
    s = dict(FULL) | (QUICK if args.quick else {})
    for key in ("model", "task", "proxy_lang", "sizes", "estimators", "repeats", "k", "n_eval", "n_random",
                "pool", "max_len", "batch_size"):  # fmt: skip
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    if s["task"] == "xnli" and args.proxy_lang is None:
        s["proxy_lang"] = "en"
    bad = [n for n in s["sizes"] if n % 3 or n <= 0]
    if bad:
        raise SystemExit(f"--sizes must be positive multiples of 3 (label-balanced over 3 labels), got {bad}")
    s["stabilize"] = args.stabilize
    return s


def pool_of(task, lang: str, which: str, data_dir=None) -> list:
    """The held-out examples samples are drawn from (see module doc)."""
    from circuit_transfer.data import load_split

    pool = list(discovery_pool(task, lang, data_dir))
    if which == "valid+train" and task.name == "nusax-senti":
        pool += load_split(task.name, lang, "train", data_dir)
    return pool


def disjoint_pair(pool: list, size: int, repeat: int, n_labels: int) -> tuple[list, list]:
    """Two label-balanced samples of `size` with no sentence in common (seeded by `repeat`)."""
    from circuit_transfer.tasks import balanced_sample

    per_class = size // n_labels
    both = balanced_sample(pool, 2 * per_class, seed=1000 + repeat, n_labels=n_labels)
    first, second, taken = [], [], dict.fromkeys(range(n_labels), 0)
    for ex in both:
        (first if taken[ex.label] < per_class else second).append(ex)
        taken[ex.label] += 1
    return first, second


def run(s: dict, out: Path, proxy: Path, data_dir=None) -> dict:
    from circuit_transfer.data import load_split
    from circuit_transfer.discovery import compare, faithfulness_curve, make_baseline, select_top_k
    from circuit_transfer.models import load_model
    from circuit_transfer.tasks import get_task, stratified_cap

    task = get_task(s["task"])
    model = load_model(str(proxy))
    n_total = model.cfg.n_layers * model.cfg.n_heads
    k = k_heads(s["k"], n_total)
    pool = pool_of(task, s["proxy_lang"], s["pool"], data_dir)
    if 2 * max(s["sizes"]) > len(pool):
        raise SystemExit(
            f"two disjoint samples of {max(s['sizes'])} need {2 * max(s['sizes'])} sentences; the "
            f"{s['pool']} pool of {s['proxy_lang']} has {len(pool)}: use smaller --sizes or --pool valid+train."
        )

    def scores(estimator: str, size: int, repeat: int, half: str, examples: list):
        path = out / "scores" / f"{estimator}-n{size}-r{repeat}-{half}.json"
        return head_scores(
            proxy, task, s["proxy_lang"], 0, path, estimator=estimator, stabilize=s["stabilize"],
            max_len=s["max_len"], batch_size=s["batch_size"], data_dir=data_dir, model=model, examples=examples,
        )  # fmt: skip

    stability, samples = [], {}
    for size in s["sizes"]:
        for repeat in range(s["repeats"]):
            samples[(size, repeat)] = disjoint_pair(pool, size, repeat, task.n_labels)
    for estimator in s["estimators"]:
        for size in s["sizes"]:
            for repeat in range(s["repeats"]):
                a, b = samples[(size, repeat)]
                c = compare(
                    scores(estimator, size, repeat, "a", a), scores(estimator, size, repeat, "b", b), k=k
                )
                stability.append(
                    {"estimator": estimator, "size": size, "repeat": repeat, "jaccard": c.jaccard, "spearman": c.spearman}
                )  # fmt: skip
    largest = max(s["sizes"])
    agreement = []
    for i, e1 in enumerate(s["estimators"]):
        for e2 in s["estimators"][i + 1 :]:
            for repeat in range(s["repeats"]):
                a = samples[(largest, repeat)][0]
                c = compare(scores(e1, largest, repeat, "a", a), scores(e2, largest, repeat, "a", a), k=k)
                agreement.append(
                    {"a": e1, "b": e2, "repeat": repeat, "jaccard": c.jaccard, "spearman": c.spearman}
                )
    test_split = "test"
    evaluation = stratified_cap(
        load_split(task.name, s["proxy_lang"], test_split, data_dir), s["n_eval"], task.n_labels
    )
    faith = []
    discovery = samples[(largest, 0)][0]
    base = make_baseline(model, "label-balanced", discovery, task, max_len=s["max_len"])
    for estimator in s["estimators"]:
        found = scores(estimator, largest, 0, "a", discovery)
        curve = faithfulness_curve(
            model, task, found, evaluation, baseline=base, sizes=[k], n_random=s["n_random"], seed=0,
            batch_size=s["batch_size"], max_len=s["max_len"],
        )  # fmt: skip
        randoms = curve.random[0]
        faith.append(
            {"estimator": estimator, "k": k, "heads": [list(h) for h in select_top_k(found, k).heads],
             "faithfulness": curve.top_k[0], "accuracy": curve.top_k_accuracy[0], "random": randoms,
             "random_mean": curve.random_mean[0],
             "share_of_random_at_least_as_faithful": sum(r >= curve.top_k[0] for r in randoms) / len(randoms),
             "full_accuracy": curve.full.accuracy, "empty_accuracy": curve.empty.accuracy}
        )  # fmt: skip
    return {"settings": s, "k": k, "n_heads": n_total, "pool_size": len(pool), "n_eval": len(evaluation),
            "stability": stability, "agreement": agreement, "faithfulness": faith,
            "summary": summarise(stability, agreement, s)}  # fmt: skip


def summarise(stability: list[dict], agreement: list[dict], s: dict) -> dict:
    """Means and intervals over the repeats, and the recommended size per estimator (module doc)."""
    rows, recommended = [], {}
    for estimator in s["estimators"]:
        for size in s["sizes"]:
            mine = [r for r in stability if r["estimator"] == estimator and r["size"] == size]
            rows.append(
                {"estimator": estimator, "size": size, "jaccard": ci95(r["jaccard"] for r in mine),
                 "spearman": ci95(r["spearman"] for r in mine)}
            )  # fmt: skip
        stable = [
            r["size"] for r in rows
            if r["estimator"] == estimator and (r["jaccard"]["mean"] or 0) >= JACCARD_STABLE
            and (r["spearman"]["mean"] or 0) >= SPEARMAN_STABLE
        ]  # fmt: skip
        recommended[estimator] = {"size": min(stable) if stable else max(s["sizes"]), "stable": bool(stable)}
    pairs = []
    for a, b in sorted({(r["a"], r["b"]) for r in agreement}):
        mine = [r for r in agreement if (r["a"], r["b"]) == (a, b)]
        pairs.append({"a": a, "b": b, "jaccard": ci95(r["jaccard"] for r in mine),
                      "spearman": ci95(r["spearman"] for r in mine)})  # fmt: skip
    return {"stability": rows, "agreement": pairs, "recommended": recommended}


def render(out: Path, data: dict) -> str:
    summary = data["summary"]
    stab = [
        {"estimator": r["estimator"], "sentences": r["size"], "Jaccard (top-k)": fmt_ci(r["jaccard"], 1, 2),
         "Spearman": fmt_ci(r["spearman"], 1, 2)}
        for r in summary["stability"]
    ]  # fmt: skip
    agree = [
        {"estimators": f"{r['a']} vs {r['b']}", "Jaccard (top-k)": fmt_ci(r["jaccard"], 1, 2),
         "Spearman": fmt_ci(r["spearman"], 1, 2)}
        for r in summary["agreement"]
    ]  # fmt: skip
    faith = [
        {"estimator": f["estimator"], "k": f["k"], "faithfulness": f"{f['faithfulness']:.2f}",
         "random mean": f"{f['random_mean']:.2f}",
         "random >= it": f"{round(f['share_of_random_at_least_as_faithful'] * len(f['random']))}/{len(f['random'])}",
         "circuit acc %": f"{100 * f['accuracy']:.1f}", "full / empty acc %": f"{100 * f['full_accuracy']:.1f} / {100 * f['empty_accuracy']:.1f}"}
        for f in data["faithfulness"]
    ]  # fmt: skip
    rec = [
        {"estimator": e, "recommended size": r["size"], "meets the rule": "yes" if r["stable"] else "no (largest run)"}
        for e, r in summary["recommended"].items()
    ]  # fmt: skip
    s = data["settings"]
    notes = [
        f"Proxy {s['proxy_lang']} ({s['task']}), {data['n_heads']} heads, top-k = {data['k']}; {s['repeats']} pairs of "
        f"disjoint label-balanced samples per size from a pool of {data['pool_size']} ({s['pool']}); mean over pairs "
        "with a 95% t-interval.",
        f"Agreement: the estimators on the same samples of {max(s['sizes'])} sentences.",
        f"Faithfulness: mean-ablation (label-balanced mu of the first sample) on {data['n_eval']} test sentences, "
        f"against {s['n_random']} seeded random circuits of the same size.",
        f"Rule: the smallest size with mean Jaccard >= {JACCARD_STABLE} and mean Spearman >= {SPEARMAN_STABLE}.",
    ]
    return write_table(
        out / "table.md", "Discovery size: stability, agreement, faithfulness",
        [("Split-half stability", stab, list(stab[0]) if stab else []),
         ("Estimator agreement", agree, list(agree[0]) if agree else []),
         ("Faithfulness against random circuits", faith, list(faith[0]) if faith else []),
         ("Recommended discovery size", rec, list(rec[0]) if rec else [])],
        notes,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    from circuit_transfer.tasks import get_task

    args = parse(argv)
    out = Path(args.out or default_out(NAME, args.quick))
    if args.tables_only:
        data = read_json(out / "stability.json")
        render(out, data)
        return data
    s = settings(args)
    work = Path(args.work or default_work(NAME, args.quick))
    manifest = Manifest(out, f"analyses/{NAME}.py", argv, jsonable(s))
    proxy = args.proxy or work / "proxies" / f"{s['model']}-{s['proxy_lang']}"
    proxy = ensure_proxy(proxy, get_task(s["task"]), s["proxy_lang"], s["model"], data_dir=args.data_dir)
    data = jsonable(run(s, out, proxy, args.data_dir))
    data["proxy"] = str(proxy)
    atomic_write_json(out / "stability.json", data)
    render(out, data)
    manifest.finish()
    return data


if __name__ == "__main__":
    main()
