"""A head-set delta made on one backend applies to the other (`delta.convert_delta`).

Independent answer: TransformerLens's own weight conversion. A delta trained on the bridge and
applied to the hooked model of the same base weights must give, bit for bit, the HookedTransformer
that TransformerLens converts from the trained HF weights; a delta trained on the hooked model and
applied to the bridge must give HF weights whose conversion is the trained HookedTransformer (to
the float32 rounding of Gemma's `w - 1`). The logits of the two trained models then agree.
"""

from __future__ import annotations

import pytest
import torch

from circuit_transfer.delta import apply_delta, extract_delta
from circuit_transfer.masking import full_masks, head_grad_masks, ln_only_masks
from circuit_transfer.models import load_model
from circuit_transfer.models.backend import HAS_HOOKED
from circuit_transfer.optim import MaskedAdamW, OptimConfig

pytestmark = [
    pytest.mark.bridge,
    pytest.mark.skipif(not HAS_HOOKED, reason="needs HookedTransformer (TransformerLens 3.x)"),
]

FAMILIES = ["llama", "qwen2", "qwen3", "gemma3"]  # GQA; q/k/v biases; QK-norm; sandwich norms, 1 + w
HEADS = [(0, 1), (1, 2), (1, 3)]


def _tokens(model) -> torch.Tensor:
    from hf_families import TEXTS

    return model.tokenizer(TEXTS, return_tensors="pt", padding=True).input_ids[:, :10]


def _train(model, masks, steps: int = 3) -> None:
    """AdamW with weight decay, clipping and a schedule, through the masks."""
    for name, param in model.named_parameters():
        param.requires_grad_(bool(masks[name].any()))
    opt = MaskedAdamW(
        model,
        OptimConfig(lr=1e-2, weight_decay=0.1, max_grad_norm=1.0, schedule="cosine"),
        steps,
        masks=masks,
    )
    tokens = _tokens(model)
    for _ in range(steps):
        logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        opt.step()


def _trained_delta(model, masks):
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train(model, masks)
    return extract_delta(model, base, masks)


def _converted(bridge):
    """TransformerLens's conversion of the bridge's (trained) HF weights: the oracle."""
    from circuit_transfer.models.hf_convert import hooked_from_hf

    return hooked_from_hf(bridge.original_model, bridge.tokenizer, model_name="oracle", device="cpu")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_bridge_delta_on_the_hooked_model_is_the_conversion_of_the_trained_weights(family, hf_dir):
    bridge = load_model(hf_dir(family), device="cpu", backend="bridge")
    hooked = load_model(hf_dir(family), device="cpu", backend="hooked")
    delta = _trained_delta(bridge, head_grad_masks(bridge, HEADS))
    apply_delta(hooked, delta)
    oracle = dict(_converted(bridge).named_parameters())
    for name, param in hooked.named_parameters():
        assert torch.equal(param.detach(), oracle[name].detach()), name
    tokens = _tokens(bridge)
    with torch.no_grad():
        torch.testing.assert_close(hooked(tokens), bridge(tokens), rtol=0, atol=1e-5)


def _hf_expressible(masks, model):
    """The hooked head masks less the biases TransformerLens's conversion added as zeros (the HF
    model has none; the HF test models' real biases are perturbed, so never all zero)."""
    params = dict(model.named_parameters())
    is_added = {n: "b_" in n.rpartition(".")[2] and not params[n].any() for n in masks}
    return {n: torch.zeros_like(m) if is_added[n] else m for n, m in masks.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_hooked_delta_on_the_bridge_converts_back_to_the_trained_hooked_model(family, hf_dir):
    bridge = load_model(hf_dir(family), device="cpu", backend="bridge")
    hooked = load_model(hf_dir(family), device="cpu", backend="hooked")
    delta = _trained_delta(hooked, _hf_expressible(head_grad_masks(hooked, HEADS), hooked))
    apply_delta(bridge, delta)
    oracle = dict(_converted(bridge).named_parameters())
    for name, param in hooked.named_parameters():
        torch.testing.assert_close(oracle[name].detach(), param.detach(), rtol=1e-6, atol=1e-7, msg=name)
    tokens = _tokens(bridge)
    with torch.no_grad():
        torch.testing.assert_close(bridge(tokens), hooked(tokens), rtol=0, atol=1e-5)


def test_a_hooked_delta_that_trained_a_bias_the_hf_model_lacks_is_refused(hf_dir):
    """Llama has no attention biases; TransformerLens adds `b_Q`, ... as zeros and the hooked head
    masks train them: the HF model cannot hold those values."""
    bridge = load_model(hf_dir("llama"), device="cpu", backend="bridge")
    hooked = load_model(hf_dir("llama"), device="cpu", backend="hooked")
    before = {n: p.detach().clone() for n, p in bridge.named_parameters()}
    untrained = extract_delta(hooked, dict(hooked.named_parameters()), head_grad_masks(hooked, HEADS))
    apply_delta(bridge, untrained)  # the start epoch selected: the added biases are still zero
    assert all(torch.equal(p, before[n]) for n, p in bridge.named_parameters())
    delta = _trained_delta(hooked, head_grad_masks(hooked, HEADS))
    with pytest.raises(
        ValueError,
        match=r"blocks\.0\.attn\.b_Q holds trained values, but the LlamaForCausalLM HF model has "
        r"no model\.layers\.0\.self_attn\.q_proj\.bias.*Train on backend='bridge'",
    ):
        apply_delta(bridge, delta)
    assert all(torch.equal(p, before[n]) for n, p in bridge.named_parameters()), "refused after writing"


def test_deltas_the_map_does_not_cover_are_refused_naming_the_fix(hf_dir):
    olmo2 = load_model(hf_dir("olmo2"), device="cpu", backend="bridge")
    masks = ln_only_masks(olmo2)
    delta = extract_delta(olmo2, {n: p.detach() for n, p in olmo2.named_parameters()}, masks)
    with pytest.raises(
        ValueError,
        match=r"no HF <-> TransformerLens parameter map for architecture 'Olmo2ForCausalLM'.*"
        r"backend='bridge'",
    ):
        apply_delta(load_model(hf_dir("olmo2"), device="cpu", backend="hooked"), delta)
    llama = load_model(hf_dir("llama"), device="cpu", backend="bridge")
    full = extract_delta(llama, {n: p.detach() for n, p in llama.named_parameters()}, full_masks(llama))
    with pytest.raises(ValueError, match=r"model\.embed_tokens.* has no counterpart on the hooked backend.*"
                       r"full fine-tuning.*backend='bridge'"):  # fmt: skip
        apply_delta(load_model(hf_dir("llama"), device="cpu", backend="hooked"), full)
