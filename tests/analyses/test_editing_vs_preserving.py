"""The trade-off reader on hand-made records: two results folders (a family and a wider grid) pool."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "analyses"))

import editing_vs_preserving  # noqa: E402

from circuit_transfer.io import atomic_write_json  # noqa: E402


def _record(target, method, seed, accuracy, zero_shot):
    k = None if method == "zero-shot" else 0.05
    before = {"ind": {"accuracy": 0.9}, target: {"accuracy": zero_shot}}
    return {"_path": f"ind/{target}/{method}/seed{seed}", "proxy_lang": "ind", "target": target, "method": method,
            "k_fraction": k, "data": {"n_train": 0 if method == "zero-shot" else 100}, "seed": seed,
            "target_accuracy": accuracy, "before": before}  # fmt: skip


def test_pooled_folders_give_one_point_per_target_and_the_gap_from_zero_shot(tmp_path):
    folders = {"primary": ("jav", 0.7), "wider": ("sun", 0.5)}
    for name, (target, zero) in folders.items():
        records = [_record(target, "zero-shot", 0, zero, zero)]
        for seed, (ct, nz) in enumerate([(0.75, 0.70), (0.77, 0.70), (0.79, 0.70)]):
            records += [
                _record(target, "ct-sft", seed, ct, zero),
                _record(target, "near-zero", seed, nz, zero),
            ]
        atomic_write_json(tmp_path / name / "records.json", records)
    argv = ["--nusax", str(tmp_path / "primary"), str(tmp_path / "wider"), "--out", str(tmp_path / "out")]
    data = editing_vs_preserving.main(argv)
    points = {p["target"]: p for p in data["points"]}
    assert sorted(points) == ["jav", "sun"]
    assert abs(points["jav"]["gap"] - 0.2) < 1e-12 and abs(points["sun"]["gap"] - 0.4) < 1e-12
    assert abs(points["sun"]["ct_sft_minus_near_zero"]["mean"] - 0.07) < 1e-12
    (group,) = [c for c in data["correlations"] if c["group"] == "nusax-senti/100/0.05"]
    assert group["points"] == 2
    assert data["sources"]["nusax-senti"] == [str(tmp_path / "primary"), str(tmp_path / "wider")]
