"""Tasks as next-token prediction: a prompt template and one label word (verbalizer) per class.

The model's logits at the final prompt position are read at the first token of each label word
(docs/method.md §2). Templates and words are data: override them with `get_task(..., template=...,
label_words=...)`.

A task is either built in (`nusax-senti`, `xnli`: their examples come from `data.load_split`) or
your own: `get_task("my-reviews", template=..., label_words=..., data=...)` with `data` a file,
a `datasets.Dataset`/`DatasetDict` or Python lists (`own_data` says how they are read and split).
A task without data (`get_task("my-reviews", template=..., label_words=..., labels=...)`) works
wherever examples are passed explicitly (discovery, `transfer(..., train=..., tests=...)`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from circuit_transfer.data import DATASETS, Example, label_names, languages, load_split, normalise_lang
from circuit_transfer.own_data import DEFAULT_LANG, SPLITS, TaskData, read_task_data


class LabelWordError(ValueError):
    """Label words that do not map to distinct first tokens under a tokenizer."""


class NoDataError(ValueError):
    """A task without examples of its own was asked for some."""


@dataclass(frozen=True)
class Task:
    """A classification task rendered as a prompt.

    Attributes:
        name: "nusax-senti" or "xnli" for the built-in data sets, or your task's name.
        labels: class names in label-id order.
        template: format string with `{text}` (and `{text_pair}` for pair tasks).
        label_words: one verbalizer per class, in label-id order (usually with a leading space).
        data: your own examples by language and split (`own_data.TaskData`); None for a built-in
            task (read by `data.load_split`) or a task whose examples are passed explicitly.
    """

    name: str
    labels: tuple[str, ...]
    template: str
    label_words: tuple[str, ...]
    data: TaskData | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if "{text}" not in self.template:
            raise ValueError(
                f"Template {self.template!r} of task {self.name} has no {{text}} field: write where the "
                "text goes, e.g. '{text}\\nSentiment:' (and {text_pair} for a second text)."
            )
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

    def to_dict(self) -> dict[str, Any]:
        """The prompt format as JSON (what a checkpoint records as its "task"); not the data."""
        return {
            "name": self.name,
            "labels": list(self.labels),
            "template": self.template,
            "label_words": list(self.label_words),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        """Inverse of `to_dict`; `labels` may be absent for a built-in task (older checkpoints)."""
        labels = d.get("labels") or label_names(d["name"])
        return cls(d["name"], tuple(labels), d["template"], tuple(d["label_words"]))

    # -- examples ---------------------------------------------------------------------------

    def languages(self) -> tuple[str, ...]:
        """The language codes this task has examples in."""
        if self.data is not None:
            return self.data.languages()
        if self.name in DATASETS:
            return languages(self.name)
        raise self._no_data("languages")

    def normalise_lang(self, lang: str) -> str:
        """The canonical code of `lang`, refusing one the task has no examples in."""
        if self.data is not None:
            if lang not in self.data.languages():
                raise ValueError(
                    f"Task {self.name} has no language {lang!r}; its data ({self.data.source}) has "
                    f"{', '.join(self.data.languages())}."
                )
            return lang
        return normalise_lang(self.name, lang) if self.name in DATASETS else lang

    def split_roles(self) -> tuple[str, str, str]:
        """The (train, valid, test) split names; XNLI has no train split, so dev serves both first roles."""
        if self.data is None and self.name == "xnli":
            return ("dev", "dev", "test")
        return SPLITS

    def examples(self, lang: str, split: str, data_dir=None) -> list[Example]:
        """One split of one language: from the task's own data, or the built-in data set's loader."""
        if self.data is not None:
            return self.data.split(self.normalise_lang(lang), split)
        if self.name in DATASETS:
            return load_split(self.name, lang, split, data_dir)
        raise self._no_data(f"{lang} {split} examples")

    def train_valid(self, lang: str, data_dir=None) -> tuple[list[Example], list[Example]]:
        """Train and valid examples of a language; for XNLI, dev is cut 80/20 by a fixed rule."""
        train_split, valid_split, _ = self.split_roles()
        if train_split == valid_split:
            rows = self.examples(lang, train_split, data_dir)
            cut = len(rows) * 4 // 5
            return rows[:cut], rows[cut:]
        return self.examples(lang, train_split, data_dir), self.examples(lang, valid_split, data_dir)

    def test_examples(self, lang: str, data_dir=None) -> list[Example]:
        """The test split of a language."""
        return self.examples(lang, self.split_roles()[2], data_dir)

    def check_examples(self, examples: Sequence[Any], what: str = "examples") -> None:
        """Refuse anything that is not a labelled `Example` of this task (before any compute)."""
        for i, ex in enumerate(examples):
            if not isinstance(ex, Example):
                raise TypeError(
                    f"{what}[{i}] is a {type(ex).__name__} ({ex!r:.60}), not an Example: the task needs "
                    "each text's gold label. Build labelled examples with `Example(id, text, label, lang)`, "
                    "or read them from your data with `get_task(..., data=...)` and `task.examples(lang, split)`."
                )
            if not 0 <= ex.label < self.n_labels:
                raise ValueError(
                    f"{what}[{i}] (id {ex.id}) has label {ex.label}, but task {self.name} has labels "
                    f"0..{self.n_labels - 1} {self.labels}."
                )

    def _no_data(self, what: str) -> NoDataError:
        return NoDataError(
            f"Task {self.name!r} has no data to give {what}: make it with get_task({self.name!r}, ..., "
            "data=FILE_OR_DATASET) (CLI --data-file), or pass the examples explicitly "
            "(discover(model, task, examples); transfer(..., train=..., valid=..., tests=...))."
        )

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


def get_task(
    name: str,
    template: str | None = None,
    label_words: Sequence[str] | None = None,
    data: Any = None,
    labels: Sequence[str] | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    lang_column: str | None = None,
    lang: str = DEFAULT_LANG,
    id_column: str | None = None,
    split_column: str | None = None,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Task:
    """A built-in task (with optional overrides of template and label words), or your own.

    Args:
        name: "nusax-senti" or "xnli", or any name for your own task (then `template` and
            `label_words` are required).
        data: your examples: a CSV/TSV/JSONL/JSON file, a `datasets.Dataset`/`DatasetDict`, a dict
            of columns, or a list of row dicts (the keyword-only options below name the columns and
            the split; `own_data` gives the rules). None: a built-in task's own data, or no data.
        labels: class names in label-id order; default: the label words without their spaces. A
            label value in the data is read as one of these names, or as an id 0..n-1.

    Raises:
        ValueError: an unknown built-in name without template and label words, a data problem
            (`own_data.TaskDataError`: missing column, unknown label, too few rows per class).
        LabelWordError: label words that are not one per label, or repeat.
    """
    builtin = name in DATASETS
    if not builtin and (template is None or label_words is None):
        raise ValueError(
            f"Unknown task {name!r}: the built-in tasks are {', '.join(DATASETS)}. For your own task give "
            "template= (with {text}) and label_words= (one per class), and data= (a CSV/JSONL file, a "
            "datasets.Dataset, or lists); CLI: --data-file FILE --template ... --label-words ..."
        )
    template = template if template is not None else DEFAULT_TEMPLATES[name]
    label_words = tuple(label_words) if label_words is not None else DEFAULT_LABEL_WORDS[name]
    if labels is None:
        labels = label_names(name) if builtin else tuple(w.strip() for w in label_words)
    elif builtin and data is None and tuple(labels) != label_names(name):
        raise ValueError(f"The labels of {name} are {label_names(name)}; got {tuple(labels)}.")
    task = Task(name=name, labels=tuple(labels), template=template, label_words=label_words)
    if data is None:
        return task
    own = read_task_data(
        data,
        task.labels,
        text_column=text_column,
        label_column=label_column,
        text_pair_column=text_pair_column,
        lang_column=lang_column,
        lang=lang,
        id_column=id_column,
        split_column=split_column,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    return Task(task.name, task.labels, task.template, task.label_words, data=own)


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
