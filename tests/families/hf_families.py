"""Small random Hugging Face models of every decoder family TransformerLens 3.9 converts.

Each builder makes a `transformers` model from its config class (2 layers, d_model 32-64, a few
heads, the test tokenizer's vocabulary), offline and seeded. `save_hf_dir` perturbs every weight
(norm weights and biases too, so a conversion slip cannot hide behind 1s and 0s) and writes the
model plus the tokenizer with `save_pretrained`: the directory `load_model` reads.

Family-specific settings are chosen so that each family's distinctive feature is exercised by a
short test sentence: sliding windows (Mistral, Gemma 2/3, GPT-Neo, OLMo 3, GPT-OSS) are shorter
than the test sequence, and the interleaved families have 3 layers, local-global-local.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers as tf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

TEXTS = [
    "Saya sangat suka makanan di restoran ini, enak dan murah.",
    "Pelayanannya buruk sekali, saya kecewa dengan hotel ini.",
    "Hotel ini biasa saja, tidak ada yang istimewa.",
]
"""Test sentences (and the tokenizer's training text)."""

WINDOW = 4
"""Sliding-window size of every local-attention family: shorter than the test sentences."""

INTERLEAVED = ["sliding_attention", "full_attention", "sliding_attention"]
"""Layer types of the interleaved families (3 layers): a local layer after a global one, so that a
source in layer 0 or 1 has a sliding window downstream, and both rotary bases after layer 0."""

_COMMON_ROTARY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128)


@dataclass(frozen=True)
class Family:
    """One decoder family: how to build a small random model of it.

    Attributes:
        name: short id used in test ids ("gemma3").
        architecture: the HF class name TransformerLens dispatches on.
        build: vocabulary size -> a random HF causal LM (eval mode).
        features: what the family exercises, for the README table.
        expect: HookedTransformerConfig fields the converted model must have (the feature is on).
    """

    name: str
    architecture: str
    build: Callable[[int], PreTrainedModel]
    features: str
    expect: dict[str, Any] = field(default_factory=dict)


def _model(config_cls: type, model_cls: type, **kwargs) -> Callable[[int], PreTrainedModel]:
    def build(vocab: int) -> PreTrainedModel:
        torch.manual_seed(0)
        return model_cls(config_cls(vocab_size=vocab, **kwargs)).eval()

    return build


