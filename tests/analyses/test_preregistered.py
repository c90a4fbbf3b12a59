"""The sweeps' pre-registered family on constructed runs: signs, pairing, degenerate readouts, Holm."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "analyses"))

from sweep import predictions_path, preregistered, readout_checks  # noqa: E402

from circuit_transfer.evaluate import ItemPredictions, save_predictions  # noqa: E402
from circuit_transfer.statistics import holm, paired_bootstrap  # noqa: E402

N = 20
IDS = tuple(f"t{i}" for i in range(N))
BEFORE = {
    "jav": {"predicted_counts": [7, 6, 7]},
    "ind": {"predicted_counts": [8, 5, 7]},
    "eng": {"predicted_counts": [18, 1, 1]},  # degenerate: one label for 90%
}


def _items(n_correct: int) -> ItemPredictions:
    gold = torch.zeros(N, dtype=torch.long)
    predicted = torch.where(torch.arange(N) < n_correct, 0, 1)
    return ItemPredictions(IDS, gold, predicted, torch.zeros(N, 3))


def _run(out: Path, method: str, seed: int, correct: dict[str, int]) -> dict:
    k = 0.05 if method in ("ct-sft", "near-zero") else None
    record = {
        "proxy_lang": "ind", "target": "jav", "method": method, "k_fraction": k, "seed": seed,
        "data": {"n_train": 100}, "before": BEFORE, "_path": f"ind/jav/{method}/n100/seed{seed}",
    }  # fmt: skip
    save_predictions(
        predictions_path(out, record), {f"after/{lang}": _items(c) for lang, c in correct.items()}
    )
    return record


def test_family_signs_exclusions_and_holm(tmp_path):
    records = []
    for seed in (0, 1):
        records.append(_run(tmp_path, "ct-sft", seed, {"jav": 12 + seed, "ind": 15, "eng": 5}))
        records.append(_run(tmp_path, "full", seed, {"jav": 8, "ind": 10, "eng": 5}))
        records.append(_run(tmp_path, "near-zero", seed, {"jav": 12, "ind": 16, "eng": 5}))
    readouts = readout_checks(records)
    assert readouts["ind/eng"]["degenerate"] and not readouts["ind/ind"]["degenerate"]
    family = preregistered(tmp_path, records, readouts)
    by = {(c["versus"], c["language"]): c for c in family["contrasts"]}
    assert len(by) == 9  # full, near-zero, random x jav, ind, eng
    # target accuracy: CT-SFT (12, 13 of 20) minus full (8, 8): +0.225
    assert by[("full", "jav")]["bootstrap"]["difference"] == pytest.approx(0.225)
    assert by[("full", "jav")]["measure"] == "target accuracy" and by[("full", "jav")]["seeds"] == [0, 1]
    # forgetting: drop(ct-sft) - drop(full) = after(full) - after(ct-sft) = (10 - 15) / 20: CT-SFT forgets less
    assert by[("full", "ind")]["bootstrap"]["difference"] == pytest.approx(-0.25)
    assert by[("near-zero", "ind")]["bootstrap"]["difference"] == pytest.approx(0.05)
    assert by[("full", "ind")]["measure"] == "forgetting"
    # a degenerate retention readout is excluded, a control that never ran stays in the family
    assert all("excluded" in by[(o, "eng")] for o in ("full", "near-zero", "random"))
    assert "bootstrap" not in by[("random", "jav")] and by[("random", "jav")]["p_holm"] is None
    assert by[("random", "jav")]["missing"] == "no random run yet"  # not blamed on predictions
    assert family["family_size"] == 6
    # the bootstrap is the paired one over the seeds' items, and Holm runs over all six (two missing)
    ct = [_items(12).correct.numpy(), _items(13).correct.numpy()]
    full = [_items(8).correct.numpy()] * 2
    assert by[("full", "jav")]["bootstrap"] == paired_bootstrap(ct, full)
    tested = {
        k: c["bootstrap"]["p"] if "bootstrap" in c else None for k, c in by.items() if "excluded" not in c
    }
    expected = holm({str(k): p for k, p in tested.items()})
    for k in tested:
        assert by[k]["p_holm"] == expected[str(k)]


def test_runs_without_stored_predictions_are_named_as_such(tmp_path):
    ct = _run(tmp_path, "ct-sft", 0, {"jav": 12, "ind": 15})
    full = _run(tmp_path, "full", 0, {"jav": 8, "ind": 10})
    predictions_path(tmp_path, full).unlink()  # a first-round run: the record, no predictions
    by = {
        (c["versus"], c["language"]): c
        for c in preregistered(tmp_path, [ct, full], readout_checks([ct, full]))["contrasts"]
    }
    assert by[("full", "jav")]["missing"] == "no per-item predictions"
    assert by[("near-zero", "jav")]["missing"] == "no near-zero run yet"


def test_other_items_are_refused(tmp_path):
    ct = _run(tmp_path, "ct-sft", 0, {"jav": 12, "ind": 15})
    full = _run(tmp_path, "full", 0, {"jav": 8, "ind": 10})
    other = ItemPredictions(tuple(reversed(IDS)), *(_items(8).gold, _items(8).predicted, torch.zeros(N, 3)))
    save_predictions(predictions_path(tmp_path, full), {"after/jav": other, "after/ind": _items(10)})
    with pytest.raises(SystemExit, match="tested on other jav items"):
        preregistered(tmp_path, [ct, full], readout_checks([ct, full]))


def test_degenerate_readouts_of_the_first_round_are_caught():
    from circuit_transfer.evaluate import degenerate_readout

    assert "166 of 200" in degenerate_readout([14, 166, 20])  # English NusaX: neutral for 166 of 200
    assert "label 1 is predicted for 0 of 200" in degenerate_readout([120, 0, 80])  # never the middle label
    assert degenerate_readout([70, 60, 70]) is None
    assert degenerate_readout([150, 40, 10]) is None  # 75% and 5% are allowed


def test_verdicts_follow_the_preregistered_rule_with_the_claimed_sign_per_measure():
    from sweep import verdicts

    def unit(other, measure, target, lang, difference, p_holm):
        return {
            "cell": ["ind", target, 100, 0.05],
            "versus": other,
            "measure": measure,
            "language": lang,
            "bootstrap": {"difference": difference, "p": p_holm},
            "p_holm": p_holm,
        }

    family = [
        unit("full", "target accuracy", "jav", "jav", 0.05, 0.01),  # claim 1: both targets -> holds
        unit("full", "target accuracy", "bug", "bug", 0.04, 0.03),
        unit("near-zero", "target accuracy", "jav", "jav", 0.05, 0.01),  # claim 2: one of two -> partly
        unit("near-zero", "target accuracy", "bug", "bug", 0.02, 0.20),
        unit("random", "target accuracy", "jav", "jav", -0.05, 0.01),  # claim 3: wrong sign -> not supported
        unit("random", "target accuracy", "bug", "bug", 0.01, 0.50),
        unit("full", "forgetting", "jav", "eng", -0.10, 0.001),  # claim 4: a smaller drop is the claim
        unit("full", "forgetting", "jav", "ind", -0.08, 0.002),
        unit("near-zero", "forgetting", "jav", "eng", 0.10, 0.001),  # claim 5: a larger drop -> against
        {"cell": ["ind", "jav", 100, 0.05], "versus": "random", "measure": "forgetting", "language": "eng",
         "excluded": "degenerate readout"},  # claim 6: nothing tested
    ]  # fmt: skip
    got = {v["claim"]: v for v in verdicts(family)}
    assert [got[i]["verdict"] for i in range(1, 7)] == [
        "holds", "partly", "not supported", "holds", "not supported", "not tested"
    ]  # fmt: skip
    assert got[2]["supported"] == ["jav/jav"] and got[2]["units"] == 2
    assert got[3]["significant_against"] == ["jav/jav"]
    assert got[5]["significant_against"] == ["jav/eng"] and got[5]["supported"] == []
    assert got[1]["significant_against"] == [] and got[6]["units"] == 0


def test_no_claim_is_decided_until_every_contrast_has_every_requested_seed(tmp_path):
    records = []
    for seed in (0, 1):
        for method in ("ct-sft", "full", "near-zero", "random"):
            records.append(_run(tmp_path, method, seed, {"jav": 18 if method == "ct-sft" else 6, "ind": 15}))
    readouts = readout_checks(records)
    family = preregistered(tmp_path, records, readouts, requested=[0, 1])
    assert family["complete"] and family["seeds"] == [0, 1]
    assert {v["verdict"] for v in family["verdicts"][:3]} <= {"holds", "partly", "not supported"}
    asked_more = preregistered(tmp_path, records, readouts, requested=[0, 1, 2])  # seed 2 not run yet
    assert not asked_more["complete"]
    assert {v["verdict"] for v in asked_more["verdicts"]} == {"not decided (family incomplete)"}
    one_missing = [r for r in records if not (r["method"] == "random" and r["seed"] == 1)]
    partial = preregistered(tmp_path, one_missing, readouts)  # default: every seed among the records
    assert not partial["complete"]
    assert {v["verdict"] for v in partial["verdicts"]} == {"not decided (family incomplete)"}


def test_records_without_item_predictions_decide_nothing():
    from sweep import verdicts

    no_predictions = [  # the first round's records: the contrasts exist, their bootstraps do not
        {"cell": ["ind", "jav", 100, 0.05], "versus": other, "measure": "target accuracy", "language": "jav",
         "p_holm": None}
        for other in ("full", "near-zero", "random")
    ]  # fmt: skip
    got = {v["verdict"] for v in verdicts(no_predictions, complete=True)}
    assert got == {"not decided (no per-item predictions stored)"}
    # A family with runs still missing says so, even while none of its contrasts has both sides
    # (e.g. only the ct-sft runs done): the missing runs, not missing predictions, are the reason.
    got = {v["verdict"] for v in verdicts(no_predictions, complete=False)}
    assert got == {"not decided (family incomplete)"}
