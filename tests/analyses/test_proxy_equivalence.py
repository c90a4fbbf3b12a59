"""Reusing committed runs with a retrained proxy (`analyses/proxy_equivalence.py`): a proxy that
reproduces the run's stored predictions and heads is accepted; one that does not, is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "analyses"))

from proxy_equivalence import MEAN_LOGIT_TOLERANCE, ProxyEquivalence  # noqa: E402
from round2_choices import adopt_scores, proxy_head_scores, proxy_summary, restore_finished  # noqa: E402

from circuit_transfer.discovery import Circuit, select_top_k  # noqa: E402
from circuit_transfer.evaluate import load_predictions, save_predictions  # noqa: E402
from circuit_transfer.io import atomic_write_json, read_json  # noqa: E402
from circuit_transfer.models import (  # noqa: E402
    checkpoint_fingerprint,
    load_model,
    read_checkpoint_metadata,
    save_checkpoint,
)
from circuit_transfer.tasks import get_task  # noqa: E402
from circuit_transfer.train import TrainConfig  # noqa: E402
from circuit_transfer.transfer import TransferSpec, transfer  # noqa: E402

RUN_PATH = "ind/jav/ct-sft-k0.05/n12/seed0"


def _retrained(proxy: Path, out: Path, noise: float) -> Path:
    """The proxy with every weight matrix moved by `noise` (relative): a retraining elsewhere."""
    model = load_model(proxy)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(1 + noise * torch.randn(p.shape, generator=gen))
    save_checkpoint(model, out, metadata=read_checkpoint_metadata(proxy))
    return out


@pytest.fixture(scope="module")
def committed(tiny_proxy, tmp_path_factory):
    """A ct-sft run on the tiny proxy, committed as `round2.sh collect` leaves it."""
    tmp = tmp_path_factory.mktemp("committed")
    scores = Circuit.load(proxy_head_scores(tiny_proxy, tmp / "work-a", per_class=2)).scores
    config = TrainConfig(epochs=1, batch_size=8, max_len=48, start_is_candidate=False)
    spec = TransferSpec(method="ct-sft", target="jav", n_train=12, n_test=12, config=config)
    record = transfer(
        tiny_proxy, spec, select_top_k(scores, 2), out=tmp / "run", task=get_task("nusax-senti")
    )
    record = {**record, "_path": RUN_PATH, "proxy_fingerprint": checkpoint_fingerprint(tiny_proxy)}
    return record, load_predictions(tmp / "run" / "predictions.npz")


def _results(tmp_path: Path, record: dict, predictions: dict) -> Path:
    results = tmp_path / "results"
    atomic_write_json(results / "lr_nusax" / "records.json", [record])
    save_predictions(
        results / "lr_nusax" / "predictions" / (RUN_PATH.replace("/", "__") + ".npz"), predictions
    )
    return results


def _check(proxy: Path, work: Path) -> ProxyEquivalence:
    scores = Circuit.load(proxy_head_scores(proxy, work, per_class=2)).scores
    return ProxyEquivalence(proxy, checkpoint_fingerprint(proxy), scores)


def test_a_proxy_within_float_noise_gets_the_run_back_with_both_fingerprints(tiny_proxy, committed, tmp_path):
    record, predictions = committed
    near = _retrained(tiny_proxy, tmp_path / "near", noise=1e-6)
    assert checkpoint_fingerprint(near) != record["proxy_fingerprint"]
    results, work = _results(tmp_path, record, predictions), tmp_path / "work"
    lines = restore_finished(results, work, {checkpoint_fingerprint(near)}, {"ind": _check(near, work)})
    assert lines == ["lr_nusax: 1 restored (1 made with an equivalent proxy)"]
    restored = read_json(work / "lr_nusax" / "runs" / RUN_PATH / "result.json")
    assert restored["proxy_fingerprint"] == checkpoint_fingerprint(near)
    assert restored["made_with_proxy_fingerprint"] == record["proxy_fingerprint"]
    evidence = restored["proxy_equivalence"]
    assert evidence["prediction_flips"] == 0 and evidence["heads_equal"] is True
    assert 0 < evidence["mean_abs_label_logit_diff"] <= evidence["max_abs_label_logit_diff"] < 1e-3
    assert evidence["items"] == sum(
        len(p.ids) for n, p in predictions.items() if n.startswith("before/")
    ) + len(predictions["valid/epoch0"].ids)


def test_a_proxy_that_moved_is_refused_and_its_run_redone(tiny_proxy, committed, tmp_path):
    record, predictions = committed
    far = _retrained(tiny_proxy, tmp_path / "far", noise=0.3)
    results, work = _results(tmp_path, record, predictions), tmp_path / "work"
    (line,) = restore_finished(results, work, {checkpoint_fingerprint(far)}, {"ind": _check(far, work)})
    assert line.startswith("lr_nusax: 0 restored, rerun: 1 (") and "differ" in line
    assert not (work / "lr_nusax" / "runs" / RUN_PATH).exists()


def _with_logits(predictions: dict, name: str, logits: torch.Tensor) -> dict:
    """The stored prediction sets with `name`'s label logits replaced (its predictions kept)."""
    stored = predictions[name]
    moved = type(stored)(ids=stored.ids, gold=stored.gold, predicted=stored.predicted, label_logits=logits)
    return {**predictions, name: moved}


