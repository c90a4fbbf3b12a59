"""The TransformerBridge backend: loading, head masks on the HF projections, checkpoints, deltas.

Random local HF models of three families (Llama with grouped-query attention, Qwen3 with QK-norm,
Gemma 3 with sandwich norms and one KV head) are booted offline through `load_model(...,
backend="bridge")`. Independent answers: the HF model's own logits; the HookedTransformer built by
TransformerLens's weight conversion from the same directory (its masks, mapped to the HF layout,
must be the bridge's masks); hand counts of the trainable entries; bit patterns after training.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from circuit_transfer.delta import apply_delta, extract_delta
from circuit_transfer.masking import MaskPolicy, head_grad_masks, masked_training, trainable_set
from circuit_transfer.models import load_model
from circuit_transfer.models.backend import HAS_HOOKED
from circuit_transfer.models.bridge import hf_param_name, is_bridge
from circuit_transfer.models.checkpoint import (
    CheckpointError,
    checkpoint_backend,
    load_checkpoint,
    save_checkpoint,
)
from circuit_transfer.optim import MaskedAdamW, OptimConfig, load_training_state, save_training_state

pytestmark = pytest.mark.bridge
needs_hooked = pytest.mark.skipif(
    not HAS_HOOKED, reason="compares with HookedTransformer (TransformerLens 3.x)"
)

FAMILIES = ["llama", "qwen3", "gemma3"]
HEADS = [(0, 1), (1, 2), (1, 3)]
POLICIES = {
    "default": MaskPolicy(),
    "bO-any-kv-never": MaskPolicy(b_O="any-head", gqa_kv="never"),
    "norms-frozen": MaskPolicy(norms="frozen"),
    "qk-norm-frozen": MaskPolicy(qk_norm="frozen"),
}


def _tokens(model, n: int = 3) -> torch.Tensor:
    from hf_families import TEXTS

    return model.tokenizer(TEXTS[:n], return_tensors="pt", padding=True).input_ids[:, :10]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


@pytest.mark.parametrize("family", FAMILIES)
def test_bridge_loads_offline_and_equals_hf(family, hf_dir):
    path = hf_dir(family)
    bridge = load_model(path, device="cpu", backend="bridge")
    assert is_bridge(bridge)
    tok = bridge.tokenizer
    assert tok.padding_side == "right" and tok.pad_token is not None
    tokens = _tokens(bridge)
    hf = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(bridge(tokens), hf(tokens).logits, rtol=0, atol=1e-4)
        _, cache = bridge.run_with_cache(tokens)
    assert cache["blocks.1.attn.hook_z"].shape == (*tokens.shape, bridge.cfg.n_heads, bridge.cfg.d_head)
    assert "blocks.0.ln1.hook_scale" in cache.keys()
    assert bridge.to_tokens("Hotel ini").tolist()[0] == tok("Hotel ini").input_ids


@needs_hooked
@pytest.mark.parametrize("family", FAMILIES)
def test_bridge_logits_equal_hooked_unprocessed(family, hf_dir):
    """Both unprocessed: no per-row constant between them."""
    bridge = load_model(hf_dir(family), device="cpu", backend="bridge")
    hooked = load_model(hf_dir(family), device="cpu", backend="hooked")
    tokens = _tokens(bridge)
    with torch.no_grad():
        torch.testing.assert_close(bridge(tokens), hooked(tokens), rtol=0, atol=1e-4)


def _hooked_to_hf_layout(name: str, mask: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """A hooked attention mask in the HF projection's layout, with its HF module name; else None."""
    layer, _, attr = name.removeprefix("blocks.").partition(".attn.")
    if attr in ("W_Q", "_W_K", "_W_V") or (attr in ("W_K", "W_V") and mask.dim() == 3):
        proj = {"W_Q": "q", "_W_K": "k", "W_K": "k", "_W_V": "v", "W_V": "v"}[attr]
        return f"model.layers.{layer}.self_attn.{proj}_proj.weight", mask.permute(0, 2, 1).reshape(
            -1, mask.shape[1]
        )
    if attr == "W_O":
        return f"model.layers.{layer}.self_attn.o_proj.weight", mask.reshape(-1, mask.shape[2]).T
    return None


