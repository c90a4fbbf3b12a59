"""Masked transfer end to end on a tiny model and real NusaX data: what may change, changes; nothing else does."""

from __future__ import annotations

import pytest
import torch

from circuit_transfer.data import load_split
from circuit_transfer.delta import apply_delta, load_delta
from circuit_transfer.discovery import Circuit, HeadScores, select_random, select_top_k
from circuit_transfer.io import read_json
from circuit_transfer.masking import head_grad_masks
from circuit_transfer.models import TinyModelSpec, build_tiny_model, load_model, save_checkpoint
from circuit_transfer.optim import OptimConfig
from circuit_transfer.readout import encode
from circuit_transfer.tasks import get_task, stratified_subset
from circuit_transfer.train import TrainConfig
from circuit_transfer.transfer import TransferSpec, transfer

TASK = get_task("nusax-senti")
FAST = TrainConfig(epochs=2, batch_size=8, max_len=48, start_is_candidate=False)
SPEC = TinyModelSpec(n_layers=2, n_heads=4, d_model=32, d_head=8, d_mlp=64, vocab_size=600)


@pytest.fixture(scope="module")
def proxy_dir(tmp_path_factory, data_dir):
    texts = [ex.text for ex in load_split(TASK.name, "ind", "train", data_dir)[:150]]
    model = build_tiny_model(texts, spec=SPEC, extra_words=TASK.template_words(), seed=0)
    path = tmp_path_factory.mktemp("proxy") / "proxy"
    task_meta = {"name": TASK.name, "template": TASK.template, "label_words": list(TASK.label_words)}
    save_checkpoint(model, path, metadata={"kind": "proxy", "task": task_meta, "lang": "ind"})
    return path


@pytest.fixture(scope="module")
def circuit(proxy_dir):
    return Circuit.from_heads([(0, 1), (1, 2)], load_model(proxy_dir), method="hand-picked")


def _run(proxy_dir, circuit, method, tmp_path, **kw):
    spec = TransferSpec(
        method=method, target="jav", n_train=kw.pop("n_train", 16), n_test=24, config=FAST, **kw
    )
    return transfer(proxy_dir, spec, circuit, out=tmp_path / method, task=TASK)


def test_ct_sft_changes_only_circuit_heads_and_norms(proxy_dir, circuit, tmp_path):
    record = _run(proxy_dir, circuit, "ct-sft", tmp_path)
    proxy = load_model(proxy_dir)
    masks = head_grad_masks(proxy, circuit)
    trained = load_model(proxy_dir)
    apply_delta(trained, load_delta(tmp_path / "ct-sft" / "delta.safetensors")[0])
    base, after = dict(proxy.named_parameters()), dict(trained.named_parameters())
    for name, mask in masks.items():
        frozen = mask == 0
        assert torch.equal(after[name][frozen], base[name][frozen]), f"{name}: a masked entry moved"
    assert not torch.equal(after["blocks.0.attn.W_Q"][1], base["blocks.0.attn.W_Q"][1])
    assert not torch.equal(after["blocks.1.ln1.w"], base["blocks.1.ln1.w"])
    assert 0 < record["params_changed"] <= record["params_trainable"] < record["params_total"] / 5
    assert record["heads"] == [[0, 1], [1, 2]] and record["k"] == 2
    assert record["forgetting"] == pytest.approx(
        record["proxy_accuracy_before"] - record["proxy_accuracy_after"]
    )


def test_reapplied_delta_reproduces_the_trained_logits_exactly(proxy_dir, circuit, tmp_path):
    """The run's own model is rebuilt from proxy + delta; its logits equal a direct re-run's."""
    _run(proxy_dir, circuit, "ct-sft", tmp_path)
    delta, meta = load_delta(tmp_path / "ct-sft" / "delta.safetensors")
    assert meta["method"] == "ct-sft"
    once, twice = load_model(proxy_dir), load_model(proxy_dir)
    apply_delta(once, delta)
    apply_delta(twice, delta)
    batch = encode(once.tokenizer, TASK, load_split(TASK.name, "jav", "test")[:4])
    with torch.no_grad():
        assert torch.equal(once(batch.tokens), twice(batch.tokens))
        assert not torch.equal(once(batch.tokens), load_model(proxy_dir)(batch.tokens))


