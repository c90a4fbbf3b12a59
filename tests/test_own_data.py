"""Your own task: examples from a CSV/JSONL file, a `datasets` object or Python lists, split, checked."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from circuit_transfer.data import Example
from circuit_transfer.own_data import TaskDataError
from circuit_transfer.tasks import LabelWordError, NoDataError, Task, get_task

WORDS = (" bad", " okay", " good")
TEMPLATE = "Review: {text}\nMood:"


def _write_csv(path, rows, fields=("review", "mood", "language")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _rows(per_label: int, langs=("eng",), labels=("bad", "okay", "good")):
    return [
        {"review": f"{lang} review {label} {i}", "mood": label, "language": lang}
        for lang in langs
        for label in labels
        for i in range(per_label)
    ]


def _task(source, **kw):
    kw.setdefault("text_column", "review")
    kw.setdefault("label_column", "mood")
    return get_task("my-reviews", template=TEMPLATE, label_words=WORDS, data=source, **kw)


def test_csv_gets_a_seeded_label_stratified_split_per_language(tmp_path):
    path = _write_csv(tmp_path / "reviews.csv", _rows(20, langs=("eng", "ind")))
    task = _task(path, lang_column="language")
    assert task.labels == ("bad", "okay", "good") and task.languages() == ("eng", "ind")
    for lang in ("eng", "ind"):
        splits = {s: task.examples(lang, s) for s in ("train", "valid", "test")}
        assert {s: len(v) for s, v in splits.items()} == {"train": 42, "valid": 6, "test": 12}
        for rows in splits.values():  # 10% valid and 20% test of every label
            assert Counter(ex.label for ex in rows) == {
                0: len(rows) // 3,
                1: len(rows) // 3,
                2: len(rows) // 3,
            }
            assert all(ex.lang == lang and ex.text.startswith(lang) for ex in rows)
        texts = [ex.text for rows in splits.values() for ex in rows]
        assert sorted(texts) == sorted(r["review"] for r in _rows(20, (lang,)))  # a partition
        assert task.examples(lang, "train")[0].text.endswith(tuple("0123456789"))
    assert task.render(task.examples("eng", "test")[0]).startswith("Review: eng review ")
    again = _task(path, lang_column="language")
    other = _task(path, lang_column="language", seed=1)
    assert again.examples("eng", "test") == task.examples("eng", "test")
    assert other.examples("eng", "test") != task.examples("eng", "test")


def test_the_default_language_and_the_split_fractions(tmp_path):
    path = _write_csv(tmp_path / "r.csv", _rows(10))
    task = _task(path, valid_fraction=0.2, test_fraction=0.3)
    assert task.languages() == ("und",)
    assert task.data.counts() == {"und": {"train": 15, "valid": 6, "test": 9}}


def test_jsonl_pair_task_with_a_split_column_and_label_ids(tmp_path):
    rows = [
        {"premise": f"p{i}", "hypothesis": f"h{i}", "gold": i % 3, "part": part}
        for part in ("train", "dev", "test")
        for i in range(6)
    ]
    path = tmp_path / "nli.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    task = get_task(
        "my-nli",
        template="{text}\nQuestion: {text_pair}\nAnswer:",
        label_words=(" yes", " maybe", " no"),
        labels=("entailment", "neutral", "contradiction"),
        data=path,
        text_column="premise",
        text_pair_column="hypothesis",
        label_column="gold",
        split_column="part",
    )
    valid = task.examples("und", "valid")  # "dev" is the valid split
    assert [(ex.id, ex.text, ex.text_pair, ex.label) for ex in valid[:2]] == [
        ("valid-0", "p0", "h0", 0),
        ("valid-1", "p1", "h1", 1),
    ]
    assert task.render(valid[1]) == "p1\nQuestion: h1\nAnswer:"
    assert len(task.examples("und", "train")) == len(task.examples("und", "test")) == 6


def test_label_names_are_read_before_label_ids():
    """Labels named "1".."3" (stars): the value "1" is the name "1" (id 0), not the id 1."""
    rows = [{"text": f"t{i}", "label": str(1 + i % 3)} for i in range(30)]
    task = get_task(
        "stars",
        template="{text}\nStars:",
        label_words=(" one", " two", " three"),
        labels=("1", "2", "3"),
        data=rows,
    )
    examples = {ex.text: ex.label for s in ("train", "valid", "test") for ex in task.examples("und", s)}
    assert examples["t0"] == 0 and examples["t1"] == 1 and examples["t2"] == 2
    with pytest.raises(
        TaskDataError, match=r"row 2: label '3' \(column 'label'\) is neither one of the labels"
    ):
        # without labels=, the names are (one, two, three): "3" is none of them and no id in 0..2
        get_task("ids", template="{text}\nStars:", label_words=(" one", " two", " three"), data=rows)


def test_datasets_dataset_and_dataset_dict():
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "y": datasets.ClassLabel(names=["neg", "pos"])}
    )
    data = {"sentence": [f"s{i}" for i in range(20)], "y": [i % 2 for i in range(20)]}
    ds = datasets.Dataset.from_dict(data, features=features)
    task = get_task(
        "ds",
        template="{text} =",
        label_words=(" neg", " pos"),
        labels=("pos", "neg"),
        data=ds,
        text_column="sentence",
        label_column="y",
    )
    # ClassLabel columns are read by name: "neg" is label 1 of this task's ("pos", "neg").
    label_of = {ex.text: ex.label for s in ("train", "valid", "test") for ex in task.examples("und", s)}
    assert label_of["s0"] == 1 and label_of["s1"] == 0
    dd = datasets.DatasetDict(
        {"train": ds, "validation": ds.select(range(4)), "test": ds.select(range(4, 10))}
    )
    task = get_task(
        "dd",
        template="{text} =",
        label_words=(" neg", " pos"),
        data=dd,
        text_column="sentence",
        label_column="y",
    )
    assert task.data.counts() == {"und": {"train": 20, "valid": 4, "test": 6}}
    assert task.examples("und", "valid")[0].id == "valid-0"


def test_python_lists_columns_rows_and_examples():
    texts = [f"t{i}" for i in range(12)]
    labels = ["bad", "good"] * 6
    from_columns = get_task(
        "l", template="{text}:", label_words=(" bad", " good"), data={"text": texts, "label": labels}
    )
    from_rows = get_task(
        "l",
        template="{text}:",
        label_words=(" bad", " good"),
        data=[{"text": t, "label": y} for t, y in zip(texts, labels)],
    )
    assert from_columns.data.examples == from_rows.data.examples
    examples = [Example(str(i), t, i % 2, "jav") for i, t in enumerate(texts)]
    split = get_task(
        "l",
        template="{text}:",
        label_words=(" bad", " good"),
        data={"train": examples[:8], "valid": examples[8:10], "test": examples[10:]},
    )
    assert split.languages() == ("jav",) and split.examples("jav", "test") == examples[10:]


def test_missing_pieces_are_refused_with_the_fix(tmp_path):
    path = _write_csv(tmp_path / "r.csv", _rows(10))
    with pytest.raises(
        TaskDataError,
        match=r"has no column 'text' \(columns: review, mood, language\); "
        r"name the right one with text_column=\.\.\. \(CLI --text-column\)",
    ):
        get_task("x", template=TEMPLATE, label_words=WORDS, data=path, label_column="mood")
    with pytest.raises(TaskDataError, match="no column 'lang'.*lang_column"):
        _task(path, lang_column="lang")
    bad = _write_csv(tmp_path / "bad.csv", [*_rows(10), {"review": "x", "mood": "great", "language": "eng"}])
    with pytest.raises(
        TaskDataError,
        match=r"bad.csv row 30: label 'great' \(column 'mood'\) is neither one "
        r"of the labels \('bad', 'okay', 'good'\) nor a label id 0..2; give labels=",
    ):
        _task(bad)
    few = _write_csv(tmp_path / "few.csv", [r for r in _rows(10) if r["mood"] != "okay"] + _rows(2)[2:4])
    with pytest.raises(
        TaskDataError,
        match=r"label 'okay' has 2 row\(s\) in language 'und'; splitting off "
        r"valid and test needs at least 3 per label .* Rows per label: \{'bad': 10, 'okay': 2",
    ):
        _task(few)
    absent = [r for r in _rows(10) if r["mood"] != "okay"]
    with pytest.raises(TaskDataError, match=r"label\(s\) 'okay' have no train rows in language 'und'"):
        _task({"train": absent, "valid": absent, "test": absent})
    (tmp_path / "r.parquet").write_text("")
    with pytest.raises(TaskDataError, match="must end in .csv, .tsv, .jsonl, .json"):
        _task(tmp_path / "r.parquet")
    with pytest.raises(FileNotFoundError, match="Data file .*nope.csv does not exist"):
        _task(tmp_path / "nope.csv")
    with pytest.raises(TaskDataError, match="row 1 is a str"):
        _task([{"review": "a", "mood": "bad"}, "plain text"])


def test_get_task_names_what_an_own_task_needs():
    with pytest.raises(
        ValueError,
        match=r"Unknown task 'my-reviews': the built-in tasks are nusax-senti, "
        r"xnli\. For your own task give template= .* --data-file FILE",
    ):
        get_task("my-reviews", label_words=[" bad", " good"])
    task = get_task("my-reviews", template="{text}\nMood:", label_words=[" bad", " good"])
    assert task.labels == ("bad", "good") and task.data is None
    with pytest.raises(
        NoDataError,
        match=r"Task 'my-reviews' has no data to give und train examples: make "
        r"it with get_task\('my-reviews', \.\.\., data=FILE_OR_DATASET\)",
    ):
        task.train_valid("und")
    with pytest.raises(ValueError, match="has no {text} field"):
        get_task("t", template="Mood:", label_words=[" bad", " good"])
    with pytest.raises(LabelWordError, match="2 labels .* but 3 label words"):
        get_task("t", template="{text}", label_words=[" a", " b", " c"], labels=["x", "y"])


def test_an_own_task_gets_the_same_label_word_checks(word_tokenizer, tmp_path):
    rows = [{"text": f"t{i}", "label": ["bad", "good"][i % 2]} for i in range(10)]
    task = get_task(
        "t", template="{text}", label_words=[" very bad", " very good"], labels=["bad", "good"], data=rows
    )
    with pytest.raises(
        LabelWordError, match=r"' very bad' and ' very good' all start with token \d+ \('very'\)"
    ):
        task.label_token_ids(word_tokenizer)


def test_task_round_trips_through_its_dict(tmp_path):
    task = _task(_write_csv(tmp_path / "r.csv", _rows(10)))
    back = Task.from_dict(json.loads(json.dumps(task.to_dict())))
    assert back == task and back.data is None
    old_checkpoint = {"name": "xnli", "template": "{text}|{text_pair}", "label_words": [" y", " m", " n"]}
    assert Task.from_dict(old_checkpoint).labels == ("entailment", "neutral", "contradiction")
