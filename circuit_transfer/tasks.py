"""Tasks as next-token prediction: a prompt template and one label word (verbalizer) per class.

The model's logits at the final prompt position are read at the first token of each label word
(docs/method.md §2). Templates and words are data: override them with `get_task(..., template=...,
label_words=...)`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from circuit_transfer.data import Example, label_names


class LabelWordError(ValueError):
    """Label words that do not map to distinct first tokens under a tokenizer."""


@dataclass(frozen=True)
class Task:
    """A classification task rendered as a prompt.

    Attributes:
        name: data set name ("nusax-senti" or "xnli").
        labels: class names in label-id order.
        template: format string with `{text}` (and `{text_pair}` for pair tasks).
        label_words: one verbalizer per class, in label-id order (usually with a leading space).
    """

    name: str
    labels: tuple[str, ...]
    template: str
    label_words: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.label_words) != len(self.labels):
            raise LabelWordError(
                f"Task {self.name} has {len(self.labels)} labels {self.labels} but "
                f"{len(self.label_words)} label words {self.label_words}: give one word per label."
            )
        if len(set(self.label_words)) != len(self.label_words):
            raise LabelWordError(f"Label words {self.label_words} repeat a word: give distinct words.")

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    @property
    def prompt_suffix(self) -> str:
        """The fixed text after the last field: kept whole when a long prompt is truncated."""
        return self.template.rsplit("}", 1)[-1]

    def prompt_tail(self, example: Example) -> str:
        """The rendered text after the `{text}` field: the suffix, and for pair tasks the hypothesis.

        A long prompt is shortened inside `{text}` only, so this part is kept whole."""
        after_text = self.template.split("{text}", 1)[-1]
        return after_text.format(text_pair=example.text_pair or "")

    def render(self, example: Example) -> str:
        """The prompt for one example (without the label word)."""
        return self.template.format(text=example.text, text_pair=example.text_pair or "")

    def template_words(self) -> list[str]:
        """Fixed words of the template and the label words: what a tiny tokenizer must keep whole."""
        fixed = self.template.replace("{text}", " ").replace("{text_pair}", " ")
        return [w for w in fixed.replace(":", " : ").split() if w] + [":"] + list(self.label_words)

    def label_token_ids(self, tokenizer) -> list[int]:
        """First token id of each label word; refuses words whose first tokens collide."""
        ids = []
        for word in self.label_words:
            pieces = tokenizer.encode(word, add_special_tokens=False)
            if not pieces:
                raise LabelWordError(f"Label word {word!r} encodes to no token: choose another word.")
            ids.append(pieces[0])
        by_id: dict[int, list[str]] = defaultdict(list)
        for word, tok in zip(self.label_words, ids):
            by_id[tok].append(word)
        collisions = {tok: words for tok, words in by_id.items() if len(words) > 1}
        if collisions:
            detail = "; ".join(
                f"{' and '.join(repr(w) for w in words)} all start with token {tok} "
                f"({tokenizer.convert_ids_to_tokens(tok)!r})"
                for tok, words in collisions.items()
            )
            raise LabelWordError(
                f"Label words of task {self.name} collide under this tokenizer: {detail}. "
                "Choose label words whose first tokens differ (CLI: --label-words w1,w2,w3)."
            )
        return ids


DEFAULT_TEMPLATES = {
    "nusax-senti": "{text}\nSentiment:",
    "xnli": "{text}\nQuestion: {text_pair}\nAnswer:",
}
DEFAULT_LABEL_WORDS = {
    "nusax-senti": (" negative", " neutral", " positive"),
    "xnli": (" yes", " maybe", " no"),  # entailment, neutral, contradiction
}


def get_task(name: str, template: str | None = None, label_words: Sequence[str] | None = None) -> Task:
    """The task for a data set, with optional user overrides of template and label words."""
    labels = label_names(name)
    return Task(
        name=name,
        labels=labels,
        template=template if template is not None else DEFAULT_TEMPLATES[name],
        label_words=tuple(label_words) if label_words is not None else DEFAULT_LABEL_WORDS[name],
    )


def check_labels(examples: Sequence[Example], n_labels: int) -> None:
    """Refuse examples whose labels fall outside `0 .. n_labels - 1` (a sample would drop them silently)."""
    outside = sorted({ex.label for ex in examples if not 0 <= ex.label < n_labels})
    if outside:
        found = sorted({ex.label for ex in examples})
        raise ValueError(
            f"n_labels={n_labels}, but the examples have labels {found} (outside: {outside}): pass the "
            f"task's number of labels (task.n_labels), or filter the examples first."
        )


def balanced_sample(examples: Sequence[Example], k_per_class: int, seed: int, n_labels: int) -> list[Example]:
    """A seeded sample with exactly `k_per_class` examples of every label, in a shuffled order.

    Raises a ValueError naming the label and its count when a class has fewer than k examples.
    """
    if k_per_class <= 0:
        raise ValueError(f"k_per_class must be positive, got {k_per_class}.")
    check_labels(examples, n_labels)
    by_label: dict[int, list[Example]] = defaultdict(list)
    for ex in examples:
        by_label[ex.label].append(ex)
    rng = random.Random(seed)
    chosen: list[Example] = []
    for label in range(n_labels):
        pool = by_label.get(label, [])
        if len(pool) < k_per_class:
            raise ValueError(
                f"Cannot take {k_per_class} examples of label {label}: only {len(pool)} exist "
                f"(per-label counts: { {lab: len(by_label.get(lab, [])) for lab in range(n_labels)} })."
            )
        chosen.extend(rng.sample(pool, k_per_class))
    rng.shuffle(chosen)
    return chosen


def stratified_cap(examples: Sequence[Example], n: int | None, n_labels: int, seed: int = 0) -> list[Example]:
    """At most `n` examples: a fixed (seeded) label-stratified subset, or all of them when n is None or
    not smaller. Used to cap test and valid sets so every method of a sweep sees the same rows."""
    return (
        list(examples) if n is None or n >= len(examples) else stratified_subset(examples, n, seed, n_labels)
    )


def stratified_subset(examples: Sequence[Example], n: int, seed: int, n_labels: int) -> list[Example]:
    """A seeded subset of `n` examples, label-balanced as far as `n` allows (for low-resource training).

    `n // n_labels` per class, the remainder spread over the first classes in a seeded order.
    """
    available = len(examples)
    check_labels(examples, n_labels)
    if n <= 0:
        raise ValueError(f"The number of training examples must be positive, got {n}.")
    if n > available:
        raise ValueError(f"Asked for {n} examples but only {available} are available.")
    by_label: dict[int, list[Example]] = defaultdict(list)
    for ex in examples:
        by_label[ex.label].append(ex)
    rng = random.Random(seed)
    order = list(range(n_labels))
    rng.shuffle(order)
    quota = {lab: n // n_labels + (1 if i < n % n_labels else 0) for i, lab in enumerate(order)}
    chosen: list[Example] = []
    shortfall = 0
    for lab in range(n_labels):
        pool = list(by_label.get(lab, []))
        rng.shuffle(pool)
        take = min(quota[lab], len(pool))
        shortfall += quota[lab] - take
        chosen.extend(pool[:take])
    if shortfall:  # a small class ran out: fill from what is left, still seeded
        taken = {id(ex) for ex in chosen}
        rest = [ex for ex in examples if id(ex) not in taken]
        chosen.extend(rng.sample(rest, shortfall))
    rng.shuffle(chosen)
    return chosen
