"""The tiny model's BPE tokenizer: single-token label words, BOS, padding, determinism."""

from __future__ import annotations

from circuit_transfer.models import single_token_id
from circuit_transfer.models.tokenizer import BOS, PAD, train_bpe_tokenizer

LABEL_WORDS = [" negative", " neutral", " positive"]


def test_extra_words_are_single_distinct_tokens(tiny_model, extra_words):
    tok = tiny_model.tokenizer
    ids = [single_token_id(tok, w) for w in extra_words]
    assert None not in ids
    assert len(set(ids)) == len(ids)
    for word, i in zip(extra_words, ids):
        assert tok.decode([i]) == word


def test_label_word_in_context_is_the_same_token(tiny_model):
    tok = tiny_model.tokenizer
    for word in LABEL_WORDS:
        ids = tok(f"Sentiment:{word}")["input_ids"]
        assert ids[-1] == single_token_id(tok, word)


def test_words_that_bpe_cannot_merge_become_added_tokens(indonesian_texts):
    tok = train_bpe_tokenizer(indonesian_texts[:50], vocab_size=400, extra_words=[" Label:", "Kalimat"])
    assert single_token_id(tok, " Label:") is not None  # two pre-tokens: only an AddedToken does it
    assert single_token_id(tok, "Kalimat") is not None


def test_bos_prepended_and_right_padding(tiny_model):
    tok = tiny_model.tokenizer
    batch = tok(["saya suka", "a"], padding=True)
    assert [row[0] for row in batch["input_ids"]] == [tok.bos_token_id] * 2
    assert tok.bos_token == BOS and tok.pad_token == PAD
    assert tok.padding_side == "right"
    assert batch["attention_mask"][1][-1] == 0 and batch["input_ids"][1][-1] == tok.pad_token_id


def test_to_tokens_agrees_with_the_tokenizer(tiny_model):
    text = "Pelayanannya buruk sekali. Sentiment: negative"
    assert tiny_model.cfg.tokenizer_prepends_bos and tiny_model.cfg.default_prepend_bos
    assert tiny_model.to_tokens(text)[0].tolist() == tiny_model.tokenizer(text)["input_ids"]


def test_training_is_deterministic(indonesian_texts):
    a = train_bpe_tokenizer(indonesian_texts[:100], 500, LABEL_WORDS)
    b = train_bpe_tokenizer(indonesian_texts[:100], 500, LABEL_WORDS)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