def test_full_trains_everything_and_zero_shot_nothing(proxy_dir, circuit, tmp_path):
    full = _run(proxy_dir, circuit, "full", tmp_path)
    assert full["params_trainable"] == full["params_total"]
    assert full["params_changed"] > 0.95 * full["params_total"]
    zero = _run(proxy_dir, circuit, "zero-shot", tmp_path)
    assert zero["params_changed"] == 0 and zero["params_trainable"] == 0
    assert zero["before"] == zero["after"] and zero["forgetting"] == 0
    assert not (tmp_path / "zero-shot" / "delta.safetensors").exists()


def test_result_json_records_the_run(proxy_dir, circuit, tmp_path):
    _run(proxy_dir, circuit, "ln-only", tmp_path, retention_langs=("eng",))
    record = read_json(tmp_path / "ln-only" / "result.json")
    assert set(record["after"]) == {"jav", "ind", "eng"}
    assert record["data"]["n_train"] == 16 and record["data"]["n_test"]["jav"] == 24
    assert [row["epoch"] for row in record["curve"]] == [0, 1, 2]
    for key in ("target_accuracy", "target_macro_f1", "forgetting", "params_changed", "wall_time_s", "seed"):
        assert key in record


def test_known_before_scores_give_the_same_record_and_wrong_sizes_are_refused(proxy_dir, circuit, tmp_path):
    spec = TransferSpec("ct-sft", "jav", 16, n_test=24, n_valid=30, config=FAST)
    measured = transfer(proxy_dir, spec, circuit, task=TASK)
    partly_known = {"jav": measured["before"]["jav"]}
    reused = transfer(proxy_dir, spec, circuit, task=TASK, before=partly_known)
    for record in (measured, reused):
        record.pop("wall_time_s")
    assert reused == measured
    assert measured["data"]["n_valid"] == 30
    wrong = {"jav": {**measured["before"]["jav"], "n": 400}}
    with pytest.raises(ValueError, match="cover 400 test examples but this run tests 24"):
        transfer(proxy_dir, spec, circuit, task=TASK, before=wrong)


def test_random_control_is_seeded_and_the_same_size(proxy_dir, circuit, tmp_path):
    a = _run(proxy_dir, circuit, "random", tmp_path, seed=3)
    b = transfer(
        proxy_dir, TransferSpec("random", "jav", 16, seed=3, n_test=24, config=FAST), circuit, task=TASK
    )
    assert a["heads"] == b["heads"] and len(a["heads"]) == 2
    # the run's seed reaches the draw: seed 3's heads, which are not seed 0's
    assert a["heads"] == [list(h) for h in select_random(2, 4, 2, seed=3).heads]
    assert a["heads"] != [list(h) for h in select_random(2, 4, 2, seed=0).heads]
    # ... and the training subset
    pool = load_split(TASK.name, "jav", "train")
    assert a["data"]["train_ids"] == [ex.id for ex in stratified_subset(pool, 16, 3, TASK.n_labels)]
    assert a["data"]["train_ids"] != [ex.id for ex in stratified_subset(pool, 16, 0, TASK.n_labels)]


def test_near_zero_run_trains_the_smallest_abs_heads_outside_the_circuit(proxy_dir, tmp_path):
    values = torch.tensor([[2.0, -0.01, 0.5, -0.3], [0.02, 3.0, -0.2, 1.0]])
    scores = HeadScores(scores=values, model_name="tiny", n_layers=2, n_heads=4)
    scored = select_top_k(scores, 2)  # L1H1 (3.0), L0H0 (2.0)
    record = _run(proxy_dir, scored, "near-zero", tmp_path)
    assert record["heads"] == [[0, 1], [1, 0]] and record["k"] == 2  # |-0.01|, |0.02|


