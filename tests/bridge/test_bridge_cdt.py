"""CD-T on the TransformerBridge: the bridge's model access and clean run against the hooked backend
of the same weights, and the backend-independent checks (completeness, the slow reference, the
first-order check against autograd, docs/method.md §3c) on the bridge alone.

Random local HF models of every family the bridge builder maps (`access_bridge.ARCHITECTURES`),
each with a padded batch of three sentences. Comparisons are at real token positions: at a
padding query HF and TransformerLens attend differently (nothing real reads those rows).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from circuit_transfer.cdt import Rules, decompose_heads
from circuit_transfer.cdt.engine import _cache_names
from circuit_transfer.cdt.reference import reference_decompose
from circuit_transfer.models import load_model
from circuit_transfer.models.access import model_access
from circuit_transfer.models.backend import HAS_HOOKED

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "families"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cdt"))

from first_order import first_order_gap  # noqa: E402
from hf_families import TEXTS  # noqa: E402

pytestmark = pytest.mark.bridge

MAPPED = [
    "apertus",
    "gpt2",
    "gpt_neo",
    "neox",
    "llama",
    "qwen3",
    "gemma3",
    "mistral",
    "qwen2",
    "gemma",
    "gemma2",
    "olmo2",
    "olmo3",
    "phi3",
]
"""Families the bridge builder maps: GQA, QK-norm per head (Qwen3, Gemma 3) and over all heads
(OLMo 2, 3), Gemma's 1 + weight norms, sandwich and post norms, soft-caps, sliding windows, two rotary
bases (Gemma 3), fused QKV and gate-up projections (Phi-3, GPT-2; NeoX's per head), learned
positions and LayerNorm (GPT-2, NeoX), parallel blocks and partial rotary (NeoX)."""

CORE = ["llama", "qwen3", "gemma3"]
RULES = [Rules("decomposed", "magnitude"), Rules("frozen", "irrelevant")]
PATTERN_TOL = 1e-3
"""The relevant pattern is a softmax of the relevant scores alone, which on these random models can
be sharp: the backends' q and k (equal to 3e-7 relative, float32 rounding; HF's norms compute in
float32 even in a float64 model) give patterns equal to 2e-4 on OLMo 2 (1e-6 on the others). The
logits and every other hook are held to 1e-5."""
needs_hooked = pytest.mark.skipif(not HAS_HOOKED, reason="needs HookedTransformer (TransformerLens 3.x)")


def _batch(model) -> tuple[Tensor, Tensor]:
    enc = model.tokenizer(TEXTS, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def _real(x: Tensor, name: str, mask: Tensor) -> Tensor:
    """The entries of `[src, batch, ...]` at real (query) positions."""
    if name.endswith("hook_pattern"):  # [src, batch, head, query, key]
        x = x.transpose(2, 3)
    return x[:, mask.bool()]


def _scale(*parts: Tensor) -> float:
    """The largest magnitude among the parts: without the stability rule beta can outgrow the
    activation (OLMo 2 here: 1e4 against logits of 2), and beta + gamma then cancels that much."""
    return max(float(p.abs().max()) for p in parts)


def _baseline(model, seed: int = 0) -> Tensor:
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(cfg.n_layers, cfg.n_heads, cfg.d_head, generator=gen).to(cfg.dtype)


def _record(model) -> list[str]:
    suffixes = ["hook_resid_post", "hook_attn_out", "attn.hook_pattern", "mlp.hook_post"]
    # no rotary on GPT-2; the bridge's fused-QKV rotary attention (Phi-3, NeoX) never fires hook_rot_q
    fused = type(model.blocks[0].attn).__name__.startswith("JointQKV")
    if model.cfg.positional_embedding_type == "rotary" and not fused:
        suffixes.append("attn.hook_rot_q")
    return [f"blocks.{layer}.{s}" for layer in range(model.cfg.n_layers) for s in suffixes]


def _sources(model) -> list[tuple[int, int]]:
    return [(layer, head) for layer in range(model.cfg.n_layers) for head in (0, model.cfg.n_heads - 1)]


def _assert_same_access(hooked, bridge, path: str = "access") -> None:
    """Every field of the two access layers equal: tensors to 1e-6, flags exactly, functions on a probe."""
    if dataclasses.is_dataclass(hooked):
        for field in dataclasses.fields(hooked):
            _assert_same_access(
                getattr(hooked, field.name), getattr(bridge, field.name), f"{path}.{field.name}"
            )
    elif isinstance(hooked, tuple):
        assert len(hooked) == len(bridge), path
        for i, (a, b) in enumerate(zip(hooked, bridge, strict=True)):
            _assert_same_access(a, b, f"{path}[{i}]")
    elif isinstance(hooked, Tensor) or isinstance(bridge, Tensor):
        assert isinstance(hooked, Tensor) and isinstance(bridge, Tensor), (path, hooked, bridge)
        if path.endswith(
            (".sin", ".cos")
        ):  # TransformerLens's tables cover n_ctx, the bridge's what was asked
            hooked = hooked[: bridge.shape[0]]
        assert hooked.shape == bridge.shape, (path, hooked.shape, bridge.shape)
        torch.testing.assert_close(bridge, hooked.to(bridge.dtype), rtol=1e-6, atol=1e-6, msg=path)
    elif callable(hooked):
        probe = torch.linspace(-4, 4, 101)
        torch.testing.assert_close(bridge(probe), hooked(probe), rtol=1e-6, atol=1e-6, msg=path)
    else:
        assert hooked == bridge or (
            isinstance(hooked, float) and abs(hooked - bridge) <= 1e-9 * abs(hooked)
        ), (
            path,
            hooked,
            bridge,
        )


@needs_hooked
@pytest.mark.parametrize("family", MAPPED)
def test_bridge_access_equals_hooked_access(hf_dir, family: str) -> None:
    """Each mapping against TransformerLens's conversion of the same HF weights: norms (Gemma's
    1 + weight), per-head views of q/k/v/o and KV groups, scale, rotary tables per layer, windows,
    QK-norms, soft-caps, MLP, unembedding."""
    hooked = load_model(hf_dir(family), backend="hooked", device="cpu")
    bridge = load_model(hf_dir(family), backend="bridge", device="cpu")
    n_pos = 24
    hooked(torch.zeros(1, n_pos, dtype=torch.long))  # TransformerLens extends its rotary tables lazily
    _assert_same_access(model_access(hooked), model_access(bridge, n_positions=n_pos))


@needs_hooked
@pytest.mark.parametrize("family", MAPPED)
def test_bridge_clean_run_equals_hooked_at_every_hook_the_engine_reads(hf_dir, family: str) -> None:
    """The engine's clean run on the bridge is `run_with_cache` on the HF modules; every hook it
    reads (norm scales and normalised inputs, q/k/v/z/pattern, attn_out and mlp_out, whose meaning
    differs on some bridge architectures, the MLP pre-activations) equals the hooked backend's."""
    hooked = load_model(hf_dir(family), backend="hooked", device="cpu")
    bridge = load_model(hf_dir(family), backend="bridge", device="cpu")
    tokens, mask = _batch(bridge)
    names = _cache_names(bridge, 0, [])
    assert names <= set(hooked.hook_dict) | {"hook_pos_embed"}
    with torch.no_grad():
        _, ours = bridge.run_with_cache(tokens, attention_mask=mask, names_filter=lambda n: n in names)
        _, theirs = hooked.run_with_cache(tokens, attention_mask=mask, names_filter=lambda n: n in names)
    read = [n for n in names if n in theirs.cache_dict]  # hook_pos_embed: read only for shortformer
    assert {n for n in names if n.endswith(("hook_scale", "hook_pattern", "hook_attn_out"))} <= set(read)
    for name in read:
        a, b = _real(ours[name][None], name, mask), _real(theirs[name][None], name, mask)
        assert a.shape == b.shape, (family, name)
        assert (a - b).abs().max() <= 1e-5 * max(float(b.abs().max()), 1.0), (family, name)


