"""The second round's report (`analyses/round2_report.py`) on a hand-made results tree."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "analyses"))

from round2_report import main  # noqa: E402

from circuit_transfer.io import atomic_write_json, read_json  # noqa: E402


def _contrast(target, other, measure, lang, difference, lo, hi, p, p_holm):
    boot = {"difference": difference, "lo": lo, "hi": hi, "p": p}
    return {"cell": ["ind", target, 100, 0.05], "versus": other, "measure": measure, "language": lang,
            "bootstrap": boot, "p_holm": p_holm}  # fmt: skip


def test_report_reads_the_choices_and_recomputes_verdicts_from_the_contrasts(tmp_path):
    model = tmp_path / "gemma3-270m"
    atomic_write_json(model / "proxy-ind.json", {"lang": "ind", "task": {"name": "nusax-senti"},
                      "test": {"accuracy": 0.89, "macro_f1": 0.88, "n": 400}})  # fmt: skip
    stability = [{"estimator": "cdt", "size": 30, "jaccard": {"mean": 0.9}, "spearman": {"mean": 1.0}}]
    atomic_write_json(model / "discovery_size" / "stability.json", {"summary": {"stability": stability}})
    readouts = [{"lang": "eng", "macro_f1": 0.9, "predicted_counts": [130, 130, 140]}]
    atomic_write_json(model / "readouts" / "eval-ind.json", {"results": readouts})
    chosen = {
        "ind": {
            "full": {"lr": 3e-5, "mean_best_valid_accuracy": 0.7, "by_lr": {"3e-05": 0.7, "0.0001": 0.65}}
        }
    }
    atomic_write_json(model / "lr_nusax" / "selection.json",
                      {"chosen": chosen, "epoch0_would_win": {"runs": 1, "of": 8}})  # fmt: skip
    contrasts = [
        _contrast("jav", "full", "target accuracy", "jav", 0.05, 0.01, 0.09, 0.004, 0.02),
        _contrast("bug", "full", "target accuracy", "bug", -0.06, -0.1, -0.02, 0.001, 0.01),
        {"cell": ["ind", "jav", 100, 0.05], "versus": "full", "measure": "forgetting", "language": "bbc",
         "excluded": "degenerate readout: label 2 is predicted for 18 of 400 (< 5%)"},
    ]  # fmt: skip
    summary = {
        "n_runs": 7,
        "rows": [{"target": "jav"}, {"target": "bug"}],
        "preregistered": {"family_size": 2, "contrasts": contrasts},
    }  # no verdicts: an older summary
    atomic_write_json(model / "nusax_primary" / "summary.json", summary)

    main(["--root", str(tmp_path)])
    report = read_json(tmp_path / "report.json")["models"]["gemma3-270m"]
    assert report["choices"]["discovery_per_class"] == 10 and report["choices"]["ret"]["nusax"] == "eng"
    assert report["choices"]["ret"]["xnli"] is None  # not decided yet, not an error
    assert report["choices"]["rates"]["NusaX/ind/full"]["lr"] == 3e-5
    claim1 = report["families"]["nusax_primary"]["verdicts"][0]
    assert (claim1["verdict"], claim1["supported"], claim1["significant_against"]) == (
        "partly",
        ["jav/jav"],
        ["bug/bug"],
    )
    assert report["families"]["xnli"] is None
    text = (tmp_path / "report.md").read_text()
    assert re.search(r"proxy ind \(nusax-senti\) test accuracy % \(n\)\s*\|\s*89\.0 \(400\)", text)
    assert "targets bug, jav: verdicts (7 runs, 2 tested contrasts)" in text
    assert "+5.0 [+1.0, +9.0]" in text and "-6.0 [-10.0, -2.0]" in text and "0.0200" in text
    assert "degenerate readout: label 2" in text
    assert "XNLI family (sw, ur) (`xnli`): not run yet" in text
    assert re.search(r"NusaX: epoch 0 would have won\s*\|\s*1 of 8 runs", text)


def test_an_incomplete_learning_rate_grid_chooses_nothing_and_the_sweep_refuses_it(tmp_path):
    import pytest
    from lr_selection import select
    from sweep import chosen_lrs

    def record(method, target, lr, valid):
        return {"proxy_lang": "ind", "target": target, "method": method, "k_fraction": None,
                "train_config": {"optim": {"lr": lr}, "start_is_candidate": False},
                "curve": [{"valid_accuracy": 0.3}, {"valid_accuracy": valid}], "best_epoch": 1,
                "target_accuracy": valid}  # fmt: skip

    records = [record("ct-sft", t, lr, v) for t in ("jav", "bug") for lr, v in ((1e-4, 0.6), (3e-4, 0.7))]
    records += [record("full", "jav", 1e-4, 0.8)]  # full has not run bug, nor 3e-4
    chosen = select(records)["chosen"]["ind"]
    assert (chosen["ct-sft"]["lr"], chosen["ct-sft"]["complete"]) == (3e-4, True)
    assert (chosen["full"]["lr"], chosen["full"]["complete"]) == (None, False)
    atomic_write_json(tmp_path / "selection.json", {"chosen": {"ind": chosen}})
    with pytest.raises(SystemExit, match="the selection for full .* is incomplete"):
        chosen_lrs(tmp_path / "selection.json")
    del chosen["full"]
    atomic_write_json(tmp_path / "selection.json", {"chosen": {"ind": chosen}})
    assert chosen_lrs(tmp_path / "selection.json") == {"ind": {"ct-sft": 3e-4}}
