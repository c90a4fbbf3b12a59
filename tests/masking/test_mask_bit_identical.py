"""The acceptance test of docs/method.md §5: masked entries are bit-identical after training with
AdamW (weight decay 0.1), clipping, a cosine schedule, and a save/resume half-way."""

from __future__ import annotations

import pytest
import torch
from masking_helpers import CONFIGS, batch, is_norm_param, lm_loss, make_model, train_with_resume

from circuit_transfer.masking import MaskPolicy, head_grad_masks, masked_training
from circuit_transfer.optim import MaskedAdamW, OptimConfig

HEADS = [(0, 1), (1, 2), (1, 3)]
POLICIES = {
    "default": MaskPolicy(),
    "bO-any-kv-never": MaskPolicy(b_O="any-head", gqa_kv="never"),
    "norms-frozen": MaskPolicy(norms="frozen"),
    "qk-norm-frozen": MaskPolicy(qk_norm="frozen"),
}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)  # compare bit patterns (-0.0 != +0.0, NaN payloads)


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_masked_entries_bit_identical_after_training_with_resume(kind, policy_name, tmp_path):
    policy = POLICIES[policy_name]
    before, model, tset = train_with_resume(kind, HEADS, policy, tmp_path)
    after = dict(model.named_parameters())
    for name, mask in tset.masks.items():
        frozen = mask == 0
        assert torch.equal(_bits(after[name].detach()[frozen]), _bits(before[name][frozen])), name
        # every trainable entry moved (all weights are random and non-zero, lr is large)
        assert after[name].detach()[~frozen].ne(before[name][~frozen]).all(), name
    # the heads of the circuit changed, MLPs / embeddings / unembedding did not
    changed = {n for n in after if not torch.equal(after[n].detach(), before[n])}
    assert {"blocks.0.attn.W_Q", "blocks.1.attn.W_O", "blocks.1.attn.b_Q"} <= changed
    assert not any(".mlp." in n or n.startswith(("embed.", "pos_embed.", "unembed.")) for n in changed)
    qk_norms = {n for n in after if ".q_norm." in n or ".k_norm." in n}
    norms = {n for n in after if is_norm_param(n)} - qk_norms
    assert (norms <= changed) if policy.norms == "trainable" else not (norms & changed)
    qk_trainable = policy.norms == "trainable" and policy.qk_norm == "with-norms"
    assert (qk_norms <= changed) if qk_trainable else not (qk_norms & changed)
    assert bool(qk_norms) == (kind in ("qwen3-like", "gemma3-like"))
    assert ("blocks.1.attn.b_O" in changed) == (policy.b_O == "any-head")
    if kind != "gpt2-like":
        assert ("blocks.1.attn._W_K" in changed) == (policy.gqa_kv == "any-query-head")
    if model.cfg.n_key_value_heads == 2:  # layer 1's heads 2, 3 are KV group 1: group 0 stays
        assert torch.equal(after["blocks.1.attn._W_V"].detach()[0], before["blocks.1.attn._W_V"][0])
    if model.cfg.use_attention_sinks:  # a sink per head: only the circuit's heads' sinks move
        sinks, sinks_before = after["blocks.1.attn.sinks"].detach(), before["blocks.1.attn.sinks"]
        assert sinks[[2, 3]].ne(sinks_before[[2, 3]]).all()
        assert torch.equal(sinks[[0, 1]], sinks_before[[0, 1]])
        assert torch.equal(
            after["blocks.0.attn.sinks"].detach()[[0, 2, 3]], before["blocks.0.attn.sinks"][[0, 2, 3]]
        )
    if model.cfg.num_experts:  # router and experts are MLP parameters: frozen under a head set
        assert any(".mlp.experts." in n for n in after) and any(
            n.endswith("mlp.W_gate.weight") for n in after
        )


@pytest.mark.parametrize("kind", ["gpt2-like", "llama-like"])
def test_n_trainable_equals_number_of_entries_that_changed(kind, tmp_path):
    before, model, tset = train_with_resume(kind, HEADS, MaskPolicy(b_O="any-head"), tmp_path)
    n_changed = sum(int(p.detach().ne(before[n]).sum()) for n, p in model.named_parameters())
    assert n_changed == tset.n_trainable
    assert 0 < tset.fraction < 0.5


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    _, resumed, _ = train_with_resume("llama-like", HEADS, MaskPolicy(), tmp_path, resume_at=4)
    _, straight, _ = train_with_resume("llama-like", HEADS, MaskPolicy(), tmp_path, resume_at=None)
    for (name, a), b in zip(resumed.named_parameters(), straight.parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("impl", [{"foreach": True}, {"fused": True}, {"foreach": False}])
def test_foreach_and_fused_kernels_keep_masked_entries(impl, tmp_path):
    config = OptimConfig(lr=1e-2, weight_decay=0.1, schedule="linear", **impl)
    before, model, tset = train_with_resume(
        "gpt2-like", HEADS, MaskPolicy(), tmp_path, config=config, steps=6, resume_at=3
    )
    for name, p in model.named_parameters():
        frozen = tset.masks[name] == 0
        assert torch.equal(_bits(p.detach()[frozen]), _bits(before[name][frozen])), name


def test_optimizer_alone_masks_without_hooks_and_clips_only_trainable_grads():
    """No masked_training block: grads of frozen heads are non-zero, yet the optimizer keeps them
    out of the clipping norm and of the update."""
    model = make_model("gpt2-like")
    masks = head_grad_masks(model, HEADS)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = MaskedAdamW(model, OptimConfig(lr=1e-2, max_grad_norm=1e-3), total_steps=3, masks=masks)
    assert "blocks.0.mlp.W_in" not in opt.names  # all-zero mask: not optimised at all
    for step in range(3):
        lm_loss(model, batch(step)).backward()
        expected = torch.sqrt(
            sum(((p.grad * masks[n]) ** 2).sum() for n, p in model.named_parameters() if masks[n].any())
        )
        assert model.blocks[0].attn.W_Q.grad[0].ne(0).any()  # a frozen head does get a gradient here
        opt.step()
        assert opt.last_grad_norm == pytest.approx(float(expected), rel=1e-5)
    for name, p in model.named_parameters():
        frozen = masks[name] == 0
        assert torch.equal(_bits(p.detach()[frozen]), _bits(before[name][frozen])), name


def test_momentum_in_a_loaded_state_cannot_move_masked_entries():
    """A state whose moments are non-zero at masked entries (e.g. saved by an unmasked run) is
    cleaned on load."""
    model = make_model("llama-like")
    masks = head_grad_masks(model, HEADS)
    with masked_training(model, HEADS):
        opt = MaskedAdamW(model, OptimConfig(lr=1e-2), total_steps=4, masks=masks)
        lm_loss(model, batch(0)).backward()
        opt.step()
        state = opt.state_dict()
        for per_param in state["optimizer"]["state"].values():
            per_param["exp_avg"] = torch.randn_like(per_param["exp_avg"])
            per_param["exp_avg_sq"] = torch.rand_like(per_param["exp_avg_sq"])
        opt.load_state_dict(state)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        for step in range(1, 4):
            lm_loss(model, batch(step)).backward()
            opt.step()
    for name, p in model.named_parameters():
        frozen = masks[name] == 0
        assert torch.equal(_bits(p.detach()[frozen]), _bits(before[name][frozen])), name