@needs_hooked
@pytest.mark.parametrize("family", MAPPED)
def test_bridge_cdt_equals_hooked_cdt(hf_dir, family: str) -> None:
    """CD-T on the bridge equals CD-T on the HookedTransformer of the same weights (both
    unprocessed) to 1e-5 relative: sources at every layer, at the logits and recorded hooks."""
    hooked = load_model(hf_dir(family), backend="hooked", device="cpu")
    bridge = load_model(hf_dir(family), backend="bridge", device="cpu")
    tokens, mask = _batch(bridge)
    mu = _baseline(bridge)
    parallel = model_access(bridge, n_positions=1).blocks[0].parallel  # NeoX: layer 0's MLP reads resid_pre
    for rules in RULES:
        record = [n for n in _record(bridge) if rules.attention == "decomposed" or "pattern" not in n]
        kwargs = dict(baseline=mu, record=record, attention_mask=mask, rules=rules)
        ours = decompose_heads(bridge, tokens, _sources(bridge), **kwargs)
        theirs = decompose_heads(hooked, tokens, _sources(hooked), **kwargs)
        pairs = [
            ("logits", ours.beta_logits, theirs.beta_logits),
            ("full logits", ours.full_logits[None], theirs.full_logits[None]),
        ]
        pairs += [(name, ours.beta[name], theirs.beta[name]) for name in record]
        for name, a, b in pairs:
            a, b = _real(a, name, mask), _real(b, name, mask)
            if not b.any():  # upstream of every source (layer 0's q), or not decomposed (frozen)
                assert not a.any(), (family, rules, name)
                upstream = ("blocks.0.attn.", "blocks.0.mlp.") if parallel else ("blocks.0.attn.",)
                assert name.startswith(upstream) or rules.attention == "frozen", (family, name)
                continue
            err = float((a - b).abs().max() / b.abs().max())
            assert err <= PATTERN_TOL if name.endswith("hook_pattern") else err <= 1e-5, (
                family,
                rules,
                name,
                err,
            )


