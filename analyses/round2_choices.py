"""The second round's pre-registered choices, read from the JSON the earlier steps wrote.

`analyses/round2.sh` asks this script for the values later steps need, so that no choice is typed
by hand after looking at results (analyses/README.md, "Second round: pre-registration"):

- `d`: discovery sentences per label for the transfer runs, by the pre-registered rule over the
  sizes 30, 90, 150: the smallest whose CD-T split-half stability in `discovery_size.py` has mean
  Jaccard >= 0.5 and mean Spearman >= 0.8, else 150; divided by the 3 labels. The rule never needs
  the largest size's stability (150 is the answer whether or not it is stable), so the study may
  decide on 30 and 90 first and run 150 later, for the report.
- `ret`: the untouched retention language (`--task nusax` or `xnli`): among the languages that are
  neither the proxy nor a pre-registered target, those whose proxy readout is not degenerate
  (`circuit_transfer.evaluate.degenerate_readout`), the one with the highest macro-F1.
- `proxy-summary`: copies the proxy checkpoint's metadata (training curve, test scores, wall time)
  into the results folder as `proxy-<lang>.json`, so the committed results record the proxy.
- `collect`: copies every finished run's record and per-item predictions from the (git-ignored)
  work folders into the results folders (`records.json`, `predictions/`), as the sweeps do when
  they end, so runs finished by an interrupted sweep are in the committed results too.
  It also rebuilds the model's `manifest.json` (see `write_manifest`).
- `restore`: the inverse of `collect`, for a fresh machine whose work folders are gone: every
  committed record made with the current proxy (same weight fingerprint) is written back as its
  run's `result.json` (and `predictions.npz`), so a resumed sweep skips it instead of rerunning it.
  A record made with another proxy is restored only when the retrained proxy passes the check of
  `proxy_equivalence.py` (same predictions and label logits within tolerance on the record's own
  'before' items, same heads); the others are refused and their runs redone. Results folders'
  cached head scores of another proxy move to `circuits/superseded/`, replaced by this proxy's.

    python analyses/round2_choices.py ret --results analyses/results/round2/gemma3-270m
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from discovery_size import JACCARD_STABLE, SPEARMAN_STABLE
from proxy_equivalence import ProxyEquivalence

from circuit_transfer.evaluate import degenerate_readout
from circuit_transfer.io import atomic_write_json, read_json
from circuit_transfer.models import checkpoint_fingerprint, read_checkpoint_metadata

NUSAX_PROXY = "ind"
NUSAX_TARGETS = ("jav", "bug", "sun", "min")
"""Every NusaX target of the pre-registered families (primary jav, bug; secondary sun, min)."""
XNLI_PROXY = "en"
XNLI_TARGETS = ("sw", "ur", "hi", "ar")
"""Every XNLI target of the pre-registered family."""
PROXY_AND_TARGETS = {"nusax": (NUSAX_PROXY, NUSAX_TARGETS), "xnli": (XNLI_PROXY, XNLI_TARGETS)}
N_LABELS = 3
DISCOVERY_SIZES = (30, 90, 150)
DISCOVERY_MAX_LEN = {"nusax-senti": 64, "xnli": 128}
"""The sweeps' max_len per task (`analyses/round2.sh`), with which their head scores are made."""


def discovery_per_class(results: Path) -> int:
    path = results / "discovery_size" / "stability.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run the discovery-cdt step first (analyses/round2.sh)")
    rows = {r["size"]: r for r in read_json(path)["summary"]["stability"] if r["estimator"] == "cdt"}
    for size in DISCOVERY_SIZES[:-1]:
        if size not in rows:
            raise SystemExit(f"{path} has no CD-T stability at {size} sentences: the rule needs it")
        if (
            rows[size]["jaccard"]["mean"] >= JACCARD_STABLE
            and rows[size]["spearman"]["mean"] >= SPEARMAN_STABLE
        ):
            return size // N_LABELS
    return DISCOVERY_SIZES[-1] // N_LABELS


