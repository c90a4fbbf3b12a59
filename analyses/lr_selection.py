"""A fair comparison: each method's own learning rate, chosen from a grid on target-valid accuracy.

The first round trained every method at one rate (1e-4, 2 epochs): full fine-tuning was still
improving at its last epoch while CT-SFT peaked at epoch 1, so every contrast depended on that one
choice. Here every method (full, ct-sft, near-zero, random, ln-only) is trained at each rate of a grid
(default 3e-5, 1e-4, 3e-4, 1e-3) for up to 5 epochs on seed 0, and gets the rate whose best epoch
scores highest on target valid, averaged over the targets (one rate per method and proxy, so that the
choice rests on more than one small valid split). Test sets are evaluated too (the runs are ordinary
transfer runs) but never used for the choice.

Epoch 0 (the unchanged proxy) is not a candidate here, nor in the second-round sweeps that use the
chosen rates (`--exclude-epoch0`): a method's row must be a trained model, and zero-shot is its own
row. How often epoch 0 would have won (scored at least the best trained epoch on valid) is reported.

    python analyses/lr_selection.py --quick                       # tiny model, well under a minute
    OMP_NUM_THREADS=1 python analyses/lr_selection.py --task nusax --model smollm2-135m
    python analyses/lr_selection.py --task nusax --tables-only
    python analyses/nusax_transfer.py --lr-from analyses/results/lr_selection/nusax/selection.json --exclude-epoch0 ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nusax_transfer  # noqa: E402
import xnli_transfer  # noqa: E402
from common import Manifest, default_out, default_work, jsonable, run_cached, write_table  # noqa: E402
from sweep import (  # noqa: E402
    K_METHODS,
    before_cache,
    build_parser,
    cell_dir,
    circuit_for,
    collect,
    ensure_proxies,
    load_records,
    one_run,
    settings_from,
)

from circuit_transfer.io import atomic_write_json, read_json  # noqa: E402

NAME = "lr_selection"
GRID = [3e-5, 1e-4, 3e-4, 1e-3]
METHODS = ["full", "ct-sft", "near-zero", "random", "ln-only"]
# Per task: the transfer script's defaults, narrowed to what the selection needs (seed 0, one k and
# n_train, up to 5 epochs, a small test cut: test scores are not used here).
SELECTION = dict(methods=METHODS, k=[0.05], n_train=[100], epochs=5, seeds=[0], n_test=100, retention=[])
TASKS = {
    "nusax": (
        "nusax-senti",
        nusax_transfer.FULL | SELECTION | {"proxy_langs": ["ind"], "targets": ["jav", "bug"]},
    ),
    "xnli": ("xnli", xnli_transfer.FULL | SELECTION | {"targets": ["sw", "ur"]}),
}
QUICK = dict(
    model="tiny", targets=["jav"], methods=["full", "ct-sft"], k=[0.25], n_train=[30], n_test=30,
    epochs=2, seeds=[0], discovery_per_class=4, lr=None,
)  # fmt: skip
QUICK_GRID = [3e-4, 3e-3]


def parse(argv):
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", choices=sorted(TASKS), default="nusax")
    task_key = pre.parse_known_args(argv)[0].task
    defaults = TASKS[task_key][1]
    p = build_parser(f"{NAME} ({task_key})", defaults, QUICK)
    p.description = __doc__.splitlines()[0]
    p.add_argument("--task", choices=sorted(TASKS), default="nusax", help="which transfer experiment")
    p.add_argument("--lrs", type=float, nargs="+", default=None, help=f"the grid (default {GRID})")
    args = p.parse_args(argv)
    return args, defaults


def plan(s: dict) -> list[dict]:
    """One cell per (proxy, target, method, k, lr) on the first seed and n_train; seeds never vary."""
    cells = []
    for pl in s["proxy_langs"]:
        for tg in s["targets"]:
            if tg == pl:
                continue
            for method in s["methods"]:
                for k in s["k"] if method in K_METHODS else [None]:
                    for lr in s["lrs"]:
                        cells.append(
                            dict(proxy_lang=pl, target=tg, method=method, k=k, n_train=s["n_train"][0],
                                 seed=s["seeds"][0], lr=lr)
                        )  # fmt: skip
    return cells


def select(records: list[dict]) -> dict:
    """The selection curves, the chosen rate per (proxy, method), and how often epoch 0 would have won."""
    curves = []
    for r in records:
        valid = [row["valid_accuracy"] for row in r["curve"]]
        curves.append(
            {
                "proxy_lang": r["proxy_lang"], "target": r["target"], "method": r["method"],
                "k_fraction": r.get("k_fraction"), "lr": r["train_config"]["optim"]["lr"],
                "valid_accuracy": valid, "best_epoch": r["best_epoch"],
                "best_valid_accuracy": max(valid[e] for e in range(len(valid)) if e > 0 or r["train_config"]["start_is_candidate"]),
                "epoch0_would_win": valid[0] >= max(valid[1:]),
                "target_test_accuracy": r["target_accuracy"],
            }
        )  # fmt: skip
    curves.sort(key=lambda c: (c["proxy_lang"], c["method"], c["target"], c["lr"]))
    chosen: dict[str, dict] = {}
    for pl in sorted({c["proxy_lang"] for c in curves}):
        # A method's selection is complete when it ran every rate any method ran, on every target.
        targets = {c["target"] for c in curves if c["proxy_lang"] == pl}
        grid = {c["lr"] for c in curves if c["proxy_lang"] == pl}
        for method in sorted({c["method"] for c in curves if c["proxy_lang"] == pl}):
            mine = [c for c in curves if c["proxy_lang"] == pl and c["method"] == method]
            by_lr: dict[float, list[float]] = {}
            for c in mine:
                by_lr.setdefault(c["lr"], []).append(c["best_valid_accuracy"])
            complete = {lr: sum(v) / len(v) for lr, v in by_lr.items() if len(v) == len(targets)}
            # ties: the smaller rate (sorted first); None while no rate has run on every target
            lr = max(sorted(complete), key=lambda x: complete[x]) if complete else None
            chosen.setdefault(pl, {})[method] = {
                "lr": lr,
                "complete": set(complete) == grid,
                "mean_best_valid_accuracy": complete.get(lr),
                "targets": sorted({c["target"] for c in mine}),
                "by_lr": {f"{x:g}": complete[x] for x in sorted(complete)},
                "best_epoch": {c["target"]: c["best_epoch"] for c in mine if c["lr"] == lr},
            }
    wins = [c["epoch0_would_win"] for c in curves]
    return {
        "chosen": chosen,
        "curves": curves,
        "epoch0_would_win": {"runs": sum(wins), "of": len(wins)},
        "rule": "best epoch >= 1 on target valid; rate with the highest mean over targets; ties: smaller rate",
    }


def render(out: Path, data: dict) -> str:
    chosen_rows = [
        {"proxy": pl, "method": m,
         "chosen lr": ("-" if c["lr"] is None else f"{c['lr']:g}") + ("" if c.get("complete", True) else " (grid incomplete)"),
         "mean best valid %": "-" if c["lr"] is None else f"{100 * c['mean_best_valid_accuracy']:.1f}",
         **{f"valid % at {lr}": f"{100 * v:.1f}" for lr, v in c["by_lr"].items()},
         "best epoch": ", ".join(f"{t} {e}" for t, e in c["best_epoch"].items())}
        for pl, methods in data["chosen"].items() for m, c in methods.items()
    ]  # fmt: skip
    n_epochs = max(len(c["valid_accuracy"]) for c in data["curves"])
    curve_rows = [
        {"proxy": c["proxy_lang"], "target": c["target"], "method": c["method"], "lr": f"{c['lr']:g}",
         **{f"e{e}": f"{100 * c['valid_accuracy'][e]:.1f}" if e < len(c["valid_accuracy"]) else "-" for e in range(n_epochs)},
         "best": c["best_epoch"], "epoch 0 >= best": "yes" if c["epoch0_would_win"] else "no",
         "target test % (not used)": f"{100 * c['target_test_accuracy']:.1f}"}
        for c in data["curves"]
    ]  # fmt: skip
    wins = data["epoch0_would_win"]
    notes = [
        f"Rule: {data['rule']}. Epoch 0 (the unchanged proxy) is not a candidate; it scored at least as well "
        f"as the best trained epoch on target valid in {wins['runs']} of {wins['of']} runs.",
        "Selection curves: target-valid accuracy (%) after each epoch (e0 = before training), seed 0.",
    ]
    return write_table(
        out / "table.md",
        "Learning rate per method (selected on target valid)",
        [("Chosen rates", chosen_rows, list(chosen_rows[0]) if chosen_rows else []),
         ("Selection curves", curve_rows, list(curve_rows[0]) if curve_rows else [])],
        notes,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    from circuit_transfer.models import checkpoint_fingerprint
    from circuit_transfer.tasks import get_task

    args, defaults = parse(argv)
    name = f"{NAME}/{args.task}"
    out = Path(args.out or default_out(name, args.quick))
    work = Path(args.work or default_work(name, args.quick))
    if args.tables_only:
        data = read_json(out / "selection.json")
        render(out, data)
        return data
    s = settings_from(args, defaults, QUICK)
    s["lrs"] = args.lrs or (QUICK_GRID if args.quick else GRID)
    s["start_is_candidate"] = False
    for m in s["methods"]:
        if m not in METHODS:
            raise SystemExit(f"method {m!r} has no learning rate to select; choose from {', '.join(METHODS)}")
    task = get_task(TASKS[args.task][0])
    manifest = Manifest(out, f"analyses/{NAME}.py", argv, jsonable(s))
    proxies = ensure_proxies(args, s, task, work)
    for cell in plan(s):
        proxy = proxies[cell["proxy_lang"]]
        fingerprint = checkpoint_fingerprint(proxy)
        circuit = (
            circuit_for(out, proxy, task, cell, s, args.data_dir) if cell["method"] in K_METHODS else None
        )
        run_dir = cell_dir(
            work, **{k: cell[k] for k in ("proxy_lang", "target", "method", "k", "n_train")}, seed=0
        )
        run_dir = run_dir.parent / f"lr{cell['lr']:g}" / f"seed{cell['seed']}"
        _, ran = run_cached(
            run_dir,
            lambda d, c=cell, ci=circuit, p=proxy, f=fingerprint: one_run(
                d, p, f, task, c, ci, s, args, before_cache(work, p, f, s)
            ),
        )
        manifest.count(ran)
        print(f"[{NAME}] {'ran ' if ran else 'skip'} {run_dir.relative_to(work)}", flush=True)
    collect(work, out)
    data = select(load_records(out))
    atomic_write_json(out / "selection.json", data)
    render(out, data)
    manifest.finish()
    return data


if __name__ == "__main__":
    main()
