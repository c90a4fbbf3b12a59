"""Real NusaX data on the tiny model: faithfulness identities, bad discovery sets, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from circuit_transfer.data import load_split
from circuit_transfer.discovery import Circuit, discover, faithfulness, head_relevance, label_balanced_mean
from circuit_transfer.models import TinyModelSpec, build_tiny_model, save_checkpoint
from circuit_transfer.readout import encode, label_logits, task_margin
from circuit_transfer.tasks import balanced_sample, get_task

pytestmark = pytest.mark.slow

TASK = get_task("nusax-senti")


@pytest.fixture(scope="module")
def tiny():
    train = load_split("nusax-senti", "ind", "train")
    spec = TinyModelSpec(d_model=64, d_head=16, d_mlp=128, vocab_size=1000)
    model = build_tiny_model([ex.text for ex in train], spec, extra_words=TASK.template_words(), seed=0)
    examples = balanced_sample(load_split("nusax-senti", "ind", "valid"), 4, seed=0, n_labels=3)
    return model, examples


def test_full_is_one_and_empty_is_zero_on_real_data(tiny):
    model, examples = tiny
    full = faithfulness(model, TASK, Circuit.full(model), examples, max_len=48)
    empty = faithfulness(model, TASK, Circuit.empty(model), examples, max_len=48)
    assert full.faithfulness == 1.0  # by construction (documentation); the checks below can fail
    assert empty.faithfulness == 0.0
    assert full.n_examples == 12
    batch = encode(model.tokenizer, TASK, examples, max_len=48)
    with torch.no_grad():
        scores = label_logits(model(batch.tokens, attention_mask=batch.attention_mask), batch)
    assert full.full.margin == pytest.approx(float(task_margin(scores, batch.labels).mean()), abs=1e-4)
    assert full.full.accuracy == pytest.approx(float((scores.argmax(-1) == batch.labels).double().mean()))
    assert empty.empty == full.empty and empty.circuit == full.empty and full.circuit == full.full


def test_bad_discovery_sets(tiny):
    model, examples = tiny
    with pytest.raises(ValueError, match="discovery set is empty"):
        head_relevance(model, TASK, [])
    no_neutral = [ex for ex in examples if ex.label != 1]
    with pytest.raises(ValueError, match="label 'neutral' \\(id 1\\) has no examples"):
        label_balanced_mean(model, no_neutral, TASK)
    with pytest.raises(ValueError, match="k=0 heads requested but the model has 8 heads"):
        discover(model, TASK, examples, k=0, max_len=48)
    with pytest.raises(ValueError, match="k=9 heads requested but the model has 8 heads"):
        discover(model, TASK, examples, k=9, max_len=48)


def test_cli_discover_and_compare(tiny, tmp_path, capsys):
    from circuit_transfer.cli import main

    model, _ = tiny
    ckpt = save_checkpoint(
        model,
        tmp_path / "proxy",
        metadata={
            "task": {"name": TASK.name, "template": TASK.template, "label_words": list(TASK.label_words)}
        },
    )
    base = ["discover", "--model", str(ckpt), "--n-examples", "3", "--max-len", "48", "--k", "3"]
    assert main([*base, "--lang", "ind", "--out", str(tmp_path / "ind.json")]) == 0
    assert (
        main([*base, "--lang", "jav", "--estimator", "attribution", "--out", str(tmp_path / "jav.json")]) == 0
    )
    printed = capsys.readouterr().out
    assert "faithfulness" in printed and "| rank |" in printed
    ind = Circuit.load(tmp_path / "ind.json")
    assert len(ind.heads) == 3 and ind.lang == "ind" and ind.scores.estimator == "cdt"
    assert ind.params["split"] == "valid" and "faithfulness" in ind.params
    assert (
        main(
            [
                "compare",
                str(tmp_path / "ind.json"),
                str(tmp_path / "jav.json"),
                "--out",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    assert "Jaccard" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "c.json").read_text())) >= {"jaccard", "overlap_at_k", "spearman"}
    assert main([*base[:-2], "--k", "0"]) == 2  # bad k: a clear error, exit code 2
