"""Tiny random models and a masked training loop shared by the masking tests."""

from __future__ import annotations

from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuit_transfer.masking import MaskPolicy, masked_training
from circuit_transfer.optim import MaskedAdamW, OptimConfig, load_training_state, save_training_state

D_VOCAB = 50


def gpt2_like_cfg() -> HookedTransformerConfig:
    """LayerNorm, learned absolute positions, GELU MLP, 2 layers x 4 heads."""
    return HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_head=8,
        d_mlp=64,
        n_ctx=32,
        d_vocab=D_VOCAB,
        act_fn="gelu_new",
        normalization_type="LN",
        positional_embedding_type="standard",
        seed=0,
    )


def llama_like_cfg() -> HookedTransformerConfig:
    """RMSNorm, rotary, gated SiLU MLP, grouped-query attention (4 query heads, 2 KV heads)."""
    return HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_head=8,
        d_mlp=64,
        n_ctx=32,
        d_vocab=D_VOCAB,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
        n_key_value_heads=2,
        final_rms=True,
        seed=0,
    )


def qwen3_like_cfg() -> HookedTransformerConfig:
    """Llama-like plus QK-norm (an RMSNorm per head on q and k, one weight shared by the heads)."""
    return HookedTransformerConfig(**{**llama_like_cfg().to_dict(), "use_qk_norm": True})


def gemma3_like_cfg() -> HookedTransformerConfig:
    """QK-norm, sandwich norms (ln1_post, ln2_post), one KV head, local + global layers, two bases."""
    return HookedTransformerConfig(
        **{
            **llama_like_cfg().to_dict(),
            "n_key_value_heads": 1,
            "act_fn": "gelu_pytorch_tanh",
            "use_qk_norm": True,
            "use_normalization_before_and_after": True,
            "use_local_attn": True,
            "attn_types": ["local", "global"],
            "window_size": 4,
            "rotary_base": 1e6,
            "rotary_base_local": 1e4,
        }
    )


def moe_cfg() -> HookedTransformerConfig:
    """Mixtral-like: 4 experts, top-2 routing, GQA."""
    return HookedTransformerConfig(
        **{**llama_like_cfg().to_dict(), "num_experts": 4, "experts_per_token": 2, "d_mlp": 32}
    )


def sinks_cfg() -> HookedTransformerConfig:
    """GPT-OSS-like: per-head attention sinks, MoE, local + global layers."""
    return HookedTransformerConfig(
        **{
            **moe_cfg().to_dict(),
            "use_attention_sinks": True,
            "use_local_attn": True,
            "attn_types": ["local", "global"],
            "window_size": 4,
        }
    )


CONFIGS = {
    "gpt2-like": gpt2_like_cfg,
    "llama-like": llama_like_cfg,
    "qwen3-like": qwen3_like_cfg,
    "gemma3-like": gemma3_like_cfg,
    "moe": moe_cfg,
    "sinks": sinks_cfg,
}


def is_norm_param(name: str) -> bool:
    """A LayerNorm/RMSNorm parameter: pre-, post- and sandwich norms, and QK-norms."""
    return ".ln" in name or name.startswith("ln_final") or "_norm." in name


def make_model(kind: str, seed: int = 0) -> HookedTransformer:
    """A model whose every parameter entry is random and non-zero (biases too, norms around 1),
    so that any update, weight decay included, visibly moves every entry it touches."""
    model = HookedTransformer(CONFIGS[kind]())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if is_norm_param(name) and name.endswith(".w") else 0.2 * noise)
    return model


def batch(step: int, batch_size: int = 4, seq: int = 12) -> torch.Tensor:
    """Random tokens for one training step (deterministic per step)."""
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, D_VOCAB, (batch_size, seq), generator=gen)


def lm_loss(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: touches every parameter (embedding rows of the batch's tokens)."""
    return model(tokens, return_type="loss")


def snapshot(model: HookedTransformer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def train_with_resume(
    kind: str,
    heads,
    policy: MaskPolicy,
    tmp_path: Path,
    config: OptimConfig = OptimConfig(lr=1e-2, weight_decay=0.1, max_grad_norm=1.0, schedule="cosine"),
    steps: int = 10,
    resume_at: int | None = 5,
):
    """Masked training for `steps` steps; at `resume_at` save, rebuild model+optimizer from the
    file (a fresh model with other random weights), load, continue. Returns
    (weights before, trained model, TrainableSet)."""
    model = make_model(kind, seed=0)
    before = snapshot(model)
    split = steps if resume_at is None else resume_at
    with masked_training(model, heads, policy) as tset:
        opt = MaskedAdamW(model, config, total_steps=steps, masks=tset.masks)
        for step in range(split):
            lm_loss(model, batch(step)).backward()
            opt.step()
        if resume_at is None:
            return before, model, tset
        save_training_state(tmp_path / "state.pt", model, opt, {"step": split})
    del model, opt
    fresh = make_model(kind, seed=123)  # other weights: everything must come from the file
    with masked_training(fresh, heads, policy) as tset:
        opt = MaskedAdamW(fresh, config, total_steps=steps, masks=tset.masks)
        extra = load_training_state(tmp_path / "state.pt", fresh, opt)
        for step in range(extra["step"], steps):
            lm_loss(fresh, batch(step)).backward()
            opt.step()
    return before, fresh, tset
