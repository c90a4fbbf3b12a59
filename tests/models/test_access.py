"""The model-access layer: what it reads from a HookedTransformer, and that the rules read nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import circuit_transfer.cdt as cdt
from circuit_transfer.models.access import model_access

BASE = dict(n_layers=2, d_model=16, d_head=4, n_heads=4, d_mlp=24, n_ctx=16, d_vocab=20, device="cpu")


def test_access_reads_the_live_parameters_of_each_layer() -> None:
    cfg = HookedTransformerConfig(
        **BASE,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=4,
        gated_mlp=True,
        n_key_value_heads=2,
    )
    model = HookedTransformer(cfg)
    model(torch.zeros(1, 5, dtype=torch.long))
    access = model_access(model)
    assert access.n_layers == 2 and access.n_heads == 4
    blk = access.blocks[1]
    assert blk.ln1.kind == "RMS" and blk.ln1.weight is model.blocks[1].ln1.w and blk.ln1.bias is None
    assert blk.attn.W_Q is model.blocks[1].attn.W_Q
    assert blk.attn.W_K is model.blocks[1].attn._W_K and blk.attn.repeat == 2
    assert blk.attn.rotary is not None and blk.attn.rotary.dim == 4
    assert blk.mlp is not None and blk.mlp.gated and blk.mlp.W_gate is model.blocks[1].mlp.W_gate
    assert blk.attn.b_Q is None  # zero biases are None: nothing to share
    assert not blk.parallel and not blk.post_norm and blk.ln1_post is None


def test_rules_and_engine_import_no_transformer_lens_component() -> None:
    """The rules exist once for every backend: they read the access layer only."""
    folder = Path(cdt.__file__).parent
    for name in ("rules.py", "engine.py", "reference.py"):
        tree = ast.parse((folder / name).read_text())
        modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in modules if m.startswith("transformer_lens.components")], name
    rules_tree = ast.parse((folder / "rules.py").read_text())
    assert not [
        n
        for n in ast.walk(rules_tree)
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("transformer_lens")
    ]


def test_access_gives_each_layer_its_own_mask_rotary_norms_and_experts() -> None:
    cfg = HookedTransformerConfig(
        **{**BASE, "n_layers": 3},
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=4,
        gated_mlp=True,
        use_qk_norm=True,
        use_normalization_before_and_after=True,
        use_local_attn=True,
        attn_types=["local", "global", "local"],
        window_size=3,
        rotary_base=1_000_000,
        rotary_base_local=10_000,
        attn_scores_soft_cap=50.0,
        output_logits_soft_cap=30.0,
        num_experts=4,
        experts_per_token=2,
    )
    model = HookedTransformer(cfg)
    model(torch.zeros(1, 5, dtype=torch.long))
    access = model_access(model)
    local, glob = access.blocks[0].attn, access.blocks[1].attn
    assert (local.window, glob.window) == (3, None)
    assert local.rotary is not None and glob.rotary is not None
    assert not torch.equal(local.rotary.cos, glob.rotary.cos)  # two rotary bases
    assert local.qk_norm is not None and local.qk_norm.per_head and local.qk_norm.q.length == 4
    assert local.soft_cap == 50.0 and access.logits_soft_cap == 30.0
    blk = access.blocks[2]
    assert blk.ln1_post is not None and blk.ln2_post is not None and blk.ln1_post.hook == "blocks.2.ln1_post"
    assert blk.mlp is not None and not hasattr(blk.mlp, "W_in")  # experts, not one MLP
    assert len(blk.mlp.experts) == 4 and blk.mlp.per_token == 2 and blk.mlp.order == "softmax_topk"
