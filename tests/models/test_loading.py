"""load_model's dispatch on the spec, and its error messages (nothing is downloaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuit_transfer.models import ModelSpecError, SpecKind, load_model, resolve_spec, save_checkpoint

ACCEPTED_FORMS = ("smollm2-135m", "gemma3-270m", "checkpoint directory", "Hugging Face", "TransformerLens")


def test_offline_model_names():
    assert resolve_spec("smollm2-135m") == (SpecKind.SMOLLM2, "smollm2-135m")
    assert resolve_spec("SmolLM2-135M")[0] is SpecKind.SMOLLM2
    assert resolve_spec("gemma3-270m") == (SpecKind.GEMMA3, "gemma3-270m")
    assert resolve_spec("Gemma3-270M")[0] is SpecKind.GEMMA3


def test_transformer_lens_names_are_recognised_offline():
    assert resolve_spec("gpt2") == (SpecKind.TRANSFORMER_LENS, "gpt2")
    assert resolve_spec("EleutherAI/pythia-70m")[0] is SpecKind.TRANSFORMER_LENS


def test_checkpoint_dir(tiny_model, tmp_path):
    out = save_checkpoint(tiny_model, tmp_path / "ckpt")
    assert resolve_spec(out) == (SpecKind.CHECKPOINT, str(out))
    assert resolve_spec(str(out))[0] is SpecKind.CHECKPOINT


def test_tiny_is_not_loadable_by_name():
    with pytest.raises(ModelSpecError) as err:
        load_model("tiny")
    assert "build_tiny_model" in str(err.value) and "prepare-proxy --model tiny" in str(err.value)


def test_unknown_name_lists_the_accepted_forms():
    with pytest.raises(ModelSpecError) as err:
        load_model("no-such-model-xyz")
    for form in ACCEPTED_FORMS:
        assert form in str(err.value)


@pytest.mark.parametrize("spec", ["./runs/missing", "/nonexistent/model/dir", "runs/a/model"])
def test_missing_path_is_a_clear_error(spec):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(spec)


def test_missing_path_object(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_directory_of_neither_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelSpecError, match="neither"):
        load_model(tmp_path)


def test_a_file_is_not_a_model(tmp_path):
    f = Path(tmp_path / "weights.bin")
    f.write_bytes(b"")
    with pytest.raises(ModelSpecError, match="is a file"):
        load_model(f)