@needs_hooked
@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize("family", FAMILIES)
def test_bridge_head_masks_are_the_hooked_masks_in_hf_layout(family, policy_name, hf_dir):
    policy = POLICIES[policy_name]
    bridge = load_model(hf_dir(family), device="cpu", backend="bridge")
    hooked = load_model(hf_dir(family), device="cpu", backend="hooked")
    bridge_masks = {hf_param_name(n): m for n, m in head_grad_masks(bridge, HEADS, policy).items()}
    n_compared = 0
    for name, mask in head_grad_masks(hooked, HEADS, policy).items():
        mapped = _hooked_to_hf_layout(name, mask)
        if mapped is not None and mapped[0] in bridge_masks:
            assert torch.equal(bridge_masks[mapped[0]], mapped[1]), (name, mapped[0])
            n_compared += 1
    assert n_compared == 4 * bridge.cfg.n_layers


@pytest.mark.parametrize("family", FAMILIES)
def test_trainable_set_counts_the_real_hf_parameters(family, hf_dir):
    """Hand count: per selected head d_head rows of q_proj and columns of o_proj; per touched KV
    group d_head rows of k_proj and v_proj; every norm and QK-norm weight; nothing else."""
    bridge = load_model(hf_dir(family), device="cpu", backend="bridge")
    cfg = bridge.cfg
    d, dm, n_kv = cfg.d_head, cfg.d_model, cfg.n_key_value_heads or cfg.n_heads
    groups = {(ly, h // (cfg.n_heads // n_kv)) for ly, h in HEADS}
    norms = sum(
        p.numel()
        for n, p in bridge.named_parameters()
        if "norm" in hf_param_name(n) or hf_param_name(n).endswith("layernorm.weight")
    )
    expected = len(HEADS) * 2 * d * dm + len(groups) * 2 * d * dm + norms
    tset = trainable_set(bridge, HEADS)
    assert tset.n_trainable == expected
    assert tset.n_total == sum(p.numel() for p in bridge.parameters())
    assert not any(".mlp." in n or "embed" in n for n in tset.trainable_tensors)


def _train(model, heads, policy, steps, tmp_path, resume_from=None, save_at=None):
    config = OptimConfig(lr=1e-2, weight_decay=0.1, max_grad_norm=1.0, schedule="cosine")
    tokens = _tokens(model)
    with masked_training(model, heads, policy) as tset:
        opt = MaskedAdamW(model, config, total_steps=steps, masks=tset.masks)
        start = 0 if resume_from is None else load_training_state(resume_from, model, opt)["step"]
        for step in range(start, steps):
            logits = model(tokens)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
            ) * (1 + step % 3)
            loss.backward()
            opt.step()
            if save_at is not None and step + 1 == save_at:
                save_training_state(tmp_path / "state.pt", model, opt, {"step": save_at})
                return tset
    return tset


def train_with_resume_and_check_bits(path, policy: MaskPolicy, tmp_path) -> set[str]:
    """Train 3 steps, save, resume a perturbed fresh copy for 3 more; assert every masked entry
    kept its bits and every trainable one moved. Returns the HF names of the changed tensors."""
    model = load_model(path, device="cpu", backend="bridge")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train(model, HEADS, policy, steps=6, tmp_path=tmp_path, save_at=3)
    fresh = load_model(path, device="cpu", backend="bridge")
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)  # everything must come from the saved state
    tset = _train(fresh, HEADS, policy, steps=6, tmp_path=tmp_path, resume_from=tmp_path / "state.pt")
    after = dict(fresh.named_parameters())
    for name, mask in tset.masks.items():
        frozen = mask == 0
        assert torch.equal(_bits(after[name].detach()[frozen]), _bits(before[name][frozen])), name
        assert after[name].detach()[~frozen].ne(before[name][~frozen]).all(), name
    return {hf_param_name(n) for n in after if not torch.equal(after[n].detach(), before[n])}


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize("family", FAMILIES)
def test_masked_entries_bit_identical_after_training_with_resume(family, policy_name, hf_dir, tmp_path):
    policy = POLICIES[policy_name]
    changed = train_with_resume_and_check_bits(hf_dir(family), policy, tmp_path)
    assert {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.o_proj.weight"} <= changed
    assert not any(".mlp." in n or "embed" in n or "lm_head" in n for n in changed)
    assert ("model.layers.1.self_attn.k_proj.weight" in changed) == (policy.gqa_kv == "any-query-head")


@pytest.mark.parametrize("family", ["llama"])
def test_bridge_checkpoint_and_delta_round_trip(family, hf_dir, tmp_path):
    model = load_model(hf_dir(family), device="cpu", backend="bridge")
    ckpt = save_checkpoint(model, tmp_path / "proxy")
    assert checkpoint_backend(ckpt) == "bridge"
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    tset = _train(model, HEADS, MaskPolicy(), steps=3, tmp_path=tmp_path)
    delta = extract_delta(model, base, tset.masks)
    reloaded = load_model(ckpt)  # a checkpoint loads on the backend that wrote it
    assert is_bridge(reloaded)
    for (name, p), q in zip(reloaded.named_parameters(), base.values()):
        assert torch.equal(_bits(p.detach()), _bits(q)), name
    apply_delta(reloaded, delta)
    for (name, p), q in zip(reloaded.named_parameters(), model.parameters()):
        assert torch.equal(_bits(p.detach()), _bits(q.detach())), name
    tokens = _tokens(model)
    with torch.no_grad():
        assert torch.equal(reloaded(tokens), model(tokens))


@needs_hooked
def test_checkpoints_and_deltas_across_backends(hf_dir, tmp_path):
    bridge = load_model(hf_dir("llama"), device="cpu", backend="bridge")
    ckpt = save_checkpoint(bridge, tmp_path / "bridge-ckpt")
    as_hooked = load_checkpoint(ckpt, device="cpu", backend="hooked")  # plain HF weights: both load
    assert not is_bridge(as_hooked)
    tokens = _tokens(bridge)
    with torch.no_grad():
        torch.testing.assert_close(as_hooked(tokens), bridge(tokens), rtol=0, atol=1e-4)
    hooked_ckpt = save_checkpoint(as_hooked, tmp_path / "hooked-ckpt")
    assert checkpoint_backend(hooked_ckpt) == "hooked"
    with pytest.raises(CheckpointError, match="backend='hooked'"):
        load_model(hooked_ckpt, backend="bridge")
    # deltas cross backends too: tests/bridge/test_bridge_cross_backend_deltas.py


@needs_hooked
def test_attribution_head_scores_equal_on_both_backends(hf_dir):
    """Attribution patching reads gradients at `hook_z`: on the bridge that hook sees a reshaped copy,
    so the scores must still equal the HookedTransformer's of the same weights."""
    from hf_families import TEXTS

    from circuit_transfer.data import Example
    from circuit_transfer.discovery.relevance import head_relevance
    from circuit_transfer.tasks import get_task

    task = get_task("nusax-senti", label_words=[" ini", " sangat", " dan"])  # words of TEXTS
    examples = [Example(id=str(i), text=t, label=i % 3, lang="ind") for i, t in enumerate(TEXTS * 2)]
    scores = [
        head_relevance(
            load_model(hf_dir("llama"), device="cpu", backend=b), task, examples, estimator="attribution"
        )
        for b in ("hooked", "bridge")
    ]
    assert scores[0].scores.abs().max() > 0
    torch.testing.assert_close(scores[1].scores, scores[0].scores, rtol=1e-4, atol=1e-6)


def test_bridge_keeps_the_tokenizer_as_is(hf_dir):
    """TransformerBridge's `tokenizer` setter swaps in a copy that always prepends BOS; ours keeps
    the tokenizer's own behaviour (SmolLM2's adds none), as the hooked backend does."""
    from transformers import AutoTokenizer

    from circuit_transfer.models.bridge import bridge_from_hf
    from circuit_transfer.models.hf_convert import read_hf_dir

    hf_model, tokenizer = read_hf_dir(hf_dir("llama"))
    no_bos = AutoTokenizer.from_pretrained(str(hf_dir("llama")), add_bos_token=False)
    bridge = bridge_from_hf(hf_model, no_bos, model_name="llama", device="cpu")
    assert bridge.tokenizer is no_bos
    assert bridge.tokenizer("Saya suka")["input_ids"][0] != tokenizer.bos_token_id
    assert bridge.cfg.default_prepend_bos is False
