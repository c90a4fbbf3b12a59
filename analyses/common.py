"""Shared plumbing for the experiment scripts in `analyses/`.

- `run_cached`: run one experiment cell unless its `result.json` already exists (resume).
- `Manifest`: the exact command, package versions, seeds and wall time of a sweep, in `manifest.json`.
- `aggregate`: mean and a 95% confidence interval over seeds (`circuit_transfer.statistics.ci95`).
- `write_table`: a markdown file built only from JSON-able rows, so `--tables-only` reproduces it.
- `common_parser`, `ensure_proxy`, `head_scores`: the flags and the steps every script shares.

Everything on disk is written atomically (`circuit_transfer.io`).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from circuit_transfer.choices import ESTIMATORS
from circuit_transfer.io import atomic_write_json, atomic_write_text, read_json
from circuit_transfer.statistics import ci95, paired_bootstrap, spearman_permutation_p, spearman_rho, t975
from circuit_transfer.table import markdown_table

__all__ = ["ci95", "paired_bootstrap", "spearman_permutation_p", "spearman_rho", "t975"]  # re-exported

RESULTS = Path(__file__).resolve().parent / "results"
# Per-run work folders (result.json + delta.safetensors, up to a full model each) stay out of git.
WORK = Path(__file__).resolve().parent.parent / "runs" / "analyses"


# Reference figures quoted from docs/method.md §7 (measured by the project earlier, not by these scripts).
NUSAX_ANCHORS = (
    "Reference anchors quoted from docs/method.md §7 (not computed by this script): TF-IDF word+char n-grams "
    "+ logistic regression trained on Indonesian, 400 test sentences: ind 77.5%, jav 68.5%, sun 66.2%, "
    "bug 46.5%, eng 27.0% (zero-shot); trained in-language: 75-81% for every language. One epoch of full "
    "fine-tuning of SmolLM2-135M on 500 Indonesian (200 test sentences each): ind 71.0%, jav 59.5%, "
    "eng 73.5%. Standard error: about ±2.4 points at 400 sentences, ±3.5 at 200."
)
TFIDF_FROM_IND = {"ind": 0.775, "jav": 0.685, "sun": 0.662, "bug": 0.465, "eng": 0.270}


def default_out(name: str, quick: bool) -> Path:
    """analyses/results/<name>, or analyses/results/quick/<name> for --quick (never mixed with full runs)."""
    return RESULTS / "quick" / name if quick else RESULTS / name


def default_work(name: str, quick: bool) -> Path:
    """runs/analyses/<name> (git-ignored): per-run folders, deltas and proxies trained by the scripts."""
    return WORK / "quick" / name if quick else WORK / name


def fmt_ci(stat: dict[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    """'65.5 ± 3.1 (n=3)', or '65.5 (n=1, no CI)'; values in percent by default."""
    if not stat or stat.get("mean") is None:
        return "-"
    mean = f"{stat['mean'] * scale:.{digits}f}"
    if stat.get("half") is None:
        return f"{mean} (n=1, no CI)"
    return f"{mean} ± {stat['half'] * scale:.{digits}f} (n={stat['n']})"


def aggregate(
    records: Sequence[dict[str, Any]], keys: Sequence[str], metrics: dict[str, Callable[[dict], Any]]
) -> list[dict[str, Any]]:
    """Group `records` by `keys` and summarise every metric over the group (seeds) with `ci95`."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault(tuple(rec.get(k) for k in keys), []).append(rec)
    rows = []
    for group_key, recs in groups.items():
        row: dict[str, Any] = dict(zip(keys, group_key))
        row["seeds"] = sorted({r.get("seed") for r in recs if r.get("seed") is not None})
        for name, get in metrics.items():
            row[name] = ci95(get(r) for r in recs)
        rows.append(row)
    return rows


