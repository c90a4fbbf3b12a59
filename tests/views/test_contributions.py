"""Token contributions: each head's direct effect on the margin, split exactly over source tokens."""

from __future__ import annotations

import pytest
import torch
from conftest import STRENGTH

from circuit_transfer.data import Example
from circuit_transfer.discovery import Circuit, task_weights
from circuit_transfer.models import build_tiny_model
from circuit_transfer.tasks import get_task
from circuit_transfer.views import contributions_view, direct_readout, prepare_prompt, token_contributions

TASK = get_task("nusax-senti")


def test_known_answer_on_the_copy_head(copy_model):
    """Only "good" carries the sentiment: its contribution is attention x strength, every other token 0."""
    circuit = Circuit.from_heads([(0, 1)], copy_model)
    ex = Example(id="1", text="the film was very good .", label=2, lang="eng")
    contrib = token_contributions(copy_model, circuit, ex, TASK)
    good = contrib.str_tokens.index("good")
    prompt = prepare_prompt(copy_model, TASK, ex)
    _, cache = copy_model.run_with_cache(prompt.tokens)
    attention = cache["blocks.0.attn.hook_pattern"][0, 1, prompt.final, good]
    # margin weights for gold "positive": +1 on positive, -1/2 on the others; the head writes only on positive
    assert contrib.total[good] == pytest.approx(float(attention) * STRENGTH, rel=1e-5)
    assert attention > 0.9
    others = torch.cat([contrib.total[:good], contrib.total[good + 1 :]])
    assert torch.all(others == 0)
    # against the gold label "negative" the same token pushes away (-STRENGTH/2 per unit of attention)
    neg = token_contributions(copy_model, circuit, Example(id="1", text=ex.text, label=0, lang="eng"), TASK)
    assert neg.total[good] == pytest.approx(-0.5 * float(attention) * STRENGTH, rel=1e-5)


def test_bare_text_reads_the_predicted_label(copy_model):
    circuit = Circuit.from_heads([(0, 1)], copy_model)
    contrib = token_contributions(copy_model, circuit, "the film was bad .", TASK)
    assert not contrib.gold and TASK.labels[contrib.label] == "negative"
    assert contrib.total[contrib.str_tokens.index("bad")] > 0


@pytest.mark.parametrize("margin", ["mean", "max"])
def test_contributions_sum_to_the_heads_direct_path(data_dir, margin):
    """Sum over tokens = each head's direct-path contribution at the readout (LayerNorm model)."""
    from circuit_transfer.data import load_split

    rows = load_split("nusax-senti", "ind", "train", data_dir)[:40]
    model = build_tiny_model([r.text for r in rows], extra_words=TASK.template_words(), seed=1)
    circuit = Circuit.from_heads([(0, 2), (1, 0), (1, 3)], model)
    contrib = token_contributions(model, circuit, rows[0], TASK, margin=margin)
    torch.testing.assert_close(contrib.per_head.sum(-1), contrib.head_direct, rtol=1e-4, atol=1e-6)
    # direct_readout is the real final norm + unembedding, linearised: on the whole residual stream
    # (plus the norm bias and b_U, which no token owns) it gives the model's real margin
    prompt = prepare_prompt(model, TASK, rows[0])
    logits, cache = model.run_with_cache(prompt.tokens)
    ids, t = prompt.label_ids, prompt.final
    w = task_weights(logits[:, t, ids], torch.tensor([prompt.label]), margin)[0]
    direction = model.W_U[:, ids] @ w
    resid = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"][0, t]
    bias = (model.ln_final.b @ model.W_U[:, ids] + model.b_U[ids]) @ w
    lens = direct_readout(model, resid, cache["ln_final.hook_scale"][0, t, 0], direction) + bias
    assert float(lens) == pytest.approx(float(logits[0, t, ids] @ w), rel=1e-4, abs=1e-5)


def test_views_render_tokens(copy_model):
    circuit = Circuit.from_heads([(0, 1), (0, 0)], copy_model)
    ex = Example(id="1", text="the film was good", label=2, lang="eng")
    single = contributions_view(copy_model, circuit, ex, TASK)
    multi = contributions_view(copy_model, circuit, ex, TASK, per_head=True)
    assert [caption for caption, _ in single.parts] == [""] and '"good"' in single.local_src
    # per head: the total, then one row per head, each a ColoredTokens in the views' own colours
    assert [caption for caption, _ in multi.parts] == ["circuit total", "L0H0", "L0H1"]  # circuit order
    assert all('"positiveColor": "#d73027"' in part.local_src for _, part in multi.parts)
