"""Your own model and your own data, as in a notebook: a HookedTransformer built in memory with a
tokenizer, a task from a CSV, discovery, transfer in memory, the delta applied to a fresh copy."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
import torch
from own_reviews import write_reviews
from transformer_lens import HookedTransformer, HookedTransformerConfig

import circuit_transfer.transfer as transfer_module
from circuit_transfer.delta import apply_delta, load_delta
from circuit_transfer.discovery import discover
from circuit_transfer.evaluate import evaluate
from circuit_transfer.io import read_json
from circuit_transfer.models import attach_tokenizer, save_checkpoint
from circuit_transfer.models.tokenizer import train_bpe_tokenizer
from circuit_transfer.optim import OptimConfig
from circuit_transfer.readout import encode
from circuit_transfer.tasks import NoDataError, get_task
from circuit_transfer.train import TrainConfig, train_classifier
from circuit_transfer.transfer import TransferSpec, transfer

TEMPLATE, LABEL_WORDS = "Review: {text}\nMood:", (" bad", " good")
FAST = TrainConfig(epochs=3, batch_size=16, max_len=32, start_is_candidate=False, optim=OptimConfig(lr=3e-3))


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    write_reviews(path)
    return get_task(
        "reviews",
        template=TEMPLATE,
        label_words=LABEL_WORDS,
        data=path,
        text_column="review",
        label_column="mood",
        lang_column="language",
    )


@pytest.fixture(scope="module")
def proxy(task):
    """A user's model: built in memory with its own tokenizer, trained on the English reviews."""
    texts = [ex.text for lang in task.languages() for ex in task.examples(lang, "train")]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300, extra_words=[*task.template_words()])
    cfg = HookedTransformerConfig(
        n_layers=2,
        n_heads=4,
        d_model=32,
        d_head=8,
        d_mlp=64,
        n_ctx=64,
        d_vocab=len(tokenizer),
        act_fn="gelu",
        normalization_type="LN",
        seed=0,
        model_name="my-model",
    )
    model = attach_tokenizer(HookedTransformer(cfg), tokenizer)
    train_classifier(model, task, *task.train_valid("eng"), replace(FAST, epochs=8))
    return model


@pytest.fixture(scope="module")
def circuit(proxy, task):
    return discover(proxy, task, task.examples("eng", "valid"), k=2)


SPEC = TransferSpec("ct-sft", target="ind", n_train=40, config=FAST)


def as_users_run(function):
    """`function` without the test suite's runtime type checking (jaxtyping + beartype wrap every
    package function and would refuse a wrongly typed argument before the function's own check)."""
    return getattr(function, "__wrapped__", function)


def _state(model) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _logits(model, task):
    batch = encode(model.tokenizer, task, task.examples("ind", "test"), max_len=32)
    with torch.no_grad():
        return model(batch.tokens, attention_mask=batch.attention_mask)


def test_transfer_in_memory_leaves_the_model_unchanged_and_its_delta_reproduces_the_trained_logits(
    proxy, task, circuit, tmp_path
):
    before, tokenizer, mode = _state(proxy), proxy.tokenizer, proxy.training
    record = transfer(proxy, SPEC, circuit, task=task, proxy_lang="eng", out=tmp_path / "run")
    after = proxy.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], value) for name, value in before.items()), "the user's model moved"
    assert proxy.tokenizer is tokenizer and proxy.training == mode
    assert record["params_changed"] > 0 and record["proxy"] == "in-memory HookedTransformer my-model"

    fresh = copy.deepcopy(proxy)
    apply_delta(fresh, load_delta(tmp_path / "run" / "delta.safetensors")[0])
    trained = copy.deepcopy(proxy)
    again = transfer(trained, SPEC, circuit, task=task, proxy_lang="eng", in_place=True)
    assert torch.equal(_logits(fresh, task), _logits(trained, task))
    assert not torch.equal(_logits(fresh, task), _logits(proxy, task))
    assert evaluate(fresh, task, task.examples("ind", "test")).to_dict() == record["after"]["ind"]
    written = read_json(tmp_path / "run" / "result.json")
    assert written == json.loads(json.dumps(record))
    for r in (again, written):  # the in-place run wrote no files, so it names no predictions file
        r.pop("wall_time_s"), r["predictions"].pop("file")
    assert json.loads(json.dumps(again)) == written


