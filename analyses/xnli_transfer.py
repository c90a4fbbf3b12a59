"""Experiment 2: XNLI cross-lingual transfer from an English proxy.

The proxy is trained on English XNLI dev (cut 80/20 into train/valid by `load_train_valid`, XNLI has
no train split) and evaluated on test; targets (sw, ur, ...) get n_train examples of their own dev
80% cut. Same methods and reporting as `nusax_transfer.py`. Retention language: one untouched XNLI
language (default German, far from the Swahili/Urdu targets).

    python analyses/xnli_transfer.py --quick
    OMP_NUM_THREADS=1 python analyses/xnli_transfer.py --targets sw --seeds 0 --methods zero-shot full ct-sft near-zero
    python analyses/xnli_transfer.py --tables-only
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep import run_sweep  # noqa: E402

NAME = "xnli_transfer"
FULL = dict(
    model="smollm2-135m",
    proxy_langs=["en"],
    targets=["sw", "ur", "hi", "ar", "fr"],
    methods=["zero-shot", "full", "ct-sft", "near-zero", "random", "ln-only"],
    k=[0.01, 0.03, 0.05, 0.10],
    n_train=[100, 500],
    n_test=300,
    n_valid=200,
    epochs=3,
    lr=1e-4,
    retention=["de"],
    seeds=[0, 1, 2],
    max_len=128,
    batch_size=8,
    discovery_per_class=10,
)
QUICK = dict(
    model="tiny",
    proxy_langs=["en"],
    targets=["sw"],
    methods=["zero-shot", "full", "ct-sft"],
    k=[0.25],
    n_train=[30],
    n_test=60,
    n_valid=40,
    epochs=1,
    lr=1e-3,
    seeds=[0],
    max_len=64,
    discovery_per_class=4,
    proxy_epochs=2,
)
NOTES = [
    "XNLI has no train split: every language's dev set is cut 80/20 into train/valid "
    "(circuit_transfer.proxy.load_train_valid); test sentences are the XNLI test split. "
    "XNLI is parallel too (translations of the same English sentences), so also read the retention column."
]


def main(argv: list[str] | None = None) -> dict:
    return run_sweep(argv, name=NAME, task_name="xnli", defaults=FULL, quick=QUICK, anchors=NOTES)


if __name__ == "__main__":
    main()
