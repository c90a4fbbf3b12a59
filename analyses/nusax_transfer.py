"""Experiment 1: NusaX-Senti cross-lingual transfer from an Indonesian (and optionally English) proxy.

Targets are other NusaX languages; methods zero-shot, full, ct-sft, near-zero, random, ln-only; a
sweep over k (fractions of heads), n_train and seeds. Reports target accuracy / macro-F1 with 95%
CIs over seeds, proxy-language forgetting, retention on an untouched far language (English), and
the number of parameters changed, beside the TF-IDF anchors of docs/method.md §7 (quoted, not computed).

    python analyses/nusax_transfer.py --quick                 # tiny model, ~1-2 minutes
    OMP_NUM_THREADS=1 python analyses/nusax_transfer.py       # SmolLM2-135M, full defaults
    python analyses/nusax_transfer.py --tables-only           # rebuild summary.json + table.md
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import NUSAX_ANCHORS, TFIDF_FROM_IND  # noqa: E402
from sweep import run_sweep  # noqa: E402

NAME = "nusax_transfer"
FULL = dict(
    model="smollm2-135m",
    proxy_langs=["ind", "eng"],
    targets=["jav", "sun", "bug"],
    methods=["zero-shot", "full", "ct-sft", "near-zero", "random", "ln-only"],
    k=[0.01, 0.03, 0.05, 0.10],
    n_train=[100, 500],
    n_test=200,
    epochs=3,
    lr=1e-4,
    retention=["eng"],
    seeds=[0, 1, 2],
    max_len=64,
    batch_size=8,
    discovery_per_class=10,
)
QUICK = dict(
    model="tiny",
    proxy_langs=["ind"],
    targets=["jav"],
    methods=["zero-shot", "full", "ct-sft", "near-zero"],
    k=[0.25],
    n_train=[30],
    n_test=60,
    epochs=1,
    lr=1e-3,
    seeds=[0],
    discovery_per_class=4,
)


# Quoted TF-IDF reference (trained on Indonesian, docs/method.md §7), shown beside Indonesian-proxy rows.
ANCHOR = (
    "TF-IDF(ind) % [quoted]",
    lambda r: (
        f"{100 * TFIDF_FROM_IND[r['target']]:.1f}"
        if r["proxy_lang"] == "ind" and r["target"] in TFIDF_FROM_IND
        else "-"
    ),
)


def main(argv: list[str] | None = None) -> dict:
    return run_sweep(
        argv,
        name=NAME,
        task_name="nusax-senti",
        defaults=FULL,
        quick=QUICK,
        anchors=[NUSAX_ANCHORS],
        anchor=ANCHOR,
    )


if __name__ == "__main__":
    main()