def test_params_changed_counts_the_entries_that_differ_from_the_proxy(proxy_dir, circuit, tmp_path):
    """Full fine-tuning without weight decay: embedding rows of tokens absent from the data get a
    zero gradient, so they are trainable but do not change (trainable != changed)."""
    config = TrainConfig(
        epochs=1, batch_size=8, max_len=48, start_is_candidate=False, optim=OptimConfig(weight_decay=0.0)
    )
    spec = TransferSpec("full", "jav", 16, n_test=24, config=config)
    record = transfer(proxy_dir, spec, circuit, out=tmp_path / "full", task=TASK)
    proxy, trained = load_model(proxy_dir), load_model(proxy_dir)
    apply_delta(trained, load_delta(tmp_path / "full" / "delta.safetensors")[0])
    before, after = dict(proxy.named_parameters()), dict(trained.named_parameters())
    n_differ = sum(int(after[name].ne(before[name]).sum()) for name in before)
    assert 0 < record["params_changed"] == n_differ < record["params_trainable"] == record["params_total"]


def test_bad_input_is_refused_clearly(proxy_dir, circuit, tmp_path):
    with pytest.raises(ValueError, match="Unknown method 'lora'. Valid methods: ct-sft"):
        TransferSpec(method="lora", target="jav", n_train=10)
    with pytest.raises(ValueError, match="n_train must be positive"):
        TransferSpec(method="ct-sft", target="jav", n_train=0)
    with pytest.raises(ValueError, match="has 500 training examples; cannot take n_train=501"):
        _run(proxy_dir, circuit, "ct-sft", tmp_path, n_train=501)
    other = Circuit.from_heads([(5, 0)], n_layers=6, n_heads=4, model_name="other")
    with pytest.raises(ValueError, match="6"):
        _run(proxy_dir, other, "ct-sft", tmp_path)
    with pytest.raises(ValueError, match="needs a circuit"):
        _run(proxy_dir, None, "ct-sft", tmp_path)


