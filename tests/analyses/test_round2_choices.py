"""The second round's pre-registered choices (`analyses/round2_choices.py`) on hand-made JSON."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "analyses"))

from round2_choices import discovery_per_class, retention_language  # noqa: E402

from circuit_transfer.io import atomic_write_json, read_json  # noqa: E402


def _readouts(tmp_path: Path, rows: list[tuple[str, float, list[int]]]) -> Path:
    results = [{"lang": lang, "macro_f1": f1, "predicted_counts": counts} for lang, f1, counts in rows]
    atomic_write_json(tmp_path / "readouts" / "eval-ind.json", {"results": results})
    return tmp_path


def test_retention_is_the_best_non_degenerate_language_that_is_neither_proxy_nor_target(tmp_path):
    results = _readouts(
        tmp_path,
        [
            ("ind", 0.9, [130, 130, 140]),  # the proxy: never
            ("jav", 0.8, [130, 130, 140]),  # a target: never
            ("min", 0.8, [130, 130, 140]),  # a secondary target: never
            ("eng", 0.7, [10, 370, 20]),  # one label takes 92%: degenerate
            ("mad", 0.6, [200, 190, 10]),  # a label under 5%: degenerate
            ("ban", 0.5, [150, 100, 150]),
            ("bjn", 0.55, [140, 120, 140]),
        ],
    )
    assert retention_language(results) == "bjn"


def test_xnli_retention_excludes_the_english_proxy_and_the_xnli_targets_and_reads_its_own_file(tmp_path):
    rows = [("en", 0.9, [330, 330, 340]), ("hi", 0.8, [330, 330, 340]), ("de", 0.7, [900, 50, 50])]
    rows += [("fr", 0.6, [330, 330, 340]), ("es", 0.65, [330, 330, 340])]
    results = [{"lang": lang, "macro_f1": f1, "predicted_counts": counts} for lang, f1, counts in rows]
    atomic_write_json(tmp_path / "readouts" / "eval-xnli-en.json", {"results": results})
    assert retention_language(tmp_path, "xnli") == "es"  # de: one label takes 90%
    with pytest.raises(SystemExit, match="eval-ind.json is missing"):
        retention_language(tmp_path, "nusax")


def test_no_usable_retention_language_is_refused(tmp_path):
    results = _readouts(tmp_path, [("ind", 0.9, [130, 130, 140]), ("eng", 0.7, [10, 370, 20])])
    with pytest.raises(SystemExit, match="non-degenerate"):
        retention_language(results)


def _stability(tmp_path: Path, rows: list[tuple[int, float, float]]) -> Path:
    stability = [
        {"estimator": "cdt", "size": size, "jaccard": {"mean": j}, "spearman": {"mean": rho}}
        for size, j, rho in rows
    ] + [{"estimator": "attribution", "size": 30, "jaccard": {"mean": 1.0}, "spearman": {"mean": 1.0}}]
    atomic_write_json(tmp_path / "discovery_size" / "stability.json", {"summary": {"stability": stability}})
    return tmp_path


def test_discovery_size_is_the_smallest_stable_cdt_size_else_150(tmp_path):
    # 30 fails on Spearman, 90 meets both thresholds (exactly): 90 sentences, 30 per label
    assert discovery_per_class(_stability(tmp_path, [(30, 0.6, 0.79), (90, 0.5, 0.8), (150, 0.9, 0.9)])) == 30
    assert discovery_per_class(_stability(tmp_path, [(30, 0.5, 0.9), (90, 0.9, 0.9)])) == 10
    # neither 30 nor 90 stable: 150, whether or not 150 itself was run or is stable
    assert discovery_per_class(_stability(tmp_path, [(30, 0.2, 0.9), (90, 0.4, 0.95)])) == 50
    assert discovery_per_class(_stability(tmp_path, [(30, 0.2, 0.9), (90, 0.4, 0.95), (150, 0.3, 0.9)])) == 50
    with pytest.raises(SystemExit, match="at 90 sentences"):
        discovery_per_class(_stability(tmp_path, [(30, 0.2, 0.9)]))


def test_missing_inputs_name_the_step_to_run(tmp_path):
    with pytest.raises(SystemExit, match="discovery-cdt"):
        discovery_per_class(tmp_path)
    with pytest.raises(SystemExit, match="readouts"):
        retention_language(tmp_path)


def test_discovery_sample_fills_from_train_only_where_valid_is_short(data_dir):
    """NusaX valid has 38/24/38 sentences per label: 50 per label takes all of a label's valid
    sentences first, then train ones, never test; small samples are the first round's unchanged."""
    from common import discovery_pool, discovery_sample

    from circuit_transfer.data import load_split
    from circuit_transfer.tasks import balanced_sample, get_task

    task = get_task("nusax-senti")
    valid = discovery_pool(task, "ind", data_dir)
    small = discovery_sample(task, "ind", 10, 0, data_dir)
    assert [ex.id for ex in small] == [ex.id for ex in balanced_sample(valid, 10, 0, 3)]

    big = discovery_sample(task, "ind", 50, 0, data_dir)
    assert [ex.id for ex in big] == [ex.id for ex in discovery_sample(task, "ind", 50, 0, data_dir)]
    assert [sum(ex.label == label for ex in big) for label in range(3)] == [50, 50, 50]
    assert len({ex.id for ex in big}) == 150
    valid_ids = {ex.id for ex in valid}
    test_ids = {ex.id for ex in load_split(task.name, "ind", "test", data_dir)}
    assert not {ex.id for ex in big} & test_ids
    assert valid_ids <= {ex.id for ex in big}  # 38/24/38 valid, all of them used before any train one

    other = discovery_sample(task, "ind", 50, 1, data_dir, exclude_ids=[ex.id for ex in big])
    assert not {ex.id for ex in other} & {ex.id for ex in big}
    assert not {ex.id for ex in other} & valid_ids  # valid is used up by the first sample