def run_cached(out_dir: Path, run: Callable[[Path], dict]) -> tuple[dict, bool]:
    """`run(out_dir)` unless `out_dir/result.json` exists; returns (record, ran)."""
    path = Path(out_dir) / "result.json"
    if path.exists():
        return read_json(path), False
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    record = run(Path(out_dir))
    if not path.exists():
        atomic_write_json(path, record)
    return record, True


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformer_lens", "circuit_transfer"):
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            try:
                out[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                out[name] = "unknown"
    return out


# What a manifest records of the environment: threads, data, and the instruction-set pins that
# decide floating-point results (round2.sh).
RECORDED_ENV = (
    "OMP_NUM_THREADS",
    "CT_DATA_DIR",
    "ATEN_CPU_CAPABILITY",
    "MKL_ENABLE_INSTRUCTIONS",
    "DNNL_MAX_CPU_ISA",
)


class Manifest:
    """What produced a results folder: command, versions, settings, runs done/skipped, wall time.

    `manifest.json` keeps one entry per invocation (keyed by start time and pid), merged on every
    save, so several processes may share one results folder (e.g. one per target language).
    """

    def __init__(self, out: Path, script: str, argv: Sequence[str] | None, settings: dict[str, Any]):
        self.path = Path(out) / "manifest.json"
        self.started = time.time()
        self.key = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.started))}-pid{os.getpid()}"
        self.entry: dict[str, Any] = {
            "command": shlex.join([sys.executable, script, *(argv if argv is not None else sys.argv[1:])]),
            "cwd": os.getcwd(),
            "versions": package_versions(),
            "env": {k: os.environ.get(k) for k in RECORDED_ENV},
            "settings": settings,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "runs_done": 0,
            "runs_skipped": 0,
            "finished": False,
        }
        self.save()

    def count(self, ran: bool) -> None:
        self.entry["runs_done" if ran else "runs_skipped"] += 1
        self.save()

    def note(self, **kwargs: Any) -> None:
        self.entry.update(kwargs)
        self.save()

    def finish(self) -> None:
        self.entry.update(wall_time_s=time.time() - self.started, finished=True)
        self.save()

    def save(self) -> None:
        self.entry["wall_time_s"] = time.time() - self.started
        data = read_json(self.path) if self.path.exists() else {}
        invocations = data.get("invocations", {})
        invocations[self.key] = self.entry
        atomic_write_json(self.path, {"latest": self.key, "invocations": invocations})