def test_interrupted_run_leaves_no_result_file(proxy_dir, circuit, tmp_path, monkeypatch):
    import circuit_transfer.transfer as transfer_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(transfer_module, "train_classifier", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(proxy_dir, circuit, "ct-sft", tmp_path)
    assert not (tmp_path / "ct-sft" / "result.json").exists()
    assert not list((tmp_path).rglob("*.tmp"))


def test_every_evaluation_stores_its_per_item_predictions(proxy_dir, circuit, tmp_path):
    from circuit_transfer.evaluate import load_predictions
    from circuit_transfer.readout import label_logits

    record = _run(proxy_dir, circuit, "ct-sft", tmp_path, retention_langs=("eng",))
    sets = load_predictions(tmp_path / "ct-sft" / "predictions.npz")
    expected = {f"{phase}/{lang}" for phase in ("before", "after") for lang in ("jav", "ind", "eng")}
    assert set(sets) == expected | {"valid/epoch0", "valid/epoch1", "valid/epoch2"}
    assert record["predictions"]["file"] == "predictions.npz"
    assert record["predictions"]["sets"] == {name: len(items.ids) for name, items in sets.items()}
    for phase in ("before", "after"):
        for lang, scores in record[phase].items():
            items = sets[f"{phase}/{lang}"]
            assert items.correct.float().mean().item() == pytest.approx(scores["accuracy"])
            assert torch.equal(items.predicted, items.label_logits.argmax(-1))
            assert [int((items.predicted == c).sum()) for c in range(3)] == scores["predicted_counts"]
    # the stored rows are the test items in order: logits recomputed one example at a time agree
    model = load_model(proxy_dir)
    apply_delta(model, load_delta(tmp_path / "ct-sft" / "delta.safetensors")[0])
    from circuit_transfer.tasks import stratified_cap

    tests = stratified_cap(load_split(TASK.name, "jav", "test"), 24, TASK.n_labels)
    after = sets["after/jav"]
    assert list(after.ids) == [ex.id for ex in tests]
    assert after.gold.tolist() == [ex.label for ex in tests]
    for i in (0, 7, 23):
        batch = encode(model.tokenizer, TASK, [tests[i]], max_len=FAST.max_len)
        with torch.no_grad():
            alone = label_logits(model(batch.tokens, attention_mask=batch.attention_mask), batch)[0]
        assert torch.allclose(after.label_logits[i], alone, atol=1e-4)
    # the valid curve is the stored valid predictions' accuracy
    for row in record["curve"]:
        items = sets[f"valid/epoch{row['epoch']}"]
        assert items.correct.float().mean().item() == pytest.approx(row["valid_accuracy"])


def test_before_predictions_are_reused_and_must_be_for_the_same_items(proxy_dir, circuit, monkeypatch):
    import circuit_transfer.transfer as transfer_module
    from circuit_transfer.evaluate import evaluate

    spec = TransferSpec("ln-only", "jav", 16, n_test=24, config=FAST)
    model = load_model(proxy_dir)
    from circuit_transfer.tasks import stratified_cap

    rows = stratified_cap(load_split(TASK.name, "jav", "test"), 24, TASK.n_labels)
    jav = transfer_module.before_json(evaluate(model, TASK, rows, max_len=FAST.max_len))
    evaluated = []

    def counting(model, task, examples, *args, **kwargs):
        evaluated.append(examples[0].lang)
        return evaluate(model, task, examples, *args, **kwargs)

    monkeypatch.setattr(transfer_module, "evaluate", counting)
    record = transfer(proxy_dir, spec, circuit, task=TASK, before={"jav": jav})
    assert evaluated.count("jav") == 1 and evaluated.count("ind") == 2  # jav: after only
    assert record["before"]["jav"] == {k: v for k, v in jav.items() if k != "items"}
    evaluated.clear()
    without_items = {k: v for k, v in jav.items() if k != "items"}
    transfer(proxy_dir, spec, circuit, task=TASK, before={"jav": without_items})
    assert evaluated.count("jav") == 2  # no predictions given: measured again
    other = {**jav, "items": {**jav["items"], "ids": list(reversed(jav["items"]["ids"]))}}
    with pytest.raises(ValueError, match="predictions for jav are for other test items"):
        transfer(proxy_dir, spec, circuit, task=TASK, before={"jav": other})


def test_tied_proxy_counts_its_real_parameters(tmp_path, data_dir):
    """A tied model's unembedding copy is counted once: full fine-tuning trains 100% of it, not more."""
    from circuit_transfer.models.params import count_parameters

    texts = [ex.text for ex in load_split(TASK.name, "ind", "train", data_dir)[:150]]
    model = build_tiny_model(texts, spec=SPEC, extra_words=TASK.template_words(), seed=0)
    model.cfg.tie_word_embeddings = True
    with torch.no_grad():
        model.unembed.W_U.copy_(model.embed.W_E.T)
    task_meta = {"name": TASK.name, "template": TASK.template, "label_words": list(TASK.label_words)}
    path = save_checkpoint(
        model, tmp_path / "tied", metadata={"kind": "proxy", "task": task_meta, "lang": "ind"}
    )
    real = count_parameters(load_model(path))
    assert real == sum(p.numel() for p in model.parameters()) - model.unembed.W_U.numel()
    full = _run(path, None, "full", tmp_path)
    assert full["params_total"] == full["params_trainable"] == real
    assert full["params_total_hooked"] == real + model.unembed.W_U.numel()
    assert 0.95 * real < full["params_changed"] <= real and full["params_changed_fraction"] <= 1.0