def readouts_path(results: Path, task: str = "nusax") -> Path:
    """Where the `readouts` (NusaX) or `xnli-readouts` step writes the proxy's score per language."""
    return results / "readouts" / ("eval-ind.json" if task == "nusax" else "eval-xnli-en.json")


def retention_language(results: Path, task: str = "nusax") -> str:
    path = readouts_path(results, task)
    if not path.exists():
        raise SystemExit(f"{path} is missing: run the readouts step first (analyses/round2.sh)")
    proxy, targets = PROXY_AND_TARGETS[task]
    candidates = []
    for row in read_json(path)["results"]:
        if row["lang"] in (proxy, *targets):
            continue
        why = degenerate_readout(row["predicted_counts"])
        if why is None:
            candidates.append((row["macro_f1"], row["lang"]))
        else:
            print(f"[round2] {row['lang']} not a retention candidate: {why}", file=sys.stderr)
    if not candidates:
        raise SystemExit(f"no language in {path} has a non-degenerate readout: no retention language")
    return max(candidates)[1]


def proxy_summary(results: Path, proxy: Path) -> Path:
    """`proxy-<lang>.json`: the checkpoint's metadata with its weight fingerprint and the machine
    it was trained on (a retraining elsewhere may differ in the last bits; see `machine`)."""
    meta = read_checkpoint_metadata(proxy)
    out = results / f"proxy-{meta['lang']}.json"
    summary = {
        "checkpoint": str(proxy),
        "weight_fingerprint": checkpoint_fingerprint(proxy),
        "machine": machine(),
    }
    atomic_write_json(out, {**summary, **meta})
    return out


def machine() -> dict:
    """What decides a CPU's floating-point results here: its model and vector extensions, the
    kernels ATen runs (`ATEN_CPU_CAPABILITY`, pinned by round2.sh) and the MKL/oneDNN caps."""
    import os

    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []

    def field(name: str) -> str:
        return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith(name)), "")

    flags = set(field("flags").split())
    return {
        "cpu": field("model name"),
        "vector_extensions": sorted(f for f in flags if f.startswith(("avx", "fma", "sse4"))),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "pinned": {
            v: os.environ.get(v)
            for v in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "DNNL_MAX_CPU_ISA")
        },
        "torch": torch.__version__,
    }


SWEEPS = ("lr_nusax", "nusax_primary", "nusax_wider", "xnli", "xnli_hi_ar")
"""Work folders under runs/analyses/round2/<model>/ and their results folders (same names)."""


def collect_finished(results: Path, work: Path) -> list[str]:
    from sweep import collect

    done = []
    for name in SWEEPS:
        if (work / name / "runs").is_dir():
            records = collect(work / name, results / name)
            done.append(f"{name}: {len(records)} runs")
    write_manifest(results)
    return done


def write_manifest(results: Path) -> Path:
    """One model's `manifest.json`: every proxy (training seed, settings, wall time) and every
    invocation recorded in a step folder's own manifest (command, package versions, settings with
    the seeds, runs done and skipped, wall time, finished or not), sorted by start time, with the
    total wall time. Rebuilt from those files only, so it never disagrees with them."""
    proxies = {}
    for path in sorted(results.glob("proxy-*.json")):
        meta = read_json(path)
        proxies[path.stem] = {
            "lang": meta.get("lang"),
            "task": meta.get("task", {}).get("name"),
            "seed": meta.get("train_config", {}).get("seed"),
            "train_config": meta.get("train_config"),
            "wall_time_s": meta.get("wall_time_s"),
        }
    invocations = []
    for path in sorted(results.glob("*/manifest.json")):
        for key, entry in read_json(path).get("invocations", {}).items():
            invocations.append({"folder": path.parent.name, "key": key, **entry})
    invocations.sort(key=lambda e: (e.get("started_utc") or "", e["key"]))
    total = sum(p["wall_time_s"] or 0 for p in proxies.values()) + sum(
        e.get("wall_time_s") or 0 for e in invocations
    )
    out = results / "manifest.json"
    atomic_write_json(
        out,
        {
            "model": results.name,
            "proxies": proxies,
            "invocations": invocations,
            "wall_time_s_total": total,
            "note": "Rebuilt by `round2_choices.py collect` from proxy-*.json and */manifest.json.",
        },
    )
    return out


