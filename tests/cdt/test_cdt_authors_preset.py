"""`rules="cdt-reference"` reproduces the authors' CD-T propagation (CD_Circuit) on a GPT-2-style model.

The authors' rules are written out below from their formulas (github.com/adelaidehsu/CD_Circuit,
`pyfunctions/cdt_core.py` and `cdt_source_to_target.py`: `prop_layer_norm`, `prop_linear_core`,
`prop_act`, `normalize_rel_irrel`, `prop_attention_probs_tmp`, `prop_GPT_layer`), as one plain
function carrying rel and irrel, not vendored. Their code hard-codes LayerNorm eps 1e-8 and adds
tol = 1e-8 to every share denominator; here eps is the model's and tol = 0, the two settings in
which their propagation keeps completeness and the preset can equal it (docs/method.md §3c).
"""

from __future__ import annotations

import torch
from cdt_models import build_model, random_baseline, random_tokens, scale_of

from circuit_transfer.cdt import decompose_heads
from circuit_transfer.cdt.rules import CDT_REFERENCE, Rules


def _share(rel_t, irrel_t, tol):
    tot_wt = rel_t.abs() + irrel_t.abs() + tol
    return torch.where(tot_wt > 0, rel_t.abs() / tot_wt, 0.5)


def _linear(rel, irrel, W, b, tol):
    """prop_linear_core: bias shared by |W rel| / (|W rel| + |W irrel| + tol)."""
    rel_t, irrel_t = rel @ W, irrel @ W
    share = _share(rel_t, irrel_t, tol)
    return rel_t + b * share, irrel_t + b * (1 - share)


def _layer_norm(rel, irrel, w, b, eps, tol):
    """prop_layer_norm: centre each part, divide by the full std; the bias by the INPUT parts."""
    tot = rel + irrel
    vr = (tot**2).mean(-1, keepdim=True) - tot.mean(-1, keepdim=True) ** 2
    rel_t = (rel - rel.mean(-1, keepdim=True)) / torch.sqrt(vr + eps) * w
    irrel_t = (irrel - irrel.mean(-1, keepdim=True)) / torch.sqrt(vr + eps) * w
    share = _share(rel, irrel, tol)
    return rel_t + b * share, irrel_t + b * (1 - share)


def _normalize(rel, irrel):
    """normalize_rel_irrel: opposite signs -> the larger (ties: rel) takes the sum."""
    tot = rel + irrel
    opposite = rel * irrel < 0
    rel_wins = opposite & (rel.abs() >= irrel.abs())
    irrel_wins = opposite & ~rel_wins
    return (
        torch.where(rel_wins, tot, torch.where(irrel_wins, 0.0, rel)),
        torch.where(irrel_wins, tot, torch.where(rel_wins, 0.0, irrel)),
    )


def _heads(rel, irrel, W, b, tol):
    """prop_attention_probs_tmp's per-head projections, each bias shared like prop_linear_core."""
    rel_t, irrel_t = (torch.einsum("bpd,hde->bphe", x, W) for x in (rel, irrel))
    share = _share(rel_t, irrel_t, tol)
    return rel_t + b * share, irrel_t + b * (1 - share)


def _scores(q, k, scale, additive):
    return torch.einsum("bqhe,bkhe->bhqk", q, k) / scale + additive


