"""Your own data on the command line: --data-file and its column options on every step of the pipeline."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from own_reviews import write_reviews

from circuit_transfer.cli import main
from circuit_transfer.io import read_json
from circuit_transfer.models import read_checkpoint_metadata
from circuit_transfer.paths import REPO_ROOT

TEMPLATE = "Review: {text}\nMood:"


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    write_reviews(path)
    return path


def _columns(path) -> list[str]:
    return ["--data-file", str(path), "--text-column", "review", "--label-column", "mood"] + [
        "--lang-column",
        "language",
    ]


def test_prepare_evaluate_discover_transfer_on_a_csv(reviews, tmp_path, capsys):
    proxy, columns = tmp_path / "proxy", _columns(reviews)
    argv = ["prepare-proxy", *columns, "--template", TEMPLATE, "--label-words", " bad, good", "--lang", "eng"]
    assert main([*argv, "--model", "tiny", "--epochs", "3", "--max-len", "32", "--out", str(proxy)]) == 0
    meta = read_checkpoint_metadata(proxy)
    assert meta["task"] == {
        "name": "reviews",
        "labels": ["bad", "good"],
        "template": TEMPLATE,
        "label_words": [" bad", " good"],
    }
    assert meta["lang"] == "eng" and meta["splits"] == {"train": 63, "valid": 9, "test": 18}

    # Later steps read the template and label words from the checkpoint; the file gives the rows.
    assert main(["evaluate", "--model", str(proxy), *columns, "--out", str(tmp_path / "eval.json")]) == 0
    evaluation = read_json(tmp_path / "eval.json")
    assert evaluation["task"] == "reviews"
    assert [(r["lang"], r["n"]) for r in evaluation["results"]] == [("eng", 18), ("ind", 18)]
    assert evaluation["results"][0]["accuracy"] == pytest.approx(meta["test"]["accuracy"])

    circuit = tmp_path / "circuit.json"
    argv = ["discover", "--model", str(proxy), *columns, "--lang", "eng", "--k", "2", "--n-examples", "3"]
    assert main([*argv, "--out", str(circuit)]) == 0
    assert "discovery set: 6 examples of reviews/eng valid (3 per class)" in capsys.readouterr().out
    assert read_json(circuit)["task"] == "reviews"

    argv = [
        "transfer",
        "--proxy",
        str(proxy),
        *columns,
        "--target",
        "ind",
        "--n-train",
        "40",
        "--epochs",
        "1",
    ]
    assert main([*argv, "--method", "ct-sft", "--circuit", str(circuit), "--out", str(tmp_path / "run")]) == 0
    record = read_json(tmp_path / "run" / "result.json")
    assert (record["task"], record["proxy_lang"], record["target"]) == ("reviews", "eng", "ind")
    assert (record["data"]["n_train"], record["data"]["n_valid"]) == (40, 9)
    assert record["data"]["n_test"] == {"ind": 18, "eng": 18}
    assert (tmp_path / "run" / "delta.safetensors").exists()


def test_own_data_problems_are_clear_errors_before_any_model(reviews, tmp_path, capsys):
    out = tmp_path / "proxy"
    base = ["prepare-proxy", "--data-file", str(reviews), "--model", "tiny", "--out", str(out)]
    assert main([*base, "--label-words", " bad, good"]) == 2
    assert "needs --template (with {text}) and --label-words" in capsys.readouterr().err
    words = ["--template", TEMPLATE, "--label-words", " bad, good"]
    assert main([*base, *words, "--label-column", "mood"]) == 2
    err = capsys.readouterr().err
    assert "has no column 'text' (columns: review, mood, language)" in err and "--text-column" in err
    assert main([*base, *words, "--text-column", "review"]) == 2  # the label column defaults to "label"
    assert "has no column 'label'" in capsys.readouterr().err
    assert (
        main([*base, *words, "--text-column", "review", "--label-column", "mood", "--labels", "neg,pos"]) == 2
    )
    assert "(column 'mood') is neither one of the labels ('neg', 'pos')" in capsys.readouterr().err
    two_langs = [
        *base,
        *words,
        "--text-column",
        "review",
        "--label-column",
        "mood",
        "--lang-column",
        "language",
    ]
    assert main(two_langs) == 2
    assert "The data has the languages eng, ind: choose one with --lang." in capsys.readouterr().err
    assert main([*two_langs, "--lang", "jav"]) == 2
    assert "has no language 'jav'; its data" in capsys.readouterr().err
    assert main(["prepare-proxy", "--task", "my-reviews", "--out", str(out)]) == 2
    assert "Unknown task 'my-reviews'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_the_readme_own_data_block_runs_as_written(tmp_path):
    """README's own-data command-line block, verbatim, on the reviews CSV it names."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    block = next(b for b in blocks if b.startswith('DATA="--data-file reviews.csv'))
    write_reviews(tmp_path / "reviews.csv", per_lang=150)
    cli = f'circuit-transfer() {{ "{sys.executable}" -m circuit_transfer.cli "$@"; }}\nset -euo pipefail\n'
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "-c", cli + block], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    record = read_json(tmp_path / "runs" / "reviews-ind" / "result.json")
    assert (record["task"], record["proxy_lang"], record["target"], record["method"]) == (
        "reviews",
        "eng",
        "ind",
        "ct-sft",
    )
    assert record["data"]["n_train"] == 100