def test_in_memory_and_checkpoint_runs_give_the_same_record_and_files(proxy, task, circuit, tmp_path):
    save_checkpoint(proxy, tmp_path / "proxy", task=task, lang="eng")
    from_dir = transfer(tmp_path / "proxy", SPEC, circuit, task=task, out=tmp_path / "dir")
    in_memory = transfer(proxy, SPEC, circuit, task=task, proxy_lang="eng", out=tmp_path / "mem")
    for record in (from_dir, in_memory):
        record.pop("wall_time_s"), record.pop("proxy")
    assert from_dir == in_memory
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == [
        "delta.safetensors",
        "predictions.npz",
        "result.json",
    ]
    assert sorted(p.name for p in (tmp_path / "mem").iterdir()) == [
        "delta.safetensors",
        "predictions.npz",
        "result.json",
    ]
    a, b = (
        load_delta(tmp_path / "dir" / "delta.safetensors")[0],
        load_delta(tmp_path / "mem" / "delta.safetensors")[0],
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_explicit_example_lists_replace_the_task_data(proxy, task, circuit):
    with_data = transfer(proxy, SPEC, circuit, task=task, proxy_lang="eng")
    bare = get_task("reviews", template=TEMPLATE, label_words=LABEL_WORDS)  # the same task, no data
    explicit = transfer(
        proxy,
        SPEC,
        circuit,
        task=bare,
        proxy_lang="eng",
        train=task.examples("ind", "train"),
        valid=task.examples("ind", "valid"),
        tests={"ind": task.examples("ind", "test"), "eng": task.examples("eng", "test")},
    )
    for record in (with_data, explicit):
        record.pop("wall_time_s")
    assert explicit == with_data


def test_bad_input_is_refused_before_any_compute(proxy, task, circuit, monkeypatch):
    def no_compute(*args, **kwargs):
        raise AssertionError("computed before the input was checked")

    monkeypatch.setattr(transfer_module, "evaluate", no_compute)
    monkeypatch.setattr(transfer_module, "train_classifier", no_compute)
    with pytest.raises(
        ValueError, match=r"transfer needs task=\.\.\. for in-memory HookedTransformer my-model"
    ):
        transfer(proxy, SPEC, circuit)
    with pytest.raises(ValueError, match=r"needs the proxy's language .* pass proxy_lang=\.\.\."):
        transfer(proxy, SPEC, circuit, task=task)
    with pytest.raises(ValueError, match="tests has no examples for eng"):
        transfer(
            proxy, SPEC, circuit, task=task, proxy_lang="eng", tests={"ind": task.examples("ind", "test")}
        )
    with pytest.raises(TypeError, match=r"train\[0\] is a str \('great food'\), not an Example"):
        as_users_run(transfer)(proxy, SPEC, circuit, task=task, proxy_lang="eng", train=["great food"])
    with pytest.raises(ValueError, match="has no language 'jav'"):
        transfer(proxy, TransferSpec("ct-sft", "jav", 40, config=FAST), circuit, task=task, proxy_lang="eng")
    bare = get_task("reviews", template=TEMPLATE, label_words=LABEL_WORDS)
    with pytest.raises(NoDataError, match="has no data to give ind train examples"):
        transfer(proxy, SPEC, circuit, task=bare, proxy_lang="eng")
    no_tokenizer = copy.deepcopy(proxy)
    no_tokenizer.tokenizer = None
    with pytest.raises(ValueError, match=r"attach one with `circuit_transfer\.models\.attach_tokenizer"):
        transfer(no_tokenizer, SPEC, circuit, task=task, proxy_lang="eng")
    with pytest.raises(TypeError, match="takes a model .* or a checkpoint directory, not a dict"):
        transfer({"weights": 1}, SPEC, circuit, task=task, proxy_lang="eng")


def test_discovery_on_plain_strings_or_without_a_tokenizer_says_what_to_do(proxy, task):
    with pytest.raises(
        TypeError,
        match=r"examples\[0\] is a str \('great food'\), not an Example: the task "
        r"needs each text's gold label",
    ):
        as_users_run(discover)(proxy, task, ["great food", "awful food"], k=2)
    no_tokenizer = copy.deepcopy(proxy)
    no_tokenizer.tokenizer = None
    with pytest.raises(ValueError, match=r"attach_tokenizer\(model, tokenizer\)"):
        discover(no_tokenizer, task, task.examples("eng", "valid"), k=2)