def restore_finished(
    results: Path, work: Path, fingerprints: set[str], equivalence: dict | None = None
) -> list[str]:
    """Committed records back into `work` (see top): those made with a proxy of these weight
    fingerprints, and those `equivalence[proxy_lang]` (a `ProxyEquivalence`) accepts. With
    `equivalence` given, a record of a proxy language it lacks is left for its own proxy (a session
    that retrains only the XNLI proxy restores only XNLI runs) and reported as such."""
    from proxy_equivalence import reused
    from sweep import load_records, predictions_path

    from circuit_transfer.evaluate import load_predictions
    from circuit_transfer.io import atomic_write
    from circuit_transfer.transfer import PREDICTIONS

    equivalence = equivalence or {}
    done = []
    for name in SWEEPS:
        if not (results / name / "records.json").exists():
            continue
        restored = accepted = 0
        refused: dict[str, int] = {}
        for rec in load_records(results / name):
            run_dir = work / name / "runs" / rec["_path"]
            if (run_dir / "result.json").exists():
                continue
            kept = predictions_path(results / name, rec)
            if rec.get("predictions") and not kept.exists():
                raise SystemExit(
                    f"{kept} is missing: {rec['_path']} cannot be restored without its predictions"
                )
            if rec.get("proxy_fingerprint") not in fingerprints:
                lang = rec.get("proxy_lang")
                check = equivalence.get(lang)
                if equivalence and lang not in equivalence:  # that language's proxy is not trained here
                    evidence, why = None, f"no {lang} proxy given"
                elif check is None or not kept.exists():
                    evidence, why = None, "another proxy"
                else:
                    evidence, why = check.check(rec, load_predictions(kept))
                if evidence is None:
                    refused[why] = refused.get(why, 0) + 1
                    continue
                rec = reused(rec, check.fingerprint, evidence)
                accepted += 1
            run_dir.mkdir(parents=True, exist_ok=True)
            if kept.exists():
                atomic_write(run_dir / PREDICTIONS, lambda tmp, kept=kept: shutil.copyfile(kept, tmp))
            atomic_write_json(run_dir / "result.json", {k: v for k, v in rec.items() if k != "_path"})
            restored += 1
        line = f"{name}: {restored} restored"
        if accepted:
            line += f" ({accepted} made with an equivalent proxy)"
        if refused:
            line += ", rerun: " + ", ".join(f"{n} ({why})" for why, n in sorted(refused.items()))
        done.append(line)
    return done


def adopt_scores(results: Path, scores_path: Path, lang: str) -> list[str]:
    """Every results folder's cached head scores of `lang` made with another proxy than
    `scores_path`'s move to `circuits/superseded/` and are replaced by `scores_path` (the sweeps
    refuse scores of another proxy; the superseded file is kept, never overwritten)."""
    from circuit_transfer.discovery import Circuit

    fingerprint = Circuit.load(scores_path).scores.extra["proxy_fingerprint"]
    moved = []
    for name in SWEEPS:
        cached = results / name / "circuits" / f"scores-{lang}.json"
        if not cached.exists():
            continue
        old = Circuit.load(cached).scores.extra.get("proxy_fingerprint")
        if old == fingerprint:
            continue
        superseded = cached.parent / "superseded" / f"scores-{lang}-{old}.json"
        if not superseded.exists():
            superseded.parent.mkdir(exist_ok=True)
            cached.rename(superseded)
        elif superseded.read_bytes() == cached.read_bytes():
            cached.unlink()  # kept already (a proxy of that fingerprint came back)
        else:
            raise SystemExit(f"{superseded} exists and differs from {cached}: neither is overwritten")
        shutil.copyfile(scores_path, cached)
        moved.append(f"{name}: head scores of proxy {old} -> circuits/superseded/, now {fingerprint}'s")
    return moved