def test_stored_logits_beyond_the_tolerance_or_other_heads_are_refused(tiny_proxy, committed, tmp_path):
    record, predictions = committed
    check = _check(tiny_proxy, tmp_path / "work")
    same = check.check(record, predictions)[0]  # the same proxy
    assert same["max_abs_label_logit_diff"] == same["mean_abs_label_logit_diff"] == 0.0
    name = next(n for n in predictions if n.startswith("before/"))
    stored = predictions[name]
    compared = [n for n in predictions if n.startswith("before/") or n == "valid/epoch0"]
    everywhere = dict(predictions)  # every stored logit up by twice the tolerance: no prediction moves
    for n in compared:
        everywhere = _with_logits(everywhere, n, predictions[n].label_logits + 2 * MEAN_LOGIT_TOLERANCE)
    evidence, why = check.check(record, everywhere)
    assert evidence is None and why.startswith("label logits differ") and "on average" in why
    n_logits = sum(predictions[n].label_logits.numel() for n in compared)
    logits = stored.label_logits.clone()
    logits[0] += MEAN_LOGIT_TOLERANCE * n_logits / 6  # one item's 3 labels: the mean is half the tolerance
    evidence, why = check.check(record, _with_logits(predictions, name, logits))
    assert why == "" and evidence["max_abs_label_logit_diff"] > 10 * MEAN_LOGIT_TOLERANCE
    assert evidence["mean_abs_label_logit_diff"] == pytest.approx(MEAN_LOGIT_TOLERANCE / 2, rel=1e-4)
    flipped = dict(predictions)
    flipped[name] = type(stored)(
        ids=stored.ids,
        gold=stored.gold,
        predicted=(stored.predicted + 1) % 3,
        label_logits=stored.label_logits,
    )
    assert check.check(record, flipped)[1].endswith(f"{name} predictions differ")
    other_heads = {
        **record,
        "heads": [[0, 0], [1, 1]] if record["heads"] != [[0, 0], [1, 1]] else [[0, 1], [1, 0]],
    }
    assert check.check(other_heads, predictions)[1] == "this proxy's circuit selects other heads"


def test_head_scores_of_another_proxy_are_superseded_not_overwritten(tiny_proxy, tmp_path):
    near = _retrained(tiny_proxy, tmp_path / "near", noise=1e-6)
    old = proxy_head_scores(tiny_proxy, tmp_path / "work-old", per_class=2)
    new = proxy_head_scores(near, tmp_path / "work-new", per_class=2)
    cached = tmp_path / "results" / "lr_nusax" / "circuits" / "scores-ind.json"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(old.read_bytes())
    (line,) = adopt_scores(tmp_path / "results", new, "ind")
    assert line.startswith("lr_nusax: head scores of proxy")
    assert cached.read_bytes() == new.read_bytes()
    superseded = cached.parent / "superseded" / f"scores-ind-{checkpoint_fingerprint(tiny_proxy)}.json"
    assert superseded.read_bytes() == old.read_bytes()
    assert adopt_scores(tmp_path / "results", new, "ind") == []  # already this proxy's
    (line,) = adopt_scores(tmp_path / "results", old, "ind")  # the first proxy came back
    assert cached.read_bytes() == old.read_bytes()
    assert adopt_scores(tmp_path / "results", new, "ind")  # and went again: its copy is kept already
    assert cached.read_bytes() == new.read_bytes() and superseded.read_bytes() == old.read_bytes()
    (cached.parent / "superseded" / f"scores-ind-{checkpoint_fingerprint(near)}.json").write_text("{}")
    with pytest.raises(SystemExit, match="differs"):
        adopt_scores(tmp_path / "results", old, "ind")  # neither copy is overwritten


def test_the_proxy_summary_names_its_weights_and_the_machine_that_made_them(
    tiny_proxy, tmp_path, monkeypatch
):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    summary = read_json(proxy_summary(tmp_path, tiny_proxy))
    assert summary["weight_fingerprint"] == checkpoint_fingerprint(tiny_proxy)
    assert summary["machine"]["pinned"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert summary["machine"]["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert summary["train_config"] == read_checkpoint_metadata(tiny_proxy)["train_config"]
    near = _retrained(tiny_proxy, tmp_path / "near", noise=1e-6)
    assert read_json(proxy_summary(tmp_path, near))["weight_fingerprint"] != summary["weight_fingerprint"]