def test_collect_copies_finished_runs_of_an_unfinished_sweep_into_the_results(tmp_path):
    from round2_choices import collect_finished

    work, results = tmp_path / "runs", tmp_path / "results"
    run = work / "nusax_primary" / "runs" / "ind" / "jav" / "full" / "n100" / "seed0"
    atomic_write_json(run / "result.json", {"method": "full", "target": "jav"})
    (work / "nusax_primary" / "runs" / "ind" / "jav" / "ct-sft-k0.05" / "n100" / "seed0").mkdir(parents=True)
    assert collect_finished(results, work) == ["nusax_primary: 1 runs"]
    records = read_json(results / "nusax_primary" / "records.json")
    assert [(r["_path"], r["method"]) for r in records] == [("ind/jav/full/n100/seed0", "full")]


def test_restore_puts_back_only_records_of_the_same_proxy_and_collect_then_gives_the_same_records(tmp_path):
    from round2_choices import collect_finished, restore_finished

    results, work = tmp_path / "results", tmp_path / "runs"
    same = {"_path": "ind/jav/full/n100/lr3e-05/seed0", "method": "full", "proxy_fingerprint": "aaaa"}
    same["predictions"] = {"file": "predictions.npz", "sets": {"after/jav": 2}}
    other = {
        "_path": "ind/jav/ct-sft-k0.05/n100/lr3e-05/seed0",
        "method": "ct-sft",
        "proxy_fingerprint": "bbbb",
    }
    atomic_write_json(results / "lr_nusax" / "records.json", [other, same])
    kept = results / "lr_nusax" / "predictions" / "ind__jav__full__n100__lr3e-05__seed0.npz"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"the predictions")

    assert restore_finished(results, work, {"aaaa"}) == ["lr_nusax: 1 restored, rerun: 1 (another proxy)"]
    run = work / "lr_nusax" / "runs" / "ind" / "jav" / "full" / "n100" / "lr3e-05" / "seed0"
    assert read_json(run / "result.json") == {k: v for k, v in same.items() if k != "_path"}
    assert (run / "predictions.npz").read_bytes() == b"the predictions"
    assert not (work / "lr_nusax" / "runs" / "ind" / "jav" / "ct-sft-k0.05").exists()
    assert restore_finished(results, work, {"aaaa"}) == ["lr_nusax: 0 restored, rerun: 1 (another proxy)"]
    collect_finished(results, work)  # the round trip changes no record
    assert read_json(results / "lr_nusax" / "records.json") == [other, same]


