"""save_checkpoint / load_model round trips, metadata, and errors on broken checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuit_transfer.models import (
    CheckpointError,
    attach_tokenizer,
    load_model,
    read_checkpoint_metadata,
    save_checkpoint,
)
from circuit_transfer.models.checkpoint import CONFIG, MARKER, TOKENIZER, WEIGHTS, config_to_dict


@pytest.fixture(scope="module")
def llama_like(tiny_model):
    """A random GQA + RMSNorm + rotary + SwiGLU model (SmolLM2's shape in miniature)."""
    cfg = HookedTransformerConfig(
        model_name="llama-like",
        original_architecture="LlamaForCausalLM",
        n_layers=2,
        d_model=64,
        n_heads=4,
        d_head=16,
        n_key_value_heads=2,
        d_mlp=96,
        n_ctx=64,
        d_vocab=tiny_model.cfg.d_vocab,
        act_fn="silu",
        normalization_type="RMS",
        final_rms=True,
        positional_embedding_type="rotary",
        rotary_base=100000.0,
        gated_mlp=True,
        device="cpu",
    )
    torch.manual_seed(0)
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".w"):  # make norm weights non-trivial so the round trip is tested on them
                p.add_(0.1 * torch.randn_like(p))
    return attach_tokenizer(model, tiny_model.tokenizer)


def _assert_same_model(a: HookedTransformer, b: HookedTransformer) -> None:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    for name in pa:
        assert pa[name].dtype == pb[name].dtype
        assert torch.equal(pa[name], pb[name]), name
    assert config_to_dict(a.cfg) == config_to_dict(b.cfg)
    assert a.tokenizer.backend_tokenizer.to_str() == b.tokenizer.backend_tokenizer.to_str()
    assert a.tokenizer.special_tokens_map == b.tokenizer.special_tokens_map
    assert b.tokenizer.padding_side == "right"
    text = ["Saya suka makanan ini. Sentiment: positive", "buruk"]
    assert a.tokenizer(text)["input_ids"] == b.tokenizer(text)["input_ids"]
    tokens = a.tokenizer(text, return_tensors="pt", padding=True)["input_ids"]
    with torch.no_grad():
        assert torch.equal(a(tokens), b(tokens))


@pytest.mark.parametrize("which", ["tiny_model", "llama_like"])
def test_round_trip_is_exact(which, request, tmp_path):
    model = request.getfixturevalue(which)
    out = save_checkpoint(model, tmp_path / "ckpt", metadata={"task": "sentiment", "acc": 0.8})
    loaded = load_model(out, device="cpu")
    _assert_same_model(model, loaded)
    assert read_checkpoint_metadata(out) == {"task": "sentiment", "acc": 0.8}
    assert loaded.cfg.device == "cpu"


def test_layout_and_no_temporary_leftovers(tiny_model, tmp_path):
    out = save_checkpoint(tiny_model, tmp_path / "ckpt")
    assert {p.name for p in out.iterdir()} == {MARKER, WEIGHTS, CONFIG, TOKENIZER}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    marker = json.loads((out / MARKER).read_text())
    assert marker["format_version"] == 1 and marker["metadata"] == {}


def test_overwrite_replaces_a_checkpoint_but_never_another_directory(tiny_model, tmp_path):
    out = save_checkpoint(tiny_model, tmp_path / "ckpt", metadata={"v": 1})
    save_checkpoint(tiny_model, out, metadata={"v": 2})
    assert read_checkpoint_metadata(out) == {"v": 2}
    with pytest.raises(FileExistsError):
        save_checkpoint(tiny_model, out, overwrite=False)
    other = tmp_path / "results"
    other.mkdir()
    (other / "table.md").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a circuit-transfer checkpoint"):
        save_checkpoint(tiny_model, other)
    assert (other / "table.md").read_text() == "keep me"


def test_load_with_other_dtype(tiny_model, tmp_path):
    out = save_checkpoint(tiny_model, tmp_path / "ckpt")
    loaded = load_model(out, device="cpu", dtype=torch.float64)
    assert loaded.cfg.dtype == torch.float64 and loaded.W_E.dtype == torch.float64
    assert torch.equal(loaded.W_E, tiny_model.W_E.double())


@pytest.mark.parametrize("missing", [WEIGHTS, CONFIG, TOKENIZER, MARKER])
def test_missing_file_names_the_file_and_the_fix(missing, tiny_model, tmp_path):
    import shutil

    out = save_checkpoint(tiny_model, tmp_path / "ckpt")
    target = out / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(CheckpointError) as err:
        load_model(out)
    message = str(err.value)
    assert missing in message and str(out) in message and "prepare-proxy" in message


def test_weights_that_do_not_match_the_config(tiny_model, llama_like, tmp_path):
    a = save_checkpoint(tiny_model, tmp_path / "a")
    b = save_checkpoint(llama_like, tmp_path / "b")
    (a / WEIGHTS).write_bytes((b / WEIGHTS).read_bytes())
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(a)


def test_load_or_convert_converts_once_and_rebuilds_an_incomplete_cache(tiny_model, tmp_path):
    from circuit_transfer.models.checkpoint import load_or_convert

    calls = []

    def convert():
        calls.append(1)
        return tiny_model

    cached = tmp_path / "cache" / "hooked"
    first = load_or_convert(cached, convert, {"source": "test"})
    again = load_or_convert(cached, convert, {"source": "test"})
    assert len(calls) == 1 and read_checkpoint_metadata(cached) == {"source": "test"}
    for (name, a), b in zip(first.named_parameters(), again.parameters()):
        assert torch.equal(a, b) and torch.equal(a, dict(tiny_model.named_parameters())[name]), name
    (cached / WEIGHTS).unlink()  # an interrupted or damaged cache
    load_or_convert(cached, convert, {"source": "test"})
    assert len(calls) == 2 and (cached / WEIGHTS).is_file()
