"""Adapter-only deltas: only changeable entries are stored; base + delta = trained model, exactly."""

from __future__ import annotations

import pytest
import torch
from masking_helpers import batch, make_model, train_with_resume

from circuit_transfer.delta import (
    apply_delta,
    delta_num_values,
    extract_delta,
    load_delta,
    mask_runs,
    runs_to_index,
    save_delta,
)
from circuit_transfer.masking import MaskPolicy


def test_runs_round_trip():
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 1], [0, 0, 0, 0]])
    runs = mask_runs(mask)
    assert runs.tolist() == [[1, 2], [4, 2], [7, 1]]
    assert torch.equal(runs_to_index(runs), torch.nonzero(mask.flatten()).flatten())
    assert mask_runs(torch.zeros(3)).shape == (0, 2) and runs_to_index(mask_runs(torch.zeros(3))).numel() == 0


@pytest.mark.parametrize("kind", ["gpt2-like", "llama-like"])
def test_base_plus_delta_reproduces_trained_logits_exactly(kind, tmp_path):
    heads = [(0, 1), (1, 2), (1, 3)]
    base_model = make_model(kind)
    base_state = {k: v.clone() for k, v in base_model.state_dict().items()}
    _, trained, tset = train_with_resume(
        kind, heads, MaskPolicy(b_O="any-head"), tmp_path, steps=6, resume_at=3
    )

    delta = extract_delta(trained, base_state, tset.masks)
    assert delta_num_values(delta) == tset.n_trainable
    assert {k.rsplit(".", 1)[0] for k in delta} == set(tset.trainable_tensors)
    # a head slice is contiguous: heads 2 and 3 of layer 1 form one run of 2 x 32 x 8 entries
    assert delta["blocks.0.attn.W_Q.runs"].tolist() == [[256, 256]]
    assert delta["blocks.1.attn.W_Q.runs"].tolist() == [[512, 512]]
    path = save_delta(tmp_path / "delta.safetensors", delta, {"heads": heads, "kind": kind})

    # size: the values of the changeable entries plus a little index and header, nothing else
    n_runs = sum(len(v) for k, v in delta.items() if k.endswith(".runs"))
    payload = 4 * tset.n_trainable + 16 * n_runs
    assert payload <= path.stat().st_size <= payload + 8192
    full_bytes = 4 * tset.n_total
    assert path.stat().st_size < 0.5 * full_bytes

    loaded, metadata = load_delta(path)
    assert metadata == {"heads": [list(h) for h in heads], "kind": kind}
    fresh = make_model(kind)  # a fresh copy of the base (proxy) checkpoint
    apply_delta(fresh, loaded)
    for (name, a), b in zip(fresh.named_parameters(), trained.parameters()):
        assert torch.equal(a, b), name
    tokens = batch(99)
    with torch.no_grad():
        assert torch.equal(fresh(tokens), trained(tokens))


def test_extract_refuses_a_model_that_changed_outside_the_masks(tmp_path):
    base_model = make_model("gpt2-like")
    base_state = {k: v.clone() for k, v in base_model.state_dict().items()}
    _, trained, tset = train_with_resume(
        "gpt2-like", [(0, 0)], MaskPolicy(), tmp_path, steps=2, resume_at=None
    )
    with torch.no_grad():
        trained.blocks[0].mlp.W_in[0, 0] += 1.0
    with pytest.raises(ValueError, match=r"blocks.0.mlp.W_in: 1 entries outside the mask"):
        extract_delta(trained, base_state, tset.masks)


def test_delta_for_another_model_is_refused(tmp_path):
    _, trained, tset = train_with_resume(
        "llama-like", [(0, 0)], MaskPolicy(), tmp_path, steps=2, resume_at=None
    )
    delta = extract_delta(trained, make_model("llama-like").state_dict(), tset.masks)
    with pytest.raises(ValueError, match="does not have"):
        apply_delta(make_model("gpt2-like"), delta)


def test_delta_that_overruns_a_parameter_is_refused_before_writing():
    model = make_model("gpt2-like")
    n = model.embed.W_E.numel()
    before = model.embed.W_E.detach().clone()
    too_long = {"embed.W_E.runs": torch.tensor([[0, n + 1]]), "embed.W_E.values": torch.zeros(n + 1)}
    with pytest.raises(ValueError, match=r"delta for embed.W_E does not fit its shape \(50, 32\)"):
        apply_delta(model, too_long)
    short_values = {"embed.W_E.runs": torch.tensor([[0, 4]]), "embed.W_E.values": torch.zeros(3)}
    with pytest.raises(ValueError, match="does not fit"):
        apply_delta(model, short_values)
    assert torch.equal(model.embed.W_E.detach(), before)