def made_with_another_proxy(results: Path, lang: str, fingerprint: str) -> bool:
    """Whether any committed record or cached head-score file of proxy language `lang` was made
    with a proxy of another weight fingerprint: only then does `restore` need the retrained proxy's
    own head scores (the equivalence check and `adopt_scores`), which take 6 min on Gemma and
    20-25 min on SmolLM2."""
    from sweep import load_records

    for name in SWEEPS:
        if (results / name / "records.json").exists() and any(
            r.get("proxy_lang") == lang and r.get("proxy_fingerprint") != fingerprint
            for r in load_records(results / name)
        ):
            return True
        cached = results / name / "circuits" / f"scores-{lang}.json"
        if cached.exists() and read_json(cached)["scores"]["extra"].get("proxy_fingerprint") != fingerprint:
            return True
    return False


def proxy_head_scores(proxy: Path, work: Path, per_class: int) -> Path:
    """This proxy's head scores with the sweeps' discovery settings (CD-T with the stability rule,
    `per_class` sentences per label, the task's max_len), cached under `work/equivalence/`."""
    from common import head_scores

    from circuit_transfer.tasks import Task

    meta = read_checkpoint_metadata(proxy)
    task = Task.from_dict(meta["task"])
    path = work / "equivalence" / f"scores-{meta['lang']}.json"
    max_len = DISCOVERY_MAX_LEN[task.name]
    head_scores(proxy, task, meta["lang"], per_class, path, estimator="cdt", stabilize=True, max_len=max_len)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("d", "ret", "proxy-summary", "collect", "restore"))
    p.add_argument("--results", type=Path, required=True, help="analyses/results/round2/<model>")
    p.add_argument("--task", choices=sorted(PROXY_AND_TARGETS), default="nusax", help="which readouts (ret)")
    p.add_argument(
        "--proxy", type=Path, nargs="+", help="the proxy checkpoint (proxy-summary; restore: all of them)"
    )
    p.add_argument("--work", type=Path, help="runs/analyses/round2/<model> (collect, restore)")
    p.add_argument(
        "--discovery-per-class",
        type=int,
        help="restore: D, for the head scores that confirm a record's heads under a retrained proxy",
    )
    args = p.parse_args(argv)
    if args.what == "d":
        print(discovery_per_class(args.results))
    elif args.what == "ret":
        print(retention_language(args.results, args.task))
    elif args.what == "collect":
        if args.work is None:
            raise SystemExit("collect needs --work DIR (runs/analyses/round2/<model>)")
        print("[round2] collected " + ("; ".join(collect_finished(args.results, args.work)) or "nothing"))
    elif args.what == "restore":
        if args.work is None or args.proxy is None:
            raise SystemExit("restore needs --work DIR (runs/analyses/round2/<model>) and --proxy DIR")
        from circuit_transfer.discovery import Circuit

        lines = []
        equivalence = {}
        for proxy in args.proxy:
            lang, scores = read_checkpoint_metadata(proxy)["lang"], None
            if args.discovery_per_class and made_with_another_proxy(
                args.results, lang, checkpoint_fingerprint(proxy)
            ):
                scores_path = proxy_head_scores(proxy, args.work, args.discovery_per_class)
                lines += adopt_scores(args.results, scores_path, lang)
                scores = Circuit.load(scores_path).scores
            equivalence[lang] = ProxyEquivalence(proxy, checkpoint_fingerprint(proxy), scores)
        fingerprints = {checkpoint_fingerprint(p) for p in args.proxy}
        lines += restore_finished(args.results, args.work, fingerprints, equivalence)
        print("[round2] " + ("; ".join(lines) or "nothing to restore"))
    else:
        if args.proxy is None:
            raise SystemExit("proxy-summary needs --proxy DIR")
        print(f"[round2] wrote {proxy_summary(args.results, args.proxy[0])}")


if __name__ == "__main__":
    main()