def test_restore_leaves_records_of_a_proxy_language_not_given_and_says_so(tmp_path):
    from round2_choices import restore_finished

    results, work = tmp_path / "results", tmp_path / "runs"
    nusax = {
        "_path": "ind/jav/full/n100/seed0",
        "method": "full",
        "proxy_lang": "ind",
        "proxy_fingerprint": "bbbb",
    }
    atomic_write_json(results / "nusax_primary" / "records.json", [nusax])
    only_xnli = {"en": object()}  # the check is never asked about an Indonesian record
    assert restore_finished(results, work, {"aaaa"}, only_xnli) == [
        "nusax_primary: 0 restored, rerun: 1 (no ind proxy given)"
    ]
    assert not (work / "nusax_primary").exists()


def test_restore_refuses_a_record_whose_predictions_are_missing(tmp_path):
    from round2_choices import restore_finished

    rec = {
        "_path": "ind/jav/full/n100/lr3e-05/seed0",
        "proxy_fingerprint": "aaaa",
        "predictions": {"sets": {}},
    }
    atomic_write_json(tmp_path / "results" / "lr_nusax" / "records.json", [rec])
    with pytest.raises(SystemExit, match="cannot be restored without its predictions"):
        restore_finished(tmp_path / "results", tmp_path / "runs", {"aaaa"})


def test_the_model_manifest_gathers_every_proxy_and_invocation_in_start_order(tmp_path):
    from round2_choices import collect_finished

    results = tmp_path / "gemma3-270m"
    atomic_write_json(results / "proxy-ind.json", {"lang": "ind", "task": {"name": "nusax-senti"},
                      "train_config": {"seed": 0, "epochs": 3}, "wall_time_s": 100.0})  # fmt: skip
    late = {"command": "python b.py", "started_utc": "2026-12-02T07:00:00Z", "wall_time_s": 20.0}
    early = {"command": "python a.py", "started_utc": "2026-12-02T06:00:00Z", "wall_time_s": 5.5}
    atomic_write_json(results / "lr_nusax" / "manifest.json", {"invocations": {"k2": late}})
    atomic_write_json(results / "discovery_size" / "manifest.json", {"invocations": {"k1": early}})
    collect_finished(results, tmp_path / "runs")
    manifest = read_json(results / "manifest.json")
    assert manifest["model"] == "gemma3-270m"
    assert (
        manifest["proxies"]["proxy-ind"]["seed"] == 0
        and manifest["proxies"]["proxy-ind"]["wall_time_s"] == 100.0
    )
    assert [(e["folder"], e["command"]) for e in manifest["invocations"]] == [
        ("discovery_size", "python a.py"),
        ("lr_nusax", "python b.py"),
    ]
    assert manifest["wall_time_s_total"] == 125.5


def test_restore_needs_the_retrained_proxys_head_scores_only_where_another_proxy_made_something(tmp_path):
    from round2_choices import made_with_another_proxy

    results = tmp_path / "results"
    atomic_write_json(
        results / "lr_nusax" / "records.json", [{"proxy_lang": "ind", "proxy_fingerprint": "aaaa"}]
    )
    assert not made_with_another_proxy(results, "ind", "aaaa")  # the same proxy came back: nothing to check
    assert made_with_another_proxy(results, "ind", "bbbb")
    assert not made_with_another_proxy(results, "en", "bbbb")  # records of another proxy language
    atomic_write_json(
        results / "nusax_primary" / "circuits" / "scores-ind.json",
        {"scores": {"extra": {"proxy_fingerprint": "cccc"}}},
    )
    assert made_with_another_proxy(results, "ind", "aaaa")  # cached scores of another proxy must be adopted
