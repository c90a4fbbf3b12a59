"""Your own labelled data: a CSV/TSV/JSONL/JSON file, a `datasets.Dataset` / `DatasetDict`, or
Python lists, read into train/valid/test examples per language (`TaskData`).

    data = read_task_data("reviews.csv", labels=("bad", "good"), text_column="review", label_column="mood")
    data.split("und", "train")        # list[Example]

Usually you do not call this directly: `tasks.get_task(name, template=..., label_words=...,
data=...)` does, and checks the data against the task's labels. The rules:

- **Sources.** A path (`.csv`, `.tsv`, `.jsonl`, `.json` holding a list of objects); a
  `datasets.Dataset`; a mapping from column name to a list of values (`{"text": [...],
  "label": [...]}`); a list of row dicts or of `Example`s; or a mapping from split name to any
  of these (a `DatasetDict` is one). Split names are `train`, `valid`, `test` (`validation` and
  `dev` mean `valid`).
- **Columns.** `text_column` (and `text_pair_column` for pair tasks such as NLI, e.g. premise
  and hypothesis) and `label_column` must exist; a missing one is refused with the columns found.
- **Labels.** A label value is read as a label *name* when it is one of `labels`, else as a label
  *id* (an integer, or digits, in 0..n-1); anything else is refused, naming the row. A
  `datasets.ClassLabel` column is read by its names.
- **Languages.** `lang_column` gives each row's language; without it every row has `lang`
  (default `"und"`, ISO 639 "undetermined").
- **Splits.** Given (a split column, or a mapping of splits), or not: then a seeded split,
  stratified by label within each language, takes `valid_fraction` and `test_fraction` of the
  rows (at least one of each label in every split, so a label needs 3 rows). A missing `valid` or
  `test` split is cut from `train` the same way. Every label must have train examples in every
  language.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuit_transfer.data import Example

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}
DEFAULT_LANG = "und"  # ISO 639-2 "undetermined"
FILE_KINDS = (".csv", ".tsv", ".jsonl", ".json")

Rows = list[Mapping[str, Any] | Example]
"""Rows of one split: column -> value dicts, or ready `Example`s."""


class TaskDataError(ValueError):
    """User data that cannot become a task's examples (a missing column, an unknown label, too few rows)."""


@dataclass(frozen=True)
class TaskData:
    """A task's own examples by language and split.

    Attributes:
        examples: language -> split ("train", "valid", "test") -> examples.
        source: where they came from, for messages (a file path, "a datasets.Dataset", ...).
    """

    examples: Mapping[str, Mapping[str, tuple[Example, ...]]]
    source: str

    def languages(self) -> tuple[str, ...]:
        return tuple(self.examples)

    def split(self, lang: str, split: str) -> list[Example]:
        """The examples of one language and split; refuses an unknown language or split by name."""
        if lang not in self.examples:
            raise TaskDataError(
                f"The data from {self.source} has no language {lang!r}; its languages: "
                f"{', '.join(self.examples)} (set them with a language column, CLI --lang-column)."
            )
        if split not in SPLITS:
            raise TaskDataError(f"Unknown split {split!r}: own data has the splits {', '.join(SPLITS)}.")
        return list(self.examples[lang][split])

    def counts(self) -> dict[str, dict[str, int]]:
        """Examples per language and split."""
        return {lang: {s: len(rows) for s, rows in by.items()} for lang, by in self.examples.items()}


