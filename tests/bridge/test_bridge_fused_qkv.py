"""Head masks on a bridge whose attention fuses Q, K and V: GPT-2's Conv1D `c_attn`, Phi-3's `qkv_proj`.

At boot the bridge splits `c_attn` (`[d_model, 3 * n_heads * d_head]`) into q, k and v linears
that are *views* of it; the forward runs the views, so the masks act on them and, through the
same memory, on `c_attn`. Independent answers: the HookedTransformer that TransformerLens converts
from the same weights (its masks, read in `c_attn`'s Conv1D layout, must be the bridge's), the
bit patterns after training and resume, and the HF checkpoint loaded on both backends. Phi-3's
`qkv_proj` (q rows, then k rows, then v rows) is split into row-block views the same way. NeoX's
`query_key_value`, which the bridge copies instead of viewing, is refused.
"""

from __future__ import annotations

import pytest
import torch
from test_bridge_backend import HEADS, POLICIES, _bits, _tokens, _train, train_with_resume_and_check_bits

from circuit_transfer.delta import apply_delta, extract_delta
from circuit_transfer.masking import MaskPolicy, head_grad_masks, trainable_set
from circuit_transfer.models import load_model, save_checkpoint
from circuit_transfer.models.backend import HAS_HOOKED
from circuit_transfer.models.bridge import hf_param_name
from circuit_transfer.models.params import count_parameters

pytestmark = pytest.mark.bridge
needs_hooked = pytest.mark.skipif(
    not HAS_HOOKED, reason="compares with HookedTransformer (TransformerLens 3.x)"
)


def _gpt2_in_tl_layout(masks: dict, layer: int, cfg) -> dict[str, torch.Tensor]:
    """The bridge's masks of one GPT-2 layer in TransformerLens's layout: `c_attn` column
    `i*D + h*d_head + j` is `W_{Q,K,V}[h, :, j]`, `c_proj` row `h*d_head + j` is `W_O[h, j]`."""
    n_heads, d_head = cfg.n_heads, cfg.d_head
    D = n_heads * d_head
    fused = masks[f"transformer.h.{layer}.attn.qkv.weight"]
    bias = masks[f"transformer.h.{layer}.attn.qkv.bias"]
    out = {}
    for i, x in enumerate("QKV"):
        out[f"W_{x}"] = fused[:, i * D : (i + 1) * D].reshape(-1, n_heads, d_head).permute(1, 0, 2)
        out[f"b_{x}"] = bias[i * D : (i + 1) * D].reshape(n_heads, d_head)
    out["W_O"] = masks[f"transformer.h.{layer}.attn.o.weight"].reshape(n_heads, d_head, -1)
    out["b_O"] = masks[f"transformer.h.{layer}.attn.o.bias"]
    return out


def _phi3_in_tl_layout(masks: dict, layer: int, cfg) -> dict[str, torch.Tensor]:
    """Phi-3's `qkv_proj` (nn.Linear) stacks the q rows, then the k rows, then the v rows (GQA:
    n_kv_heads * d_head each for k and v); row `h*d_head + j` of a block is `W[h, :, j]`."""
    d = cfg.d_head
    fused = masks[f"model.layers.{layer}.self_attn.qkv.weight"]
    q, k, v = fused.split([cfg.n_heads * d, cfg.n_key_value_heads * d, cfg.n_key_value_heads * d])
    out = {
        name: t.reshape(-1, d, t.shape[1]).transpose(1, 2)
        for name, t in (("W_Q", q), ("_W_K", k), ("_W_V", v))
    }
    out["W_O"] = masks[f"model.layers.{layer}.self_attn.o.weight"].T.reshape(cfg.n_heads, d, -1)
    return out


IN_TL_LAYOUT = {"gpt2": _gpt2_in_tl_layout, "phi3": _phi3_in_tl_layout}


@needs_hooked
@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize("family", list(IN_TL_LAYOUT))
def test_fused_masks_are_the_hooked_masks_in_the_fused_layout(family, policy_name, hf_dir):
    policy = POLICIES[policy_name]
    bridge = load_model(hf_dir(family), device="cpu", backend="bridge")
    hooked = load_model(hf_dir(family), device="cpu", backend="hooked")
    masks = {hf_param_name(n): m for n, m in head_grad_masks(bridge, HEADS, policy).items()}
    expected = head_grad_masks(hooked, HEADS, policy)
    for layer in range(bridge.cfg.n_layers):
        for attr, mask in IN_TL_LAYOUT[family](masks, layer, bridge.cfg).items():
            assert torch.equal(mask, expected[f"blocks.{layer}.attn.{attr}"]), (layer, attr)
    assert count_parameters(bridge) < sum(p.numel() for p in bridge.parameters())  # views once
    if family == "gpt2":  # Phi-3's HF model has no attention or MLP biases; TransformerLens adds zeros
        assert count_parameters(bridge) == count_parameters(hooked)
        assert count_parameters(bridge, head_grad_masks(bridge, HEADS, policy)) == count_parameters(
            hooked, expected
        )


@pytest.mark.parametrize("policy_name", ["default", "bO-any-kv-never", "norms-frozen"])
@pytest.mark.parametrize("family", list(IN_TL_LAYOUT))
def test_fused_masked_entries_bit_identical_after_training_with_resume(family, policy_name, hf_dir, tmp_path):
    changed = train_with_resume_and_check_bits(hf_dir(family), POLICIES[policy_name], tmp_path)
    prefix = {"gpt2": "transformer.h", "phi3": "model.layers"}[family]
    attn = {"gpt2": "attn", "phi3": "self_attn"}[family]
    assert {f"{prefix}.0.{attn}.qkv.weight", f"{prefix}.1.{attn}.o.weight"} <= changed
    assert not any(
        ".mlp." in n or "embed" in n or ".wte." in n or ".wpe." in n or "lm_head" in n for n in changed
    )


@needs_hooked
def test_gpt2_bridge_checkpoint_holds_hf_weights_and_a_delta_reproduces_training(hf_dir, tmp_path):
    model = load_model(hf_dir("gpt2"), device="cpu", backend="bridge")
    ckpt = save_checkpoint(model, tmp_path / "proxy")  # the views share c_attn's memory: saved once
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    tset = _train(model, HEADS, MaskPolicy(), steps=3, tmp_path=tmp_path)
    delta = extract_delta(model, base, tset.masks)
    reloaded = load_model(ckpt)
    for (name, p), q in zip(reloaded.named_parameters(), base.values()):
        assert torch.equal(_bits(p.detach()), _bits(q)), name
    apply_delta(reloaded, delta)
    tokens = _tokens(model)
    with torch.no_grad():
        assert torch.equal(reloaded(tokens), model(tokens))
        as_hooked = load_model(save_checkpoint(model, tmp_path / "trained"), backend="hooked")
        torch.testing.assert_close(as_hooked(tokens), model(tokens), rtol=0, atol=1e-4)


def test_neox_fused_qkv_is_refused_clearly(hf_dir):
    bridge = load_model(hf_dir("neox"), device="cpu", backend="bridge")
    with pytest.raises(
        NotImplementedError, match=r"fuses Q, K and V .* runs copies of them, not views.*backend='hooked'"
    ):
        trainable_set(bridge, HEADS)