def authors_logits(model, tokens, head, mu, eps, tol):
    """(rel, irrel) of the logits for one source head at every position, by the authors' rules."""
    layer, source = head
    _, cache = model.run_with_cache(tokens)
    n_pos = tokens.shape[1]
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool).tril()
    # their extended attention mask: (1 - mask) * the dtype's min, added to the scores
    additive = (~causal).double() * torch.finfo(torch.float64).min
    irrel = cache[f"blocks.{layer}.hook_resid_pre"]
    rel = torch.zeros_like(irrel)
    for i in range(layer, model.cfg.n_layers):
        blk = model.blocks[i]
        a = blk.attn
        r, ir = _layer_norm(rel, irrel, blk.ln1.w, blk.ln1.b, eps, tol)
        rq, iq = _heads(r, ir, a.W_Q, a.b_Q, tol)
        rk, ik = _heads(r, ir, a.W_K, a.b_K, tol)
        rv, iv = _heads(r, ir, a.W_V, a.b_V, tol)
        tot_probs = torch.softmax(_scores(rq + iq, rk + ik, a.attn_scale, additive), -1)
        rel_probs = torch.softmax(_scores(rq, rk, a.attn_scale, additive), -1)
        tot_context = torch.einsum("bhqk,bkhe->bqhe", tot_probs, rv + iv)
        rel_context = torch.einsum("bhqk,bkhe->bqhe", rel_probs, rv)
        irrel_context = tot_context - rel_context
        if i == layer:  # set_rel_at_source_nodes with the mean: rel = total - mu, irrel = mu
            z = cache[f"blocks.{layer}.attn.hook_z"]
            rel_context = torch.zeros_like(z)
            rel_context[:, :, source] = z[:, :, source] - mu
            irrel_context = z - rel_context
        W_O = a.W_O.reshape(-1, a.W_O.shape[-1])
        r_attn, i_attn = _linear(rel_context.flatten(-2), irrel_context.flatten(-2), W_O, a.b_O, tol)
        rel_mid, irrel_mid = rel + r_attn, irrel + i_attn
        r, ir = _layer_norm(rel_mid, irrel_mid, blk.ln2.w, blk.ln2.b, eps, tol)
        r, ir = _normalize(*_linear(r, ir, blk.mlp.W_in, blk.mlp.b_in, tol))
        act = blk.mlp.act_fn
        r, ir = act(r + ir) - act(ir), act(ir)
        r, ir = _normalize(*_linear(r, ir, blk.mlp.W_out, blk.mlp.b_out, tol))
        rel, irrel = _normalize(rel_mid + r, irrel_mid + ir)
    r, ir = _layer_norm(rel, irrel, model.ln_final.w, model.ln_final.b, eps, tol)
    return _linear(r, ir, model.unembed.W_U, model.unembed.b_U, tol)


def test_preset_equals_the_authors_propagation_on_gpt2() -> None:
    model = build_model("gpt2", 4, dtype=torch.float64)
    tokens = random_tokens(model, seed=4)
    mu = random_baseline(model, 4).double()
    heads = [(0, 2), (1, 0), (2, 3)]
    out = decompose_heads(model, tokens, heads, mu, rules="cdt-reference")
    default = decompose_heads(model, tokens, heads, mu)
    for i, (layer, head) in enumerate(heads):
        rel, irrel = authors_logits(model, tokens, (layer, head), mu[layer, head], model.cfg.eps, 0.0)
        scale = scale_of(rel + irrel)
        assert (out.beta_logits[i] - rel).abs().max() <= 1e-10 * scale, (layer, head)
        # the two choices matter: today's default is a different decomposition
        assert (default.beta_logits[i] - rel).abs().max() > 1e-4 * scale
    # and each choice alone is not enough
    for partial in (Rules(stabilize="cdt"), Rules(ln_bias="input")):
        alone = decompose_heads(model, tokens, heads[:1], mu, rules=partial)
        rel, _ = authors_logits(model, tokens, heads[0], mu[heads[0]], model.cfg.eps, 0.0)
        assert (alone.beta_logits[0] - rel).abs().max() > 1e-6 * scale_of(rel)
    assert CDT_REFERENCE == Rules("decomposed", "magnitude", "cdt", "input")


def test_authors_numerical_constants_break_completeness_slightly() -> None:
    """Why the preset keeps the model's eps and exact shares: with eps 1e-8 and tol 1e-8 the
    authors' parts no longer add up to the model's logits."""
    model = build_model("gpt2", 4, dtype=torch.float64)
    tokens = random_tokens(model, seed=4)
    mu = random_baseline(model, 4).double()
    logits = model(tokens)
    exact = authors_logits(model, tokens, (1, 0), mu[1, 0], model.cfg.eps, 0.0)
    quirky = authors_logits(model, tokens, (1, 0), mu[1, 0], 1e-8, 1e-8)
    assert (exact[0] + exact[1] - logits).abs().max() <= 1e-10 * scale_of(logits)
    assert (quirky[0] + quirky[1] - logits).abs().max() > 1e-8 * scale_of(logits)