def read_task_data(
    source: Any,
    labels: Sequence[str],
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
) -> TaskData:
    """Read labelled examples for a task whose classes are `labels` (in label-id order).

    See the module docstring for the accepted sources and the rules; every problem is refused with a
    `TaskDataError` naming it, before any model is touched.
    """
    for name, fraction in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 < fraction < 1:
            raise TaskDataError(f"{name} must be between 0 and 1, got {fraction}.")
    if valid_fraction + test_fraction >= 1:
        raise TaskDataError(
            f"valid_fraction + test_fraction must be below 1, got {valid_fraction + test_fraction}."
        )
    labels = tuple(labels)
    given, where, splits_given = _read_source(source)
    if split_column is not None:
        if splits_given:
            raise TaskDataError("Give splits either as a split column or as a mapping of splits, not both.")
        given, splits_given = _split_by_column(given["train"], split_column, where), True
    columns = {
        "text_column": text_column,
        "label_column": label_column,
        "text_pair_column": text_pair_column,
        "lang_column": lang_column,
        "id_column": id_column,
    }
    by_split: dict[str, list[Example]] = {
        split: _to_examples(rows, split, labels, columns, lang, where, prefix=splits_given)
        for split, rows in given.items()
    }
    by_lang: dict[str, dict[str, list[Example]]] = defaultdict(lambda: defaultdict(list))
    for split, examples in by_split.items():
        for ex in examples:
            by_lang[ex.lang][split].append(ex)
    rng = random.Random(seed)
    fractions = {"valid": valid_fraction, "test": test_fraction}
    out: dict[str, dict[str, tuple[Example, ...]]] = {}
    for code in sorted(by_lang):
        splits = by_lang[code]
        if not splits.get("train"):
            raise TaskDataError(
                f"{where}: language {code!r} has no train rows (splits found: {', '.join(splits) or 'none'}); "
                "give a train split, or no splits at all for a seeded stratified split."
            )
        missing = [s for s in ("valid", "test") if not splits.get(s)]
        if missing:
            splits.update(_cut(splits["train"], {s: fractions[s] for s in missing}, labels, rng, where, code))
        _require_every_label(splits["train"], labels, where, code)
        out[code] = {s: tuple(splits[s]) for s in SPLITS}
    return TaskData(examples=out, source=where)


# ---------------------------------------------------------------------------------------------
# Sources -> rows by split


