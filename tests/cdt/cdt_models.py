"""Small random models of every architecture family the CD-T engine supports (shared by tests/cdt)."""

from __future__ import annotations

import math

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

BASE = dict(n_layers=3, d_model=32, d_head=8, n_heads=4, d_mlp=48, n_ctx=32, d_vocab=40, act_fn="gelu_new")

FAMILIES: dict[str, dict] = {
    "gpt2": dict(normalization_type="LN"),
    "folded_ln": dict(normalization_type="LN", fold=True),
    "llama_gqa": dict(
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
        act_fn="silu",
        n_key_value_heads=2,
        final_rms=True,
    ),
    "rms_pre": dict(
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
        act_fn="silu",
        fold=True,
    ),
    "neox_parallel": dict(
        normalization_type="LN",
        positional_embedding_type="rotary",
        rotary_dim=4,
        parallel_attn_mlp=True,
        act_fn="gelu",
    ),
    "gptj_adjacent": dict(
        normalization_type="LN",
        positional_embedding_type="rotary",
        rotary_dim=4,
        rotary_adjacent_pairs=True,
        parallel_attn_mlp=True,
        act_fn="gelu_fast",
    ),
    "bloom_alibi": dict(
        normalization_type="LN", positional_embedding_type="alibi", act_fn="gelu_pytorch_tanh"
    ),
    "attn_only": dict(normalization_type="LN", attn_only=True),
    "no_norm_relu": dict(normalization_type=None, act_fn="relu", scale_attn_by_inverse_layer_idx=True),
    "silu_ungated": dict(normalization_type="LN", act_fn="silu", use_attn_scale=False),
    "solu_ln": dict(normalization_type="LN", act_fn="solu_ln"),
    "geglu_bidirectional": dict(
        normalization_type="LN", gated_mlp=True, act_fn="gelu", attention_dir="bidirectional"
    ),
}

_ROPE = dict(normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=8, final_rms=True)
_GATED = dict(gated_mlp=True, act_fn="silu")
_LOCAL = dict(use_local_attn=True, attn_types=["local", "global", "local"], window_size=3)

MODERN: dict[str, dict] = {
    "qwen3_qk_norm": dict(**_ROPE, **_GATED, n_key_value_heads=2, use_qk_norm=True),
    "gemma3_like": dict(
        **_ROPE,
        **_LOCAL,
        gated_mlp=True,
        act_fn="gelu_pytorch_tanh",
        n_key_value_heads=1,
        use_qk_norm=True,
        use_normalization_before_and_after=True,
        rotary_base=1_000_000,
        rotary_base_local=10_000,
    ),
    "gemma2_soft_caps": dict(
        **_ROPE,
        **_LOCAL,
        gated_mlp=True,
        act_fn="gelu_pytorch_tanh",
        use_normalization_before_and_after=True,
        attn_scores_soft_cap=2.0,
        output_logits_soft_cap=1.5,
    ),
    "olmo2_post_norm": dict(**_ROPE, **_GATED, original_architecture="Olmo2ForCausalLM"),
    "olmo_clip_qkv": dict(
        normalization_type="LN", positional_embedding_type="rotary", rotary_dim=8, **_GATED, clip_qkv=0.6
    ),
    "mixtral_moe": dict(**_ROPE, **_GATED, n_key_value_heads=2, num_experts=4, experts_per_token=2, **_LOCAL),
    "olmoe_moe": dict(
        **_ROPE,
        **_GATED,
        num_experts=4,
        experts_per_token=2,
        norm_topk_prob=True,
        clip_qkv=1.5,
        original_architecture="OlmoeForCausalLM",
    ),
    "gpt_oss": dict(
        **_ROPE,
        **_GATED,
        **_LOCAL,
        n_key_value_heads=2,
        num_experts=4,
        experts_per_token=2,
        use_attention_sinks=True,
        original_architecture="GptOssForCausalLM",
    ),
    "gpt_neo_local": dict(normalization_type="LN", **_LOCAL, use_attn_scale=False),
    "qwen1_logn": dict(**_ROPE, **_GATED, use_logn_attn=True, use_dynamic_ntk_rope=True, train_seq_length=5),
    "shortformer": dict(normalization_type="LN", positional_embedding_type="shortformer"),
    "split_qkv_input": dict(**_ROPE, **_GATED, n_key_value_heads=2, use_split_qkv_input=True),
}
"""Random models of the features TransformerLens 3.9's official configs switch on (docs/method.md §3b);
windows (3) and the log-n training length (5) are shorter than the test sequences (9)."""

FAMILIES.update(MODERN)


def build_model(family: str, seed: int = 0, **overrides) -> HookedTransformer:
    """A random float32 model of `family`, with weights large enough for peaked patterns and non-zero biases."""
    spec = {**BASE, **FAMILIES[family], **overrides}
    fold = spec.pop("fold", False)
    cfg = HookedTransformerConfig(**spec, seed=seed, device="cpu")
    model = HookedTransformer(cfg)
    if cfg.num_experts:  # TransformerLens builds Mixtral/OLMoE experts in float32 whatever cfg.dtype says
        model.to(cfg.dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            noise = torch.randn(param.shape, generator=gen)
            if leaf == "sinks":
                param.copy_(noise)
            elif leaf == "w":
                param.copy_(1 + 0.2 * noise)
            elif leaf.startswith("b") or leaf.startswith("_b"):
                param.copy_(0.3 * noise)
            elif param.ndim >= 2:
                param.copy_(noise / math.sqrt(param.shape[-2]))
    if fold:
        model.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    model.eval()
    return model


def random_tokens(model: HookedTransformer, batch: int = 3, n_pos: int = 9, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 + seed)
    return torch.randint(0, model.cfg.d_vocab, (batch, n_pos), generator=gen)


def random_baseline(model: HookedTransformer, seed: int = 0, n_pos: int | None = None) -> torch.Tensor:
    """A baseline mu (per head, or per head and position) of the scale of hook_z."""
    cfg = model.cfg
    gen = torch.Generator().manual_seed(2000 + seed)
    shape = (
        (cfg.n_layers, cfg.n_heads, cfg.d_head)
        if n_pos is None
        else (cfg.n_layers, cfg.n_heads, n_pos, cfg.d_head)
    )
    return 0.5 * torch.randn(shape, generator=gen)


def scale_of(x: torch.Tensor) -> float:
    return max(float(x.abs().max()), 1e-6)
