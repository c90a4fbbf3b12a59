"""Prompt encoding and the label-word readout."""

from __future__ import annotations

import torch

from circuit_transfer.data import Example
from circuit_transfer.readout import TaskBatch, encode, label_logits, task_margin
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