def _rotary(**kwargs) -> dict:
    return {**_COMMON_ROTARY, **kwargs}


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "gpt2",
            "GPT2LMHeadModel",
            _model(tf.GPT2Config, tf.GPT2LMHeadModel, n_embd=64, n_layer=2, n_head=4, n_positions=128),
            "LayerNorm, learned positions, GELU MLP",
            dict(normalization_type="LN", positional_embedding_type="standard"),
        ),
        Family(
            "gpt_neo",
            "GPTNeoForCausalLM",
            _model(
                tf.GPTNeoConfig,
                tf.GPTNeoForCausalLM,
                hidden_size=64,
                num_layers=2,
                num_heads=4,
                attention_types=[[["global", "local"], 1]],
                window_size=WINDOW,
                max_position_embeddings=128,
            ),
            "local attention every other layer, no attention scale",
            dict(
                use_local_attn=True, window_size=WINDOW, attn_types=["global", "local"], use_attn_scale=False
            ),
        ),
        Family(
            "opt",
            "OPTForCausalLM",
            _model(
                tf.OPTConfig,
                tf.OPTForCausalLM,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                ffn_dim=128,
                word_embed_proj_dim=64,
                max_position_embeddings=128,
            ),
            "LayerNorm, learned positions (offset 2), ReLU MLP",
            dict(act_fn="relu"),
        ),
        Family(
            "gptj",
            "GPTJForCausalLM",
            _model(
                tf.GPTJConfig,
                tf.GPTJForCausalLM,
                n_embd=64,
                n_layer=2,
                n_head=4,
                rotary_dim=8,
                n_positions=128,
            ),
            "parallel attention+MLP, partial rotary on adjacent pairs",
            dict(parallel_attn_mlp=True, rotary_dim=8, rotary_adjacent_pairs=True),
        ),
        Family(
            "neox",
            "GPTNeoXForCausalLM",
            _model(tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM, **_rotary(intermediate_size=128, rotary_pct=0.5)),
            "parallel attention+MLP, partial rotary",
            dict(parallel_attn_mlp=True, rotary_dim=8),
        ),
        Family(
            "bloom",
            "BloomForCausalLM",
            _model(tf.BloomConfig, tf.BloomForCausalLM, hidden_size=64, n_layer=2, n_head=4),
            "ALiBi, LayerNorm after the embedding",
            dict(positional_embedding_type="alibi", post_embedding_ln=True),
        ),
        Family(
            "llama",
            "LlamaForCausalLM",
            _model(
                tf.LlamaConfig,
                tf.LlamaForCausalLM,
                **_rotary(intermediate_size=96, num_key_value_heads=2, rope_theta=100000.0),
            ),
            "RMSNorm, rotary, SwiGLU, grouped-query attention",
            dict(normalization_type="RMS", gated_mlp=True, n_key_value_heads=2),
        ),
        Family(
            "mistral",
            "MistralForCausalLM",
            _model(
                tf.MistralConfig,
                tf.MistralForCausalLM,
                **_rotary(intermediate_size=96, num_key_value_heads=2, sliding_window=WINDOW),
            ),
            "Llama + sliding-window attention on every layer",
            dict(use_local_attn=True, window_size=WINDOW, attn_types=["local", "local"]),
        ),
        Family(
            "mixtral",
            "MixtralForCausalLM",
            _model(
                tf.MixtralConfig,
                tf.MixtralForCausalLM,
                **_rotary(
                    intermediate_size=48, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2
                ),
            ),
            "mixture of experts (4 experts, top-2), GQA",
            dict(num_experts=4, experts_per_token=2, n_key_value_heads=2),
        ),
        Family(
            "qwen2",
            "Qwen2ForCausalLM",
            _model(
                tf.Qwen2Config, tf.Qwen2ForCausalLM, **_rotary(intermediate_size=96, num_key_value_heads=2)
            ),
            "Llama + Q/K/V biases",
            dict(n_key_value_heads=2),
        ),
        Family(
            "qwen3",
            "Qwen3ForCausalLM",
            _model(
                tf.Qwen3Config,
                tf.Qwen3ForCausalLM,
                **_rotary(intermediate_size=96, num_key_value_heads=2, head_dim=16),
            ),
            "QK-norm (RMSNorm per head on q and k), GQA",
            dict(use_qk_norm=True, n_key_value_heads=2),
        ),
        Family(
            "phi",
            "PhiForCausalLM",
            _model(
                tf.PhiConfig,
                tf.PhiForCausalLM,
                **_rotary(intermediate_size=128, partial_rotary_factor=0.5),
            ),
            "parallel attention+MLP, LayerNorm, partial rotary",
            dict(parallel_attn_mlp=True, rotary_dim=8, normalization_type="LN"),
        ),
        Family(
            "phi3",
            "Phi3ForCausalLM",
            _model(
                tf.Phi3Config,
                tf.Phi3ForCausalLM,
                **_rotary(intermediate_size=96, num_key_value_heads=2, sliding_window=None, pad_token_id=0),
            ),
            "fused QKV and gate/up projections, RMSNorm, GQA",
            dict(n_key_value_heads=2, gated_mlp=True),
        ),
        Family(
            "apertus",
            "ApertusForCausalLM",
            _model(
                tf.ApertusConfig,
                tf.ApertusForCausalLM,
                **_rotary(intermediate_size=96, num_key_value_heads=2),
            ),
            "QK-norm, xIELU MLP (not gated)",
            dict(use_qk_norm=True, act_fn="xielu", gated_mlp=False),
        ),
        Family(
            "gemma",
            "GemmaForCausalLM",
            _model(
                tf.GemmaConfig,
                tf.GemmaForCausalLM,
                **_rotary(intermediate_size=96, num_key_value_heads=1, head_dim=16),
            ),
            "RMSNorm (1 + w), scaled embedding, GeGLU, one KV head",
            dict(n_key_value_heads=1, act_fn="gelu_pytorch_tanh"),
        ),
        Family(
            "gemma2",
            "Gemma2ForCausalLM",
            _model(
                tf.Gemma2Config,
                tf.Gemma2ForCausalLM,
                **_rotary(
                    intermediate_size=96,
                    num_key_value_heads=2,
                    head_dim=16,
                    sliding_window=WINDOW,
                    num_hidden_layers=3,
                    layer_types=INTERLEAVED,
                    attn_logit_softcapping=5.0,
                    final_logit_softcapping=3.0,
                    query_pre_attn_scalar=24,
                ),
            ),
            "sandwich norms, attention and logit soft-caps, local/global layers",
            dict(
                use_normalization_before_and_after=True,
                attn_scores_soft_cap=5.0,
                output_logits_soft_cap=3.0,
                **dict(use_local_attn=True, window_size=WINDOW, attn_types=["local", "global", "local"]),
            ),
        ),
        Family(
            "gemma3",
            "Gemma3ForCausalLM",
            _model(
                tf.Gemma3TextConfig,
                tf.Gemma3ForCausalLM,
                **_rotary(
                    intermediate_size=96,
                    num_key_value_heads=1,
                    head_dim=16,
                    sliding_window=WINDOW,
                    num_hidden_layers=3,
                    layer_types=INTERLEAVED,
                    query_pre_attn_scalar=24,
                ),
            ),
            "QK-norm, sandwich norms, local/global layers with two rotary bases, one KV head",
            dict(
                use_qk_norm=True,
                use_normalization_before_and_after=True,
                n_key_value_heads=1,
                rotary_base=1e6,
                rotary_base_local=1e4,
                **dict(use_local_attn=True, window_size=WINDOW, attn_types=["local", "global", "local"]),
            ),
        ),
        Family(
            "olmo",
            "OlmoForCausalLM",
            _model(tf.OlmoConfig, tf.OlmoForCausalLM, **_rotary(intermediate_size=96, clip_qkv=0.8)),
            "non-parametric LayerNorm, SwiGLU, Q/K/V clipped (clip_qkv)",
            dict(normalization_type="LN", gated_mlp=True, clip_qkv=0.8),
        ),
        Family(
            "olmo2",
            "Olmo2ForCausalLM",
            _model(
                tf.Olmo2Config, tf.Olmo2ForCausalLM, **_rotary(intermediate_size=96, num_key_value_heads=4)
            ),
            "post-norm blocks, QK-norm over all heads",
            dict(original_architecture="Olmo2ForCausalLM", use_qk_norm=False),
        ),
        Family(
            "olmo3",
            "Olmo3ForCausalLM",
            _model(
                tf.Olmo3Config,
                tf.Olmo3ForCausalLM,
                **_rotary(
                    intermediate_size=96,
                    num_key_value_heads=4,
                    sliding_window=WINDOW,
                    layer_types=["full_attention", "sliding_attention"],
                ),
            ),
            "post-norm blocks, QK-norm, global/local layers",  # 2 layers: with 3, post-norms grow beta to 1e10
            dict(use_local_attn=True, window_size=WINDOW, attn_types=["global", "local"]),
        ),
        Family(
            "olmoe",
            "OlmoeForCausalLM",
            _model(
                tf.OlmoeConfig,
                tf.OlmoeForCausalLM,
                **_rotary(intermediate_size=48, num_key_value_heads=4, num_experts=4, num_experts_per_tok=2),
            ),
            "mixture of experts (4 experts, top-2), QK-norm over all heads",
            dict(num_experts=4, experts_per_token=2),
        ),
        Family(
            "gpt_oss",
            "GptOssForCausalLM",
            _model(
                tf.GptOssConfig,
                tf.GptOssForCausalLM,
                **_rotary(
                    intermediate_size=48,
                    num_key_value_heads=2,
                    head_dim=16,
                    num_local_experts=4,
                    num_experts_per_tok=2,
                    sliding_window=WINDOW,
                    num_hidden_layers=3,
                    layer_types=INTERLEAVED,
                ),
            ),
            "mixture of experts, attention sinks, local/global layers",
            dict(
                num_experts=4,
                use_attention_sinks=True,
                **dict(use_local_attn=True, window_size=WINDOW, attn_types=["local", "global", "local"]),
            ),
        ),
    ]
}


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Perturb every weight, norms and biases included, so no conversion slip hides behind 1s and 0s."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen).to(p.dtype))


def save_hf_dir(family: Family, tokenizer: PreTrainedTokenizerBase, path: Path) -> PreTrainedModel:
    """Build `family`'s random model on `tokenizer`'s vocabulary, save both to `path`; returns the model."""
    model = family.build(len(tokenizer))
    randomise(model)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model
