"""Tasks: templates, label words, collisions, label-balanced sampling."""

from __future__ import annotations

from collections import Counter

import pytest

from circuit_transfer.data import Example
from circuit_transfer.tasks import LabelWordError, balanced_sample, get_task, stratified_subset


def _examples(counts: dict[int, int]) -> list[Example]:
    return [
        Example(id=f"{label}-{i}", text=f"t{label}{i}", label=label, lang="ind")
        for label, n in counts.items()
        for i in range(n)
    ]


def test_default_prompts_follow_method_md():
    senti = get_task("nusax-senti")
    assert senti.render(Example("1", "the film was great", 2, "eng")) == "the film was great\nSentiment:"
    assert senti.label_words == (" negative", " neutral", " positive")
    nli = get_task("xnli")
    assert nli.render(Example("1", "P.", 0, "en", "H.")) == "P.\nQuestion: H.\nAnswer:"
    assert nli.prompt_suffix == "\nAnswer:"


def test_label_token_ids_are_first_tokens(word_tokenizer):
    ids = get_task("nusax-senti").label_token_ids(word_tokenizer)
    assert word_tokenizer.convert_ids_to_tokens(ids) == ["negative", "neutral", "positive"]


def test_colliding_label_words_are_refused_with_names(word_tokenizer):
    task = get_task("nusax-senti", label_words=[" very bad", " neutral", " very good"])
    with pytest.raises(
        LabelWordError, match=r"' very bad' and ' very good' all start with token \d+ \('very'\)"
    ):
        task.label_token_ids(word_tokenizer)


def test_label_word_count_must_match_labels():
    with pytest.raises(LabelWordError, match="3 labels .* but 2 label words"):
        get_task("nusax-senti", label_words=[" good", " bad"])


def test_user_template_override():
    task = get_task("nusax-senti", template="Review: {text}\nMood:")
    assert task.render(Example("1", "ok", 1, "ind")) == "Review: ok\nMood:"


def test_balanced_sample_is_balanced_and_seeded():
    pool = _examples({0: 50, 1: 7, 2: 30})
    a = balanced_sample(pool, 5, seed=3, n_labels=3)
    assert Counter(ex.label for ex in a) == {0: 5, 1: 5, 2: 5}
    assert a == balanced_sample(pool, 5, seed=3, n_labels=3)
    assert a != balanced_sample(pool, 5, seed=4, n_labels=3)


def test_balanced_sample_refuses_a_small_class():
    with pytest.raises(ValueError, match=r"only 7 exist"):
        balanced_sample(_examples({0: 50, 1: 7, 2: 30}), 8, seed=0, n_labels=3)


def test_stratified_subset_sizes_and_errors():
    pool = _examples({0: 192, 1: 119, 2: 189})
    sub = stratified_subset(pool, 100, seed=0, n_labels=3)
    assert len(sub) == 100 and len(set(sub)) == 100
    assert sorted(Counter(ex.label for ex in sub).values()) == [33, 33, 34]
    with pytest.raises(ValueError, match="only 500 are available"):
        stratified_subset(pool, 501, seed=0, n_labels=3)
    with pytest.raises(ValueError, match="must be positive"):
        stratified_subset(pool, 0, seed=0, n_labels=3)
