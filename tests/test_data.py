"""Loaders on the real NusaX-Senti and XNLI files."""

from __future__ import annotations

from collections import Counter

import pytest

from circuit_transfer.data import (
    NUSAX_LABELS,
    NUSAX_LANGS,
    XNLI_LABELS,
    XNLI_LANGS,
    DataSourceError,
    languages,
    load_split,
    normalise_lang,
)


@pytest.mark.parametrize("lang", sorted(NUSAX_LANGS))
def test_nusax_every_language_has_500_100_400_rows_with_readme_label_counts(data_dir, lang):
    counts = {"train": (192, 119, 189), "valid": (38, 24, 38), "test": (153, 96, 151)}
    for split, expected in counts.items():
        rows = load_split("nusax-senti", lang, split, data_dir)
        labels = Counter(ex.label for ex in rows)
        assert tuple(labels[i] for i in range(3)) == expected
        assert all(ex.lang == lang and ex.text for ex in rows)


def test_nusax_is_parallel_same_ids_and_labels_across_languages(data_dir):
    ind = load_split("nusax-senti", "ind", "test", data_dir)
    jav = load_split("nusax-senti", "javanese", "test", data_dir)
    assert [(e.id, e.label) for e in ind] == [(e.id, e.label) for e in jav]
    assert ind[0].text != jav[0].text


def test_nusax_reads_newlines_inside_quoted_fields(data_dir):
    rows = [
        ex
        for lang in NUSAX_LANGS
        for split in ("train", "valid", "test")
        for ex in load_split("nusax-senti", lang, split, data_dir)
    ]
    assert sum("\n" in ex.text for ex in rows) == 49


@pytest.mark.parametrize("lang", XNLI_LANGS)
def test_xnli_rows_and_balanced_labels(data_dir, lang):
    dev = load_split("xnli", lang, "dev", data_dir)
    test = load_split("xnli", lang, "test", data_dir)
    assert (len(dev), len(test)) == (2490, 5010)
    assert Counter(ex.label for ex in dev) == {0: 830, 1: 830, 2: 830}
    assert Counter(ex.label for ex in test) == {0: 1670, 1: 1670, 2: 1670}
    assert all(ex.text_pair for ex in dev)


def test_language_codes_and_folder_names_are_accepted():
    assert normalise_lang("nusax-senti", "Javanese") == "jav"
    assert normalise_lang("nusax-senti", "toba_batak") == "bbc"
    assert languages("nusax-senti")[0] == "ace" and len(languages("nusax-senti")) == 12
    assert len(languages("xnli")) == 15


def test_unknown_language_lists_valid_codes():
    with pytest.raises(ValueError, match=r"Unknown NusaX-Senti language 'klingon'.*jav \(javanese\)"):
        normalise_lang("nusax-senti", "klingon")
    with pytest.raises(ValueError, match=r"Unknown XNLI language 'jav'.*sw, th"):
        normalise_lang("xnli", "jav")


def test_missing_split_names_valid_splits(data_dir):
    with pytest.raises(ValueError, match=r"xnli has no split 'train'.*dev, test"):
        load_split("xnli", "en", "train", data_dir)


def test_missing_data_directory_says_all_three_ways(tmp_path):
    with pytest.raises(DataSourceError, match=r"does not exist.*data_dir.*CT_DATA_DIR.*network"):
        load_split("nusax-senti", "ind", "train", tmp_path / "nowhere")


def test_data_directory_without_the_dataset_folder(tmp_path):
    with pytest.raises(DataSourceError, match=r"indonesian/train.csv does not exist"):
        load_split("nusax-senti", "ind", "train", tmp_path)


def _hub_from_local_files(data_dir, calls):
    """`datasets.load_dataset` as the hub would answer, built from the real local files.

    Only the network is replaced: rows, ids and texts are the real ones, in the hub's schema
    (ClassLabel labels in a different name order, "validation" split names)."""
    import datasets

    def load_dataset(repo, config, split):
        calls.append((repo, config, split))
        local_split = {"validation": "valid" if repo == "indonlp/NusaX-senti" else "dev"}.get(split, split)
        if repo == "indonlp/NusaX-senti":
            rows, names = (
                load_split("nusax-senti", config, local_split, data_dir),
                ["positive", "negative", "neutral"],
            )
            columns = {"id": [int(r.id) for r in rows], "text": [r.text for r in rows]}
            original = NUSAX_LABELS
        else:
            rows, names = (
                load_split("xnli", config, local_split, data_dir),
                ["neutral", "entailment", "contradiction"],
            )
            columns = {"premise": [r.text for r in rows], "hypothesis": [r.text_pair for r in rows]}
            original = XNLI_LABELS
        columns["label"] = [names.index(original[r.label]) for r in rows]
        features = {k: datasets.Value("int64" if k == "id" else "string") for k in columns if k != "label"}
        features = datasets.Features({**features, "label": datasets.ClassLabel(names=names)})
        return datasets.Dataset.from_dict(columns, features=features)

    return load_dataset


def test_hub_fallback_maps_splits_and_label_names(data_dir, monkeypatch, tmp_path):
    import datasets

    calls: list = []
    monkeypatch.setattr(datasets, "load_dataset", _hub_from_local_files(data_dir, calls))
    monkeypatch.delenv("CT_DATA_DIR", raising=False)
    monkeypatch.setattr("circuit_transfer.data.default_data_dir", lambda: None)
    for dataset, lang, split in [("nusax-senti", "jav", "valid"), ("xnli", "sw", "dev")]:
        from_hub, local = load_split(dataset, lang, split), load_split(dataset, lang, split, data_dir)
        assert [(r.id, r.text, r.text_pair, r.label) for r in from_hub] == [
            (r.id, r.text, r.text_pair, r.label) for r in local
        ]
    assert calls == [("indonlp/NusaX-senti", "jav", "validation"), ("facebook/xnli", "sw", "validation")]