def _read_source(source: Any) -> tuple[dict[str, Rows], str, bool]:
    """Rows by split, a description of the source, and whether it gave splits (else all rows are
    "train", from which valid and test are cut)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return {"train": _read_file(path)}, str(path), False
    if isinstance(source, Mapping):
        keys = list(source)
        if keys and all(isinstance(k, str) and k.lower() in SPLIT_ALIASES for k in keys):
            rows_by_split: dict[str, Rows] = {}
            for key in keys:
                split = SPLIT_ALIASES[key.lower()]
                if split in rows_by_split:
                    raise TaskDataError(f"The data gives the {split} split twice (keys {keys}).")
                rows_by_split[split] = _rows_of(source[key], f"split {key!r}")
            kind = "a datasets.DatasetDict" if hasattr(source, "column_names") else "a mapping of splits"
            return rows_by_split, kind, True
        return {"train": _columns_to_rows(source)}, "a mapping of columns", False
    return {"train": _rows_of(source, "the data")}, _describe(source), False


def _describe(source: Any) -> str:
    return "a datasets.Dataset" if hasattr(source, "column_names") else "a list of rows"


def _rows_of(source: Any, what: str) -> Rows:
    """Rows of one split: a file, a Dataset, a column mapping, or a list of dicts / Examples."""
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source))
    if hasattr(source, "column_names") and hasattr(source, "features"):
        return _dataset_rows(source)
    if isinstance(source, Mapping):
        return _columns_to_rows(source)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        rows = list(source)
        for i, row in enumerate(rows):
            if not isinstance(row, (Mapping, Example)):
                raise TaskDataError(
                    f"{what}: row {i} is a {type(row).__name__} ({row!r:.60}); give rows as dicts "
                    "(column -> value), Example objects, or columns as {'text': [...], 'label': [...]}."
                )
        return rows
    raise TaskDataError(
        f"Cannot read {what} from a {type(source).__name__}: give a file path ({', '.join(FILE_KINDS)}), "
        "a datasets.Dataset or DatasetDict, a list of row dicts, or a dict of columns."
    )


def _read_file(path: Path) -> Rows:
    if not path.is_file():
        raise FileNotFoundError(f"Data file {path} does not exist.")
    kind = path.suffix.lower()
    if kind in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter="\t" if kind == ".tsv" else ","))
    if kind == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise TaskDataError(f"{path} line {i} is not JSON: {err}.") from err
        return _check_objects(rows, path)
    if kind == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise TaskDataError(f"{path} is not JSON: {err}.") from err
        if not isinstance(rows, list):
            raise TaskDataError(f"{path} must hold a JSON list of objects (one per row).")
        return _check_objects(rows, path)
    raise TaskDataError(f"Cannot read {path}: the data file must end in {', '.join(FILE_KINDS)}.")


def _check_objects(rows: list, path: Path) -> Rows:
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TaskDataError(f"{path}: row {i} is not a JSON object (column -> value).")
    return rows


def _dataset_rows(dataset: Any) -> Rows:
    """Rows of a `datasets.Dataset`, with `ClassLabel` columns read as their names."""
    names = {col: feature.names for col, feature in dataset.features.items() if hasattr(feature, "int2str")}
    rows = []
    for row in dataset:
        rows.append(
            {k: names[k][v] if k in names and isinstance(v, int) and v >= 0 else v for k, v in row.items()}
        )
    return rows


def _columns_to_rows(columns: Mapping[str, Any]) -> Rows:
    lengths = {name: len(values) for name, values in columns.items() if isinstance(values, Sequence)}
    if len(lengths) != len(columns) or len(set(lengths.values())) > 1:
        raise TaskDataError(
            "A mapping of columns needs a list of values per column, all of one length "
            f"(got lengths {lengths}); a mapping of splits needs the keys train/valid/test."
        )
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*(columns[n] for n in names))]


def _split_by_column(rows: Rows, column: str, where: str) -> dict[str, Rows]:
    _require_columns(rows, [column], where, {"split_column": column})
    out: dict[str, Rows] = defaultdict(list)
    for i, row in enumerate(rows):
        value = str(row[column]).strip().lower()
        if value not in SPLIT_ALIASES:
            raise TaskDataError(
                f"{where} row {i}: split {row[column]!r} in column {column!r} is not one of train, valid "
                "(validation, dev), test."
            )
        out[SPLIT_ALIASES[value]].append(row)
    return dict(out)


# ---------------------------------------------------------------------------------------------
# Rows -> examples


def _require_columns(rows: Rows, needed: Sequence[str], where: str, flags: Mapping[str, str]) -> None:
    if not rows:
        raise TaskDataError(f"{where} has no rows.")
    for i, row in enumerate(rows):
        missing = [c for c in needed if c not in row]
        if missing:
            flag = next(k for k, v in flags.items() if v == missing[0])
            raise TaskDataError(
                f"{where}{f' row {i}' if i else ''} has no column {missing[0]!r} (columns: "
                f"{', '.join(map(str, row)) or 'none'}); name the right one with {flag}=... "
                f"(CLI --{flag.replace('_', '-')})."
            )


def _label_id(value: Any, labels: tuple[str, ...]) -> int | None:
    """A label value as its id: a label name first, else an integer id in range; None if neither."""
    if isinstance(value, str):
        text = value.strip()
        if text in labels:
            return labels.index(text)
        value = int(text) if text.isdigit() else None
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value < len(labels) else None


def _to_examples(
    rows: Rows,
    split: str,
    labels: tuple[str, ...],
    columns: Mapping[str, str | None],
    lang: str,
    where: str,
    prefix: bool,
) -> list[Example]:
    if rows and all(isinstance(r, Example) for r in rows):
        return [_check_example(ex, labels, where, i) for i, ex in enumerate(rows)]
    if any(isinstance(r, Example) for r in rows):
        raise TaskDataError(f"{where}: mix of Example objects and row dicts; give one kind.")
    flags = {k: v for k, v in columns.items() if v is not None}
    _require_columns(rows, list(flags.values()), where, flags)
    text, label = columns["text_column"], columns["label_column"]
    pair, lang_col, id_col = columns["text_pair_column"], columns["lang_column"], columns["id_column"]
    examples = []
    for i, row in enumerate(rows):
        at = f"{where} ({split} split) row {i}" if prefix else f"{where} row {i}"
        label_id = _label_id(row[label], labels)
        if label_id is None:
            raise TaskDataError(
                f"{at}: label {row[label]!r} (column {label!r}) is "
                f"neither one of the labels {labels} nor a label id 0..{len(labels) - 1}; give labels=... "
                "(CLI --labels) with every name the column uses, in the order of the label words."
            )
        for column in (text, pair) if pair else (text,):
            if not isinstance(row[column], str) or not row[column].strip():
                raise TaskDataError(f"{at}: column {column!r} holds no text ({row[column]!r}).")
        examples.append(
            Example(
                id=str(row[id_col]) if id_col else (f"{split}-{i}" if prefix else str(i)),
                text=row[text],
                label=label_id,
                lang=str(row[lang_col]).strip() if lang_col else lang,
                text_pair=row[pair] if pair else None,
            )
        )
    return examples


def _check_example(ex: Example, labels: tuple[str, ...], where: str, i: int) -> Example:
    if not 0 <= ex.label < len(labels):
        raise TaskDataError(f"{where} row {i}: Example label {ex.label} is not an id 0..{len(labels) - 1}.")
    return ex


# ---------------------------------------------------------------------------------------------
# Splits


def _cut(
    train: list[Example],
    fractions: Mapping[str, float],
    labels: tuple[str, ...],
    rng: random.Random,
    where: str,
    lang: str,
) -> dict[str, list[Example]]:
    """Cut `fractions` of `train` (label-stratified, seeded) into new splits; `train` keeps the rest."""
    by_label: dict[int, list[Example]] = defaultdict(list)
    for ex in train:
        by_label[ex.label].append(ex)
    cut: dict[str, list[Example]] = {s: [] for s in fractions}
    kept: list[Example] = []
    for label in range(len(labels)):
        pool = list(by_label.get(label, []))
        sizes = {s: max(1, round(len(pool) * f)) for s, f in fractions.items()}
        if len(pool) < sum(sizes.values()) + 1:
            raise TaskDataError(
                f"{where}: label {labels[label]!r} has {len(pool)} row(s) in language {lang!r}; splitting off "
                f"{' and '.join(fractions)} needs at least {len(fractions) + 1} per label (one per split). "
                f"Rows per label: {_label_counts(train, labels)}. Give more rows, or the splits yourself."
            )
        rng.shuffle(pool)
        for split, size in sizes.items():
            cut[split].extend(pool[:size])
            pool = pool[size:]
        kept.extend(pool)
    order = {id(ex): i for i, ex in enumerate(train)}  # keep the source order within each split
    train[:] = sorted(kept, key=lambda ex: order[id(ex)])
    return {s: sorted(rows, key=lambda ex: order[id(ex)]) for s, rows in cut.items()}


def _require_every_label(train: list[Example], labels: tuple[str, ...], where: str, lang: str) -> None:
    counts = Counter(ex.label for ex in train)
    absent = [labels[i] for i in range(len(labels)) if not counts[i]]
    if absent:
        raise TaskDataError(
            f"{where}: label(s) {', '.join(map(repr, absent))} have no train rows in language {lang!r} "
            f"(train rows per label: {_label_counts(train, labels)})."
        )


def _label_counts(rows: Sequence[Example], labels: tuple[str, ...]) -> dict[str, int]:
    counts = Counter(ex.label for ex in rows)
    return {name: counts[i] for i, name in enumerate(labels)}
