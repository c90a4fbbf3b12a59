"""Loaders for the two data sets CT-SFT is evaluated on: NusaX-Senti and XNLI.

Source resolution, in order: an explicit `data_dir`, else `$CT_DATA_DIR` (or `../shared/data`
when it exists, see `paths.default_data_dir`), else the Hugging Face hub through `datasets`
(`indonlp/NusaX-senti`, `facebook/xnli`). If none works, one `DataSourceError` names all three.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from circuit_transfer.paths import default_data_dir

NUSAX_LANGS: dict[str, str] = {
    "ace": "acehnese",
    "ban": "balinese",
    "bbc": "toba_batak",
    "bjn": "banjarese",
    "bug": "buginese",
    "eng": "english",
    "ind": "indonesian",
    "jav": "javanese",
    "mad": "madurese",
    "min": "minangkabau",
    "nij": "ngaju",
    "sun": "sundanese",
}
NUSAX_LABELS = ("negative", "neutral", "positive")
NUSAX_SPLITS = ("train", "valid", "test")

XNLI_LANGS = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
XNLI_LABELS = ("entailment", "neutral", "contradiction")
XNLI_SPLITS = ("dev", "test")

DATASETS = ("nusax-senti", "xnli")


class DataSourceError(FileNotFoundError):
    """No source could provide the requested data."""


@dataclass(frozen=True)
class Example:
    """One labelled example. `text_pair` is the hypothesis for NLI, None for single-text tasks."""

    id: str
    text: str
    label: int
    lang: str
    text_pair: str | None = None


def normalise_lang(dataset: str, lang: str) -> str:
    """Canonical language code: ISO 639-3 for NusaX (folder names accepted), ISO 639-1 for XNLI."""
    key = lang.strip().lower()
    if dataset == "nusax-senti":
        if key in NUSAX_LANGS:
            return key
        by_folder = {folder: code for code, folder in NUSAX_LANGS.items()}
        if key in by_folder:
            return by_folder[key]
        valid = ", ".join(f"{c} ({f})" for c, f in NUSAX_LANGS.items())
        raise ValueError(f"Unknown NusaX-Senti language {lang!r}. Valid codes (folder names): {valid}.")
    if dataset == "xnli":
        if key in XNLI_LANGS:
            return key
        raise ValueError(f"Unknown XNLI language {lang!r}. Valid codes: {', '.join(XNLI_LANGS)}.")
    raise ValueError(f"Unknown dataset {dataset!r}. Valid: {', '.join(DATASETS)}.")


def languages(dataset: str) -> tuple[str, ...]:
    """All language codes of a data set."""
    if dataset == "nusax-senti":
        return tuple(NUSAX_LANGS)
    if dataset == "xnli":
        return XNLI_LANGS
    raise ValueError(f"Unknown dataset {dataset!r}. Valid: {', '.join(DATASETS)}.")


def splits(dataset: str) -> tuple[str, ...]:
    """The split names of a data set (NusaX: train/valid/test; XNLI: dev/test)."""
    return NUSAX_SPLITS if dataset == "nusax-senti" else XNLI_SPLITS


def label_names(dataset: str) -> tuple[str, ...]:
    """Class names in label-id order."""
    if dataset == "nusax-senti":
        return NUSAX_LABELS
    if dataset == "xnli":
        return XNLI_LABELS
    raise ValueError(f"Unknown dataset {dataset!r}. Valid: {', '.join(DATASETS)}.")


def load_split(dataset: str, lang: str, split: str, data_dir: str | Path | None = None) -> list[Example]:
    """Load one split of one language.

    Args:
        dataset: "nusax-senti" or "xnli".
        lang: a language code (NusaX also accepts folder names such as "javanese").
        split: NusaX: train/valid/test; XNLI: dev/test.
        data_dir: folder holding `nusax-senti/` and `xnli/`; default: see module docstring.
    """
    code = normalise_lang(dataset, lang)
    if split not in splits(dataset):
        raise ValueError(f"{dataset} has no split {split!r}. Valid splits: {', '.join(splits(dataset))}.")
    explicit = data_dir is not None
    root = Path(data_dir) if explicit else default_data_dir()
    if root is not None:
        if not root.is_dir():
            raise DataSourceError(_no_source_message(dataset, f"data directory {root} does not exist"))
        return _load_local(dataset, code, split, root)
    try:
        return _load_hub(dataset, code, split)
    except Exception as err:  # no network, no datasets cache, ...
        raise DataSourceError(_no_source_message(dataset, f"the hub failed: {err}")) from err


def _no_source_message(dataset: str, why: str) -> str:
    return (
        f"Cannot load {dataset}: {why}. Provide the data in one of three ways: "
        "(1) pass data_dir=... (CLI: --data-dir DIR) pointing at a folder with nusax-senti/ and xnli/; "
        "(2) set CT_DATA_DIR to such a folder (e.g. CT_DATA_DIR=../shared/data); "
        "(3) run with network access so that `datasets` can fetch indonlp/NusaX-senti or facebook/xnli."
    )


def _load_local(dataset: str, code: str, split: str, root: Path) -> list[Example]:
    if dataset == "nusax-senti":
        folder = NUSAX_LANGS[code]
        codes_file = root / "nusax-senti" / "lang_codes.json"
        if codes_file.exists():
            folder = json.loads(codes_file.read_text())[code]
        path = root / "nusax-senti" / folder / f"{split}.csv"
        _require(path, dataset)
        with path.open(newline="", encoding="utf-8") as f:
            return [
                Example(id=row["id"], text=row["text"], label=NUSAX_LABELS.index(row["label"]), lang=code)
                for row in csv.DictReader(f)
            ]
    path = root / "xnli" / f"{split}-{code}.tsv"
    _require(path, dataset)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [
            Example(
                id=f"{split}-{i}",
                text=row["premise"],
                text_pair=row["hypothesis"],
                label=XNLI_LABELS.index(row["label"]),
                lang=code,
            )
            for i, row in enumerate(reader)
        ]


def _require(path: Path, dataset: str) -> None:
    if not path.exists():
        raise DataSourceError(_no_source_message(dataset, f"{path} does not exist"))


def _load_hub(dataset: str, code: str, split: str) -> list[Example]:
    import datasets  # imported lazily: slow, and only needed without local data

    if dataset == "nusax-senti":
        hub_split = {"valid": "validation"}.get(split, split)
        rows = datasets.load_dataset("indonlp/NusaX-senti", code, split=hub_split)
        names = rows.features["label"].names
        return [
            Example(id=str(r["id"]), text=r["text"], label=NUSAX_LABELS.index(names[r["label"]]), lang=code)
            for r in rows
        ]
    hub_split = {"dev": "validation"}.get(split, split)
    rows = datasets.load_dataset("facebook/xnli", code, split=hub_split)
    names = rows.features["label"].names
    return [
        Example(
            id=f"{split}-{i}",
            text=r["premise"],
            text_pair=r["hypothesis"],
            label=XNLI_LABELS.index(names[r["label"]]),
            lang=code,
        )
        for i, r in enumerate(rows)
    ]
