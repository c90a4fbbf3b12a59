"""Prompt encoding and the label-word readout."""

from __future__ import annotations

import pytest
import torch

from circuit_transfer.data import Example
from circuit_transfer.models.logits import label_scores, readout_logits
from circuit_transfer.readout import TaskBatch, encode, final_logits, label_logits, task_margin
from circuit_transfer.tasks import get_task


def test_encode_right_pads_and_marks_final_positions(word_tokenizer):
    task = get_task("nusax-senti")
    batch = encode(
        word_tokenizer, task, [Example("1", "the film was great", 2, "eng"), Example("2", "bad", 0, "eng")]
    )
    assert batch.tokens.shape == (2, 6)
    assert batch.attention_mask.tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert batch.final_pos.tolist() == [5, 2]
    assert word_tokenizer.convert_ids_to_tokens(batch.tokens[1, :3].tolist()) == ["bad", "Sentiment", ":"]
    assert batch.labels.tolist() == [2, 0]


def test_long_prompt_keeps_its_suffix(word_tokenizer):
    task = get_task("nusax-senti")
    batch = encode(word_tokenizer, task, [Example("1", "good " * 50, 2, "eng")], max_len=10)
    assert batch.tokens.shape == (1, 10)
    assert word_tokenizer.convert_ids_to_tokens(batch.tokens[0, -2:].tolist()) == ["Sentiment", ":"]


def test_long_pair_prompt_shortens_the_premise_and_keeps_the_hypothesis(word_tokenizer):
    task = get_task("xnli")
    long_pair = Example("1", "good " * 50, 0, "en", text_pair="the film was great")
    batch = encode(word_tokenizer, task, [long_pair], max_len=12)
    kept = word_tokenizer.convert_ids_to_tokens(batch.tokens[0].tolist())
    assert len(kept) == 12
    assert kept[-8:] == ["Question", ":", "the", "film", "was", "great", "Answer", ":"]
    assert kept[:4] == ["good"] * 4


def test_label_logits_and_margins():
    logits = torch.zeros(2, 3, 10)
    logits[0, 2, [4, 5, 6]] = torch.tensor([1.0, 2.0, 6.0])
    logits[1, 1, [4, 5, 6]] = torch.tensor([3.0, 0.0, 1.0])

    labels = torch.tensor([2, 1])
    batch = TaskBatch(
        tokens=torch.zeros(2, 3, dtype=torch.long),
        attention_mask=torch.ones(2, 3, dtype=torch.long),
        final_pos=torch.tensor([2, 1]),
        labels=labels,
        label_ids=torch.tensor([4, 5, 6]),
    )
    scores = label_logits(logits, batch)
    assert scores.tolist() == [[1.0, 2.0, 6.0], [3.0, 0.0, 1.0]]
    assert task_margin(scores, labels, "mean").tolist() == [4.5, -2.0]
    assert task_margin(scores, labels, "max").tolist() == [4.0, -3.0]


# ---------------------------------------------------------------------------------------------
# readout_logits: only the final position's label columns, equal to the full-logit path


def _gpt2_like():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16, d_vocab=40, act_fn="gelu_new", seed=1
    )
    return HookedTransformer(cfg).eval()


def _gemma_like():
    """RMS, rotary, GQA (1 KV head), QK-norm, sandwich norms, local attention and an output soft-cap."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_head=8,
        d_mlp=64,
        n_ctx=16,
        d_vocab=40,
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        final_rms=True,
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
        n_key_value_heads=1,
        use_qk_norm=True,
        use_normalization_before_and_after=True,
        use_local_attn=True,
        attn_types=["local", "global"],
        window_size=3,
        output_logits_soft_cap=0.5,  # small: tanh is far from the identity on these logits
        seed=2,
    )
    model = HookedTransformer(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights and an unembedding bias
        for name, p in model.named_parameters():
            if name.endswith(".w"):
                p.add_(0.3 * torch.randn_like(p))
        model.unembed.b_U.normal_()
    return model


def _padded_batch(d_vocab: int) -> TaskBatch:
    g = torch.Generator().manual_seed(0)
    lengths = [9, 5, 7]
    tokens = torch.randint(1, d_vocab, (3, 9), generator=g)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        tokens[i, n:] = 0
    return TaskBatch(
        tokens=tokens,
        attention_mask=mask,
        final_pos=torch.tensor([n - 1 for n in lengths]),
        labels=torch.tensor([0, 2, 1]),
        label_ids=torch.tensor([7, 3, 30]),
    )


@pytest.mark.parametrize("make", [_gpt2_like, _gemma_like], ids=["gpt2-like", "gemma-like"])
def test_readout_logits_equal_the_full_logits(make):
    """Label columns, all columns, and under a hook, against slicing the full [batch, pos, vocab] logits."""
    model = make()
    batch = _padded_batch(model.cfg.d_vocab)
    with torch.no_grad():
        full = model(batch.tokens, attention_mask=batch.attention_mask)
        assert (readout_logits(model, batch, batch.label_ids) - label_logits(full, batch)).abs().max() < 1e-6
        assert torch.allclose(label_scores(model, batch), label_logits(full, batch), atol=1e-6, rtol=0)
        every = readout_logits(model, batch)
        assert every.shape == (3, model.cfg.d_vocab)
        assert (every - final_logits(full, batch.final_pos)).abs().max() < 1e-6
        # each padded prompt reads what it reads alone
        for i in range(3):
            n = int(batch.attention_mask[i].sum())
            alone = model(batch.tokens[i : i + 1, :n])[0, -1, batch.label_ids]
            assert (label_scores(model, batch)[i] - alone).abs().max() < 1e-6

        def ablate(z, hook):
            z[:, :, 1] = 0.0
            return z

        hooks = [("blocks.0.attn.hook_z", ablate)]
        hooked_full = model.run_with_hooks(batch.tokens, attention_mask=batch.attention_mask, fwd_hooks=hooks)
        hooked = label_scores(model, batch, fwd_hooks=hooks)
        assert (hooked - label_logits(hooked_full, batch)).abs().max() < 1e-6
        assert (hooked - label_logits(full, batch)).abs().max() > 1e-3  # the hook did act
        assert not model.hook_dict["blocks.0.attn.hook_z"].fwd_hooks  # and was removed


@pytest.mark.parametrize("make", [_gpt2_like, _gemma_like], ids=["gpt2-like", "gemma-like"])
def test_readout_logits_give_the_training_gradients_of_the_full_logits(make):
    model = make()
    batch = _padded_batch(model.cfg.d_vocab)

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full = model(batch.tokens, attention_mask=batch.attention_mask)
    expected = grads(torch.nn.functional.cross_entropy(label_logits(full, batch), batch.labels))
    got = grads(torch.nn.functional.cross_entropy(label_scores(model, batch), batch.labels))
    assert expected.keys() == got.keys()
    for name in expected:
        assert (got[name] - expected[name]).abs().max() <= 1e-6 * max(1.0, expected[name].abs().max()), name
    assert any(float(g.abs().max()) > 0 for g in got.values())
