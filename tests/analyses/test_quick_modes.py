"""Every analysis script's --quick mode end to end: outputs exist, tables rebuild from JSON, resume.

One tiny NusaX proxy is trained per session and shared; experiment 1's quick results are produced
once and read by experiments 3 and 5. XNLI trains its own (2-epoch) tiny proxy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ANALYSES = Path(__file__).resolve().parents[2] / "analyses"
sys.path.insert(0, str(ANALYSES))

import circuits_across_languages  # noqa: E402
import editing_vs_preserving  # noqa: E402
import forgetting  # noqa: E402
import lr_selection  # noqa: E402
import nusax_transfer  # noqa: E402
import xnli_transfer  # noqa: E402

from circuit_transfer.io import read_json  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def nusax_results(tmp_path_factory, tiny_proxy) -> Path:
    out = tmp_path_factory.mktemp("nusax_transfer")
    nusax_transfer.main(
        ["--quick", "--proxy", str(tiny_proxy), "--out", str(out), "--work", str(out / "work")]
    )
    return out


def _mtimes(out: Path) -> dict[str, float]:
    """Modification times of the per-run result files (work folder: <out>/work in these tests)."""
    return {str(p): p.stat().st_mtime_ns for p in sorted(out.glob("work/runs/**/result.json"))}


def _check_sweep(module, out: Path, argv: list[str]) -> None:
    summary = read_json(out / "summary.json")
    table = (out / "table.md").read_text()
    methods = {r["method"] for r in summary["rows"]}
    assert {"zero-shot", "full", "ct-sft"} <= methods
    for row in summary["rows"]:
        acc = row["target_accuracy"]
        assert acc["n"] >= 1 and 0.0 <= acc["mean"] <= 1.0
    full = next(r for r in summary["rows"] if r["method"] == "full")
    ct = next(r for r in summary["rows"] if r["method"] == "ct-sft")
    assert ct["params_trainable_fraction"]["mean"] < full["params_trainable_fraction"]["mean"] == 1.0
    assert summary["retention_langs"], "a retention language must be evaluated"
    assert len(read_json(out / "records.json")) == summary["n_runs"] == len(_mtimes(out))
    assert "n=1, no CI" in table
    versus_full = next(c for c in summary["contrasts"] if c["other"] == "full")
    assert versus_full["difference"]["mean"] == pytest.approx(
        ct["target_accuracy"]["mean"] - full["target_accuracy"]["mean"]
    )
    assert "CT-SFT against each other method (paired per seed)" in table

    # per-item predictions are kept beside the records, and the pre-registered family is tested on them
    assert len(list((out / "predictions").glob("*.npz"))) == summary["n_runs"]
    family = summary["preregistered"]
    tested = [c for c in family["contrasts"] if "bootstrap" in c]
    assert tested and family["family_size"] >= len(tested)
    for c in tested:
        boot = c["bootstrap"]
        assert boot["lo"] <= boot["difference"] <= boot["hi"] and c["p_holm"] >= boot["p"]
    on_target = next(c for c in tested if c["measure"] == "target accuracy" and c["versus"] == "full")
    assert on_target["bootstrap"]["difference"] == pytest.approx(versus_full["difference"]["mean"])
    assert set(summary["readouts"]) and "Pre-registered contrasts" in table

    # the table is a function of the JSON alone
    (out / "table.md").unlink()
    module.main([*argv, "--tables-only"])
    assert (out / "table.md").read_text() == table

    # resume: a second invocation trains nothing
    before = _mtimes(out)
    assert before
    module.main(argv)
    assert _mtimes(out) == before
    manifest = read_json(out / "manifest.json")
    latest = manifest["invocations"][manifest["latest"]]
    assert latest["runs_done"] == 0 and latest["runs_skipped"] == len(before)
    assert latest["finished"] and {"torch", "transformer_lens", "circuit_transfer"} <= set(latest["versions"])
    assert {"OMP_NUM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "DNNL_MAX_CPU_ISA"} <= set(
        latest["env"]
    )
    assert (out / "table.md").read_text() == table


def test_nusax_transfer_quick(nusax_results, tiny_proxy):
    argv = [
        "--quick",
        "--proxy",
        str(tiny_proxy),
        "--out",
        str(nusax_results),
        "--work",
        str(nusax_results / "work"),
    ]
    _check_sweep(nusax_transfer, nusax_results, argv)
    assert "TF-IDF" in (nusax_results / "table.md").read_text()


def test_xnli_transfer_quick(tmp_path, data_dir):
    argv = ["--quick", "--out", str(tmp_path), "--work", str(tmp_path / "work")]
    argv += ["--methods", "zero-shot", "full", "ct-sft"]
    xnli_transfer.main(argv)
    _check_sweep(xnli_transfer, tmp_path, argv)


@pytest.mark.parametrize(
    "module, json_name",
    [(editing_vs_preserving, "tradeoff.json"), (forgetting, "forgetting.json")],
)
def test_readers_of_experiment_1(module, json_name, nusax_results, tmp_path):
    src = "--nusax" if module is editing_vs_preserving else "--transfer"
    before = _mtimes(nusax_results)
    data = module.main(["--quick", src, str(nusax_results), "--out", str(tmp_path)])
    assert _mtimes(nusax_results) == before, "reading experiment 1 must not rerun it"
    assert (tmp_path / json_name).exists() and (tmp_path / "manifest.json").exists()
    table = (tmp_path / "table.md").read_text()
    module.main(["--tables-only", "--out", str(tmp_path)])
    assert (tmp_path / "table.md").read_text() == table
    if module is forgetting:
        (part,) = data["sources"].values()
        assert any(c["versus"] == "full" for c in part["contrasts"])
        assert "eng" in part["retention_langs"]
    else:
        assert data["points"] and data["points"][0]["target"] == "jav"


def test_circuits_across_languages_quick(tiny_proxy, nusax_results, tmp_path):
    argv = ["--quick", "--proxy", str(tiny_proxy), "--transfer", str(nusax_results), "--out", str(tmp_path)]
    data = circuits_across_languages.main(argv)
    langs = data["langs"]
    assert len(langs) >= 2
    diag = [p for p in data["pairs"] if p["a"] == p["b"]]
    assert all(p["jaccard"] == 1.0 for p in diag)
    assert data["join"], "experiment 1's ct-sft runs should be joined"
    main_ids = set(read_json(tmp_path / "scores" / "ind.json")["scores"]["extra"]["example_ids"])
    resample_ids = set(
        read_json(tmp_path / "scores" / "ind-resample1.json")["scores"]["extra"]["example_ids"]
    )
    assert resample_ids and not main_ids & resample_ids, "the within-language baseline uses other sentences"
    [within] = data["within_language"]
    assert 0.0 <= within["jaccard"] <= 1.0 and within["seed"] == 1
    table = (tmp_path / "table.md").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "scores").glob("*.json")}
    circuits_across_languages.main(argv)  # cached scores: no rediscovery
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "scores").glob("*.json")} == mtimes
    circuits_across_languages.main([*argv, "--tables-only"])
    assert (tmp_path / "table.md").read_text() == table


def test_lr_selection_quick_and_the_sweep_that_uses_it(tiny_proxy, tmp_path):
    argv = ["--quick", "--proxy", str(tiny_proxy), "--out", str(tmp_path), "--work", str(tmp_path / "work")]
    data = lr_selection.main(argv)
    chosen = data["chosen"]["ind"]
    assert set(chosen) == {"full", "ct-sft"}
    for method, pick in chosen.items():
        curves = [c for c in data["curves"] if c["method"] == method]
        assert sorted(c["lr"] for c in curves) == lr_selection.QUICK_GRID
        assert all(c["best_epoch"] >= 1 for c in curves), "epoch 0 is not a candidate"
        best = max(curves, key=lambda c: (c["best_valid_accuracy"], -c["lr"]))
        assert pick["lr"] == best["lr"] and pick["mean_best_valid_accuracy"] == best["best_valid_accuracy"]
        for c in curves:
            assert c["best_valid_accuracy"] == max(c["valid_accuracy"][1:])
    assert data["epoch0_would_win"]["of"] == len(data["curves"]) == 4
    table = (tmp_path / "table.md").read_text()
    lr_selection.main([*argv, "--tables-only"])
    assert (tmp_path / "table.md").read_text() == table

    sweep_out = tmp_path / "sweep"
    sweep_argv = ["--quick", "--proxy", str(tiny_proxy), "--out", str(sweep_out), "--work", str(sweep_out / "work"),
                  "--methods", "full", "ct-sft", "--lr-from", str(tmp_path / "selection.json"), "--exclude-epoch0"]  # fmt: skip
    nusax_transfer.main(sweep_argv)
    for record in read_json(sweep_out / "records.json"):
        assert record["train_config"]["optim"]["lr"] == chosen[record["method"]]["lr"]
        assert record["train_config"]["start_is_candidate"] is False and record["best_epoch"] >= 1
    with pytest.raises(SystemExit, match="was trained with"):
        nusax_transfer.main([a for a in sweep_argv if a != "--exclude-epoch0"])


def test_discovery_size_quick(tiny_proxy, tmp_path):
    import discovery_size

    argv = ["--quick", "--proxy", str(tiny_proxy), "--out", str(tmp_path)]
    data = discovery_size.main(argv)
    rows = data["summary"]["stability"]
    assert {(r["estimator"], r["size"]) for r in rows} == {
        (e, n) for e in discovery_size.ESTIMATORS for n in discovery_size.QUICK["sizes"]
    }
    for r in data["stability"]:
        assert 0.0 <= r["jaccard"] <= 1.0 and -1.0 <= r["spearman"] <= 1.0
    # the two samples of a pair share no sentence, and a pair's samples differ between repeats
    scores = tmp_path / "scores"
    ids = {p.stem: set(read_json(p)["scores"]["extra"]["example_ids"]) for p in scores.glob("*.json")}
    assert not ids["cdt-n12-r0-a"] & ids["cdt-n12-r0-b"] and len(ids["cdt-n12-r0-a"]) == 12
    assert ids["cdt-n12-r0-a"] != ids["cdt-n12-r1-a"]
    assert ids["cdt-n12-r0-a"] == ids["ablation-n12-r0-a"], "estimators are compared on the same samples"
    assert len(data["agreement"]) == 3 * discovery_size.QUICK["repeats"]
    for f in data["faithfulness"]:
        assert len(f["random"]) == 3 and len(f["heads"]) == data["k"] == 2
    assert set(data["summary"]["recommended"]) == set(discovery_size.ESTIMATORS)
    table = (tmp_path / "table.md").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in scores.glob("*.json")}
    assert discovery_size.main(argv)["stability"] == data["stability"]  # cached scores: no rediscovery
    assert {p: p.stat().st_mtime_ns for p in scores.glob("*.json")} == mtimes
    discovery_size.main([*argv, "--tables-only"])
    assert (tmp_path / "table.md").read_text() == table