@needs_hooked
def test_bridge_cdt_equals_hooked_cdt_with_left_padding(hf_dir) -> None:
    """Left padding shifts the rotary positions: both backends place them alike."""
    hooked = load_model(hf_dir("gemma3"), backend="hooked", device="cpu")
    bridge = load_model(hf_dir("gemma3"), backend="bridge", device="cpu")
    bridge.tokenizer.padding_side = "left"
    try:
        tokens, mask = _batch(bridge)
    finally:
        bridge.tokenizer.padding_side = "right"
    assert not mask[:, 0].all()
    kwargs = dict(baseline=_baseline(bridge), attention_mask=mask)
    ours = decompose_heads(bridge, tokens, [(0, 1), (1, 2)], **kwargs)
    theirs = decompose_heads(hooked, tokens, [(0, 1), (1, 2)], **kwargs)
    a, b = _real(ours.beta_logits, "logits", mask), _real(theirs.beta_logits, "logits", mask)
    assert float((a - b).abs().max() / b.abs().max()) <= 1e-5


@pytest.mark.parametrize("family", MAPPED)
def test_bridge_parts_add_up(hf_dir, family: str) -> None:
    """Completeness on the bridge alone: the engine's clean logits are the bridge's own (hence
    HF's), beta + gamma is the clean run at the recorded hooks, and the slow reference, which
    propagates gamma by its own rules, adds up to the clean run too."""
    bridge = load_model(hf_dir(family), backend="bridge", device="cpu")
    tokens, mask = _batch(bridge)
    record = [n for n in _record(bridge) if not n.endswith("hook_pattern")]
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(tokens, attention_mask=mask)
        hf_logits = bridge.original_model(tokens, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(logits[real], hf_logits[real], rtol=0, atol=1e-5)
    mu = _baseline(bridge)
    out = decompose_heads(bridge, tokens, _sources(bridge), mu, record=record, attention_mask=mask)
    assert (out.full_logits - logits)[real].abs().max() <= 1e-5 * _scale(logits)
    err = ((out.beta_logits + out.gamma_logits) - logits)[:, real].abs().max()
    assert err <= 1e-4 * _scale(logits, out.beta_logits[:, real])
    for name in record:
        full, beta = cache[name][real], out.beta[name][:, real]
        assert (beta + out.gamma[name][:, real] - full).abs().max() <= 1e-4 * _scale(full, beta), name
    single = tokens[:1, : int(mask[0].sum())]
    _, clean = bridge.run_with_cache(single)
    parts = reference_decompose(bridge, single, (0, 1), mu[0, 1], RULES[0], cache=clean)
    for name, (beta, gamma) in parts.items():
        full = bridge(single) if name == "logits" else clean[name]
        assert (beta + gamma - full).abs().max() <= 1e-4 * _scale(full, beta), (family, name)


@pytest.mark.parametrize("family", MAPPED)
def test_bridge_engine_equals_reference(hf_dir, family: str) -> None:
    """The batched engine equals the slow two-part reference on the bridge, float64: to 1e-5, not
    the hooked backend's 1e-10, because HF's RMSNorms compute in float32 even in a float64 model, and
    the engine reads those clean activations where the reference recomputes gamma in float64."""
    bridge = load_model(hf_dir(family), backend="bridge", device="cpu", dtype=torch.float64)
    tokens = bridge.tokenizer(TEXTS[:1], return_tensors="pt")["input_ids"]
    mu = _baseline(bridge, 1)
    heads = [(1, 2), (0, 0)]
    names = [f"blocks.{i}.hook_resid_post" for i in range(bridge.cfg.n_layers)]
    _, cache = bridge.run_with_cache(tokens)
    for rules in RULES:
        out = decompose_heads(bridge, tokens, heads, mu, record=names, rules=rules)
        for i, (layer, head) in enumerate(heads):
            ref = reference_decompose(bridge, tokens, (layer, head), mu[layer, head], rules, cache=cache)
            beta_ref = ref["logits"][0]
            err = (out.beta_logits[i] - beta_ref).abs().max()
            assert err <= 1e-5 * _scale(beta_ref, ref["logits"][1]), (family, rules)
            for name in names:
                expected = ref[name][0] if name in ref else torch.zeros_like(out.beta[name][i])
                err = (out.beta[name][i] - expected).abs().max()
                assert err <= 1e-5 * _scale(cache[name], expected), (family, rules, name)


@pytest.mark.parametrize(
    "family", ["llama", "qwen3", "gemma3", "gemma2", "olmo2", "phi3", "apertus", "gpt2", "neox"]
)
def test_bridge_first_order_against_autograd(hf_dir, family: str) -> None:
    """beta / eps is the JVP of the bridge's own forward pass (the HF modules, patterns and norm
    scales frozen by hooks): every value-path rule checked against the real architecture."""
    bridge = load_model(hf_dir(family), backend="bridge", device="cpu", dtype=torch.float64)
    tokens = bridge.tokenizer(TEXTS[:1], return_tensors="pt")["input_ids"]
    for head in [(0, 1), (1, 3)]:
        gap, scale = first_order_gap(bridge, tokens, head)
        assert scale > 1e-3, (family, head)
        assert gap <= 1e-4 * scale, (family, head, gap, scale)


def test_recording_a_hook_the_bridge_never_runs_is_refused(hf_dir) -> None:
    bridge = load_model(hf_dir("phi3"), backend="bridge", device="cpu")
    with pytest.raises(ValueError, match=r"blocks\.1\.attn\.hook_rot_q.*never runs"):
        decompose_heads(
            bridge, torch.zeros(1, 4, dtype=torch.long), [(0, 0)], record=["blocks.1.attn.hook_rot_q"]
        )


def test_unmapped_architecture_is_refused_by_name(hf_dir) -> None:
    """BLOOM (ALiBi, its own fused QKV) has no bridge mapping: refused before any compute, saying
    what to do."""
    bridge = load_model(hf_dir("bloom"), backend="bridge", device="cpu")
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(
        NotImplementedError, match=r"BloomForCausalLM.*backend='hooked'.*estimator='attribution'"
    ):
        decompose_heads(bridge, tokens, [(0, 0)])


@needs_hooked
@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_cdt_and_ablation_head_scores_equal_on_both_backends(hf_dir, family: str) -> None:
    """Discovery's head scores (`head_relevance`, estimators cdt and ablation) on the bridge equal
    the hooked backend's of the same weights."""
    from circuit_transfer.data import Example
    from circuit_transfer.discovery.relevance import head_relevance
    from circuit_transfer.tasks import get_task

    task = get_task("nusax-senti", label_words=[" ini", " sangat", " dan"])  # words of TEXTS
    examples = [Example(id=str(i), text=t, label=i % 3, lang="ind") for i, t in enumerate(TEXTS * 2)]
    models = {b: load_model(hf_dir(family), device="cpu", backend=b) for b in ("hooked", "bridge")}
    for estimator in ("cdt", "ablation"):
        hooked, bridge = (head_relevance(models[b], task, examples, estimator=estimator) for b in models)
        assert hooked.scores.abs().max() > 0
        err = float((bridge.scores - hooked.scores).abs().max() / hooked.scores.abs().max())
        assert err <= 1e-5, (family, estimator, err)