def write_table(path: Path, title: str, sections: Sequence[tuple[str, list[dict], Sequence[str]]], notes=()):
    """A markdown file: a title, then (heading, rows, columns) sections, then notes; atomically."""
    parts = [f"# {title}\n"]
    for heading, rows, columns in sections:
        parts.append(f"\n## {heading}\n\n" + markdown_table(rows, columns))
    if notes:
        parts.append("\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    text = "".join(parts)
    atomic_write_text(path, text)
    return text


def common_parser(description: str, *, model: str = "smollm2-135m") -> argparse.ArgumentParser:
    """The flags every experiment shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick", action="store_true", help="tiny model, few examples, one seed (a minute or two)"
    )
    p.add_argument("--tables-only", action="store_true", help="rebuild JSON summary + markdown from results")
    p.add_argument("--out", type=Path, default=None, help="results folder (default analyses/results/<name>)")
    p.add_argument("--work", type=Path, default=None, help="per-run folders (default runs/analyses/<name>)")
    p.add_argument("--model", default=model, help="base model of the proxy (full mode)")
    p.add_argument("--proxy", type=Path, default=None, help="proxy checkpoint dir (trained there if missing)")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--max-len", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--discovery-per-class", type=int, default=None, help="discovery examples per label")
    p.add_argument(
        "--estimator",
        default="cdt",
        choices=ESTIMATORS,
        help="head relevance estimator (ablation: exact mean-ablation patching, one forward per head)",
    )
    p.add_argument(
        "--stabilize",
        action="store_true",
        help="CD-T's sign-stable rule (keeps deep models' decompositions finite; see discover --stabilize)",
    )
    p.add_argument(
        "--proxy-epochs", type=int, default=None, help="epochs when the proxy must be trained here"
    )
    p.add_argument("--data-dir", default=None, help="data folder (default $CT_DATA_DIR)")
    return p


def ensure_proxy(
    path: Path, task, lang: str, model_spec: str, epochs: int | None = None, data_dir=None
) -> Path:
    """The proxy checkpoint at `path`, trained there first (prepare_proxy, package defaults) when missing."""
    from dataclasses import replace

    from circuit_transfer.models.checkpoint import is_checkpoint_dir
    from circuit_transfer.proxy import PRETRAINED_TRAIN, TINY_TRAIN, prepare_proxy

    path = Path(path)
    config = None
    if epochs:
        config = replace(TINY_TRAIN if model_spec == "tiny" else PRETRAINED_TRAIN, epochs=epochs)
    if not (path.is_dir() and is_checkpoint_dir(path)):
        print(f"[proxy] training {model_spec} on {task.name}/{lang} -> {path}", flush=True)
        meta = prepare_proxy(task, lang, model_spec, path, config=config, data_dir=data_dir)
        print(f"[proxy] test accuracy {meta['test']['accuracy']:.3f}", flush=True)
    return path


def head_scores(
    proxy: Path,
    task,
    lang: str,
    per_class: int,
    path: Path,
    *,
    estimator: str = "cdt",
    stabilize: bool = False,
    max_len: int = 64,
    batch_size: int = 8,
    seed: int = 0,
    data_dir=None,
    model=None,
    examples=None,
):
    """Relevance of every head of `proxy` on a label-balanced discovery set (`discovery_sample`).

    Cached as a circuit JSON (top-1 circuit carrying all scores) at `path`, with the settings that
    made it (the proxy's weight fingerprint, language, sample, estimator, max_len); a cached file made
    with other settings is refused, never silently reused. The discovery set never holds a test
    sentence (valid first, then train where valid is too small). `examples` overrides the sample
    (e.g. the same sentence ids in several languages).
    """
    from circuit_transfer.discovery import Circuit, head_relevance, select_top_k
    from circuit_transfer.models import checkpoint_fingerprint, load_model

    path = Path(path)
    if examples is None:
        examples = discovery_sample(task, lang, per_class, seed, data_dir)
    settings = {
        "proxy_fingerprint": checkpoint_fingerprint(proxy),
        "lang": lang,
        "example_ids": [getattr(ex, "id", None) for ex in examples],
        "estimator": estimator,
        "stabilize": stabilize,
        "max_len": max_len,
    }
    if path.exists():
        cached = Circuit.load(path).scores
        made_with = {key: cached.extra.get(key) for key in settings}
        made_with["estimator"] = cached.estimator
        differ = sorted(key for key in settings if made_with[key] != settings[key])
        if differ:
            raise SystemExit(
                f"{path} holds head scores made with other settings ({', '.join(differ)} differ: "
                f"{ {key: made_with[key] for key in differ} } there, { {key: settings[key] for key in differ} } now): "
                "give this run its own --out (and --work), or delete that file to rediscover."
            )
        return cached
    started = time.time()
    model = model if model is not None else load_model(str(proxy))
    scores = head_relevance(
        model,
        task,
        examples,
        "label-balanced",
        estimator=estimator,
        batch_size=batch_size,
        max_len=max_len,
        stabilize=stabilize,
    )
    scores.extra.update(settings, wall_time_s=time.time() - started)
    select_top_k(scores, 1).save(path)
    print(f"[discovery] {lang}: {len(examples)} examples, {time.time() - started:.0f}s -> {path}", flush=True)
    return scores


def discovery_pool(task, lang: str, data_dir=None):
    """Held-out examples discovery draws from: NusaX valid; XNLI the valid 20% of dev."""
    from circuit_transfer.data import load_split
    from circuit_transfer.proxy import load_train_valid

    if task.name == "nusax-senti":
        return load_split(task.name, lang, "valid", data_dir)
    return load_train_valid(task.name, lang, data_dir)[1]


def discovery_sample(task, lang: str, per_class: int, seed: int, data_dir=None, exclude_ids=()) -> list:
    """A label-balanced discovery sample: held-out sentences first, then training sentences, never test.

    While the held-out pool (`discovery_pool`) has `per_class` sentences of every label, this is
    `balanced_sample` of that pool (the first round's samples, unchanged). NusaX valid has only
    38/24/38 sentences per label, so a larger sample (the pre-registered 150 sentences, 50 per
    label) takes each label's valid sentences and fills the rest from train, seeded
    (analyses/README.md, "Second round"). `exclude_ids` keeps a sample disjoint from another.
    """
    import random

    from circuit_transfer.data import load_split
    from circuit_transfer.tasks import balanced_sample

    excluded = set(exclude_ids)
    held_out = [ex for ex in discovery_pool(task, lang, data_dir) if ex.id not in excluded]
    counts = [sum(ex.label == label for ex in held_out) for label in range(task.n_labels)]
    if min(counts) >= per_class or task.name != "nusax-senti":
        return balanced_sample(held_out, per_class, seed, task.n_labels)
    train = [ex for ex in load_split(task.name, lang, "train", data_dir) if ex.id not in excluded]
    rng = random.Random(seed)
    chosen = []
    for label in range(task.n_labels):
        first = [ex for ex in held_out if ex.label == label]
        then = [ex for ex in train if ex.label == label]
        rng.shuffle(first)
        rng.shuffle(then)
        if len(first) + len(then) < per_class:
            raise ValueError(
                f"Cannot take {per_class} discovery sentences of label {label} in {lang}: valid and train "
                f"hold {len(first) + len(then)} (after excluding {len(excluded)}); use a smaller size."
            )
        chosen.extend((first + then)[:per_class])
    rng.shuffle(chosen)
    return chosen


def k_heads(k: float, n_total: int) -> int:
    """Heads for a fraction `k` of all heads (at least 1), or `k` itself when it is a count >= 1."""
    return int(k) if k >= 1 else max(1, round(k * n_total))


def jsonable(x: Any) -> Any:
    """Tuples to lists, recursively, so a round trip through JSON gives back the same object."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def ensure_transfer_results(
    results_dir: Path, quick: bool, proxy: Path | None, script: str = "nusax"
) -> Path:
    """A transfer results folder for the analyses that read experiment 1 (or 2).

    In quick mode a missing folder is filled by that experiment's own quick mode (which resumes), so
    every script runs end to end on its own; in full mode the folder must already exist.
    """
    results_dir = Path(results_dir)
    if not (results_dir / "records.json").exists():
        if not quick:
            raise SystemExit(
                f"no transfer results under {results_dir}: run analyses/{script}_transfer.py first "
                "(or pass --quick to produce small ones)."
            )
        if script == "nusax":
            import nusax_transfer as experiment
        else:
            import xnli_transfer as experiment
        argv = ["--quick", "--out", str(results_dir), *(["--proxy", str(proxy)] if proxy else [])]
        if results_dir != default_out(f"{script}_transfer", True):
            argv += ["--work", str(results_dir / "work")]
        experiment.main(argv)
    return results_dir


def paired(
    records: Sequence[dict], a: str, b: str, value: Callable[[dict], float | None]
) -> dict[tuple, list]:
    """Per-seed differences value(a) - value(b) between two methods on the same cell.

    A cell is (proxy_lang, target, n_train, k); method b's run with the same k is used, or its
    k-free run (`full`, `ln-only`, `zero-shot`, whose n_train/seed may differ) when it has none.
    Returns {(proxy_lang, target, n_train, k): [differences, one per seed]}.
    """
    index: dict[tuple, dict] = {}
    for r in records:
        index[
            (r["proxy_lang"], r["target"], r["method"], r.get("k_fraction"), r["data"]["n_train"], r["seed"])
        ] = r
    out: dict[tuple, list[float]] = {}
    for (pl, tg, m, k, n, seed), ra in sorted(index.items(), key=lambda kv: str(kv[0])):
        if m != a:
            continue
        rb = (
            index.get((pl, tg, b, k, n, seed))
            or index.get((pl, tg, b, None, n, seed))
            or index.get((pl, tg, b, None, 0, 0))
        )
        if rb is None or value(ra) is None or value(rb) is None:
            continue
        out.setdefault((pl, tg, n, k), []).append(value(ra) - value(rb))
    return out
