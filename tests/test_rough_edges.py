"""The rough edges a new user hit on the command line (issue 12), each with the input that hit it.

Every test drives the real `circuit-transfer` entry point (`main`, or the console module in a
subprocess) on a real tiny checkpoint and real NusaX data: bad input must end in one clear line
naming the problem and the fix, before any compute, and nothing may be overwritten silently.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import circuit_transfer.proxy
import circuit_transfer.transfer
from circuit_transfer.cli import INTERRUPTED, build_parser, main
from circuit_transfer.data import load_split
from circuit_transfer.discovery import Circuit
from circuit_transfer.models import TinyModelSpec, build_tiny_model, load_model, save_checkpoint
from circuit_transfer.proxy import training_state_path
from circuit_transfer.tasks import balanced_sample, get_task, stratified_subset

TASK = get_task("nusax-senti")
SPEC = TinyModelSpec(n_layers=2, n_heads=4, d_model=32, d_head=8, d_mlp=64, vocab_size=600)
SMALL = ["--n-train", "12", "--n-test", "12", "--n-valid", "12", "--epochs", "1", "--max-len", "48"]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, data_dir) -> Path:
    """An untrained tiny NusaX checkpoint (Indonesian proxy) with its task recorded."""
    texts = [ex.text for ex in load_split(TASK.name, "ind", "train", data_dir)[:120]]
    model = build_tiny_model(texts, spec=SPEC, extra_words=TASK.template_words(), seed=0)
    meta = {
        "kind": "proxy",
        "task": {"name": TASK.name, "template": TASK.template, "label_words": list(TASK.label_words)},
        "lang": "ind",
    }
    return save_checkpoint(model, tmp_path_factory.mktemp("proxy") / "proxy", metadata=meta)


@pytest.fixture(scope="module")
def circuit_file(proxy, tmp_path_factory) -> Path:
    model = load_model(str(proxy))
    return Circuit.from_heads([(0, 1), (1, 2)], model, task=TASK.name, lang="ind").save(
        tmp_path_factory.mktemp("circuit") / "circuit.json"
    )


def _copy_checkpoint(proxy: Path, dest: Path) -> Path:
    import shutil

    return Path(shutil.copytree(proxy, dest))


def _transfer_args(proxy, circuit_file, out, method="ct-sft"):
    return [
        "transfer",
        "--proxy",
        str(proxy),
        "--target",
        "jav",
        "--method",
        method,
        "--circuit",
        str(circuit_file),
        "--out",
        str(out),
        *SMALL,
    ]


@pytest.fixture
def no_compute(monkeypatch):
    """Make loading a model or training fail the test: the check under test must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded or trained before the bad input was refused")

    monkeypatch.setattr(circuit_transfer.transfer, "load_model", forbidden)
    monkeypatch.setattr(circuit_transfer.proxy, "train_classifier", forbidden)
    monkeypatch.setattr(circuit_transfer.proxy, "build_tiny_model", forbidden)


# ---------------------------------------------------------------------------------------------
# --help and parse-time checks


def test_help_imports_neither_torch_nor_transformer_lens():
    """`circuit-transfer --help` (and every subcommand's) answers without the heavy imports (was 14 s)."""
    names = ", ".join(repr(n) for n in sorted(build_parser()._subparsers._group_actions[0].choices))
    code = (
        "import sys, contextlib, io\n"
        "from circuit_transfer.cli import build_parser\n"
        f"for args in [['--help']] + [[n, '--help'] for n in [{names}]]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        build_parser().parse_args(args)\n"
        "print(sorted(m for m in ('torch', 'transformer_lens', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["discover", "--model", "m", "--batch-size", "0"],
        ["transfer", "--proxy", "p", "--target", "jav", "--method", "full", "--out", "o", "--n-train", "0"],
        ["prepare-proxy", "--out", "o", "--max-len", "-3"],
    ],
)
def test_non_positive_sizes_are_refused_when_parsing(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_threads_flag_sets_torch_threads_on_every_subcommand(proxy, circuit_file, monkeypatch, tmp_path):
    before = torch.get_num_threads()
    try:
        assert main(["compare", str(circuit_file), str(circuit_file), "--threads", "3"]) == 0
        assert torch.get_num_threads() == 3
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert main(["compare", str(circuit_file), str(circuit_file)]) == 0
        assert torch.get_num_threads() == 1  # the default without OMP_NUM_THREADS
        for name in ("prepare-proxy", "evaluate", "discover", "compare", "transfer", "report"):
            assert "--threads" in build_parser()._subparsers._group_actions[0].choices[name].format_help()
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# Unreadable inputs: one line naming the file


def test_checkpoint_with_a_missing_file(proxy, tmp_path, capsys):
    broken = _copy_checkpoint(proxy, tmp_path / "broken")
    (broken / "config.json").unlink()
    assert main(["evaluate", "--model", str(broken), "--langs", "ind"]) == 2
    err = capsys.readouterr().err
    assert "missing `config.json`" in err and str(broken) in err and "Traceback" not in err


def test_truncated_weights_name_the_file(proxy, tmp_path, capsys):
    broken = _copy_checkpoint(proxy, tmp_path / "truncated")
    weights = broken / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["evaluate", "--model", str(broken), "--langs", "ind"]) == 2
    err = capsys.readouterr().err
    assert str(weights) in err and "truncated" in err


@pytest.mark.parametrize(
    "text,expected",
    [('{"format": "circuit-transfer-circuit", "heads": [[0,', "not valid JSON"), ("{}", "format")],
)
def test_corrupted_circuit_json_names_the_file(circuit_file, tmp_path, capsys, text, expected):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert main(["compare", str(circuit_file), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and expected in err and len(err.splitlines()) == 1


def test_empty_circuit_is_refused_by_ct_sft_naming_the_file(proxy, tmp_path, capsys, no_compute):
    empty = Circuit.from_heads([], n_layers=SPEC.n_layers, n_heads=SPEC.n_heads).save(tmp_path / "empty.json")
    assert main(_transfer_args(proxy, empty, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "empty circuit" in err and "ln-only" in err
    assert not (tmp_path / "run").exists()


def test_library_refuses_an_empty_circuit_too(proxy):
    model = load_model(str(proxy))
    with pytest.raises(ValueError, match="empty circuit"):
        circuit_transfer.transfer.heads_for("ct-sft", Circuit.empty(model), model, 0)


# ---------------------------------------------------------------------------------------------
# --out: checked before any compute, never overwritten silently


def test_transfer_out_is_never_overwritten_silently_and_overwrite_leaves_no_stale_delta(
    proxy, circuit_file, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    assert main(_transfer_args(proxy, circuit_file, out)) == 0
    assert {"delta.safetensors", "result.json"} <= {p.name for p in out.iterdir()}
    first = (out / "result.json").read_bytes()

    with monkeypatch.context() as m:  # refused before the model is even loaded
        m.setattr(circuit_transfer.transfer, "load_model", lambda *a: pytest.fail("loaded a model"))
        assert main(_transfer_args(proxy, circuit_file, out, method="zero-shot")) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "result.json").read_bytes() == first

    assert main([*_transfer_args(proxy, circuit_file, out, method="zero-shot"), "--overwrite"]) == 0
    names = {p.name for p in out.iterdir()}
    assert "result.json" in names and "delta.safetensors" not in names  # no stale delta from ct-sft
    assert json.loads((out / "result.json").read_text())["method"] == "zero-shot"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folder left behind


def test_a_folder_with_other_files_is_never_replaced(proxy, circuit_file, tmp_path, capsys, no_compute):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        assert main([*_transfer_args(proxy, circuit_file, out), *extra]) == 2
        assert "never replaced" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileExistsError, match="not a transfer run folder"):  # the library refuses it too
        spec = circuit_transfer.transfer.TransferSpec("full", target="jav", n_train=3)
        circuit_transfer.transfer.transfer(proxy, spec, out=out)


def test_prepare_proxy_checks_out_before_training(tmp_path, proxy, capsys, no_compute):
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("x")
    assert main(["prepare-proxy", "--out", str(other), *SMALL[:2]]) == 2
    assert "not a checkpoint" in capsys.readouterr().err
    existing = _copy_checkpoint(proxy, tmp_path / "ckpt")
    assert main(["prepare-proxy", "--out", str(existing)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main(["prepare-proxy", "--out", str(a_file / "proxy")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_out_is_refused_before_training(tmp_path, capsys, no_compute):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["prepare-proxy", "--out", str(locked / "proxy")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_file_outputs_refuse_to_overwrite(circuit_file, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    out.write_text("old")
    assert main(["compare", str(circuit_file), str(circuit_file), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "old"
    assert main(["compare", str(circuit_file), str(circuit_file), "--out", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["jaccard"] == 1.0


# ---------------------------------------------------------------------------------------------
# Ctrl-C


def test_ctrl_c_while_writing_exits_130_with_one_line_and_nothing_half_written(
    proxy, circuit_file, tmp_path, capsys, monkeypatch
):
    from circuit_transfer import delta

    def interrupted_save(tensors, path, metadata=None):
        Path(path).write_bytes(b"half a delta")
        raise KeyboardInterrupt

    monkeypatch.setattr(delta, "save_file", interrupted_save)
    out = tmp_path / "run"
    assert main(_transfer_args(proxy, circuit_file, out)) == INTERRUPTED
    err = capsys.readouterr().err
    messages = [line for line in re.split(r"[\r\n]", err) if line.startswith("circuit-transfer")]
    assert len(messages) == 1 and "interrupted" in messages[0] and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # neither the run folder nor a temporary one


@pytest.mark.slow
def test_sigint_during_training_in_a_real_process(tmp_path, data_dir):
    """A real Ctrl-C (SIGINT) while prepare-proxy trains: exit 130, no traceback, no checkpoint folder;
    only the whole training state it resumes from is left (saved after epoch 1), and the message
    says how to resume."""
    out = tmp_path / "proxy"
    cmd = [sys.executable, "-m", "circuit_transfer.cli", "prepare-proxy", "--out", str(out)]
    cmd += ["--n-train", "60", "--n-valid", "30", "--n-test", "30", "--epochs", "200", "--max-len", "32"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    seen = b""
    while b"epoch 2" not in seen:  # tqdm's bar: training has started
        chunk = proc.stderr.read1(4096)
        assert chunk, f"the process ended before training: {seen[-2000:]!r}"
        seen += chunk
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == INTERRUPTED
    text = rest.decode(errors="replace")
    assert "interrupted" in text and "Traceback" not in text and "KeyboardInterrupt" not in text
    state = training_state_path(out)
    assert f"run the same command again to resume from {state}" in text
    assert not out.exists() and list(tmp_path.iterdir()) == [state]


# ---------------------------------------------------------------------------------------------
# Questionable input is refused or warned about


def test_another_task_than_the_checkpoints_is_refused(proxy, capsys):
    assert main(["evaluate", "--model", str(proxy), "--task", "xnli", "--langs", "en"]) == 2
    err = capsys.readouterr().err
    assert "trained on nusax-senti, not xnli" in err


def test_label_words_overriding_the_trained_ones_warn(proxy, capsys):
    argv = ["evaluate", "--model", str(proxy), "--langs", "ind", "--label-words", " bad, meh, good"]
    assert main([*argv, "--split", "valid"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "(' negative', ' neutral', ' positive')" in err and "' meh'" in err


def test_prepare_proxy_refuses_more_examples_than_the_split_has(tmp_path, capsys, no_compute):
    assert main(["prepare-proxy", "--out", str(tmp_path / "p"), "--n-train", "99999"]) == 2
    err = capsys.readouterr().err
    assert "n_train=99999" in err and "only 500 train examples" in err


def test_balanced_sample_refuses_labels_outside_n_labels(data_dir):
    rows = load_split(TASK.name, "ind", "valid", data_dir)
    with pytest.raises(ValueError, match=r"n_labels=2.*outside: \[2\]"):
        balanced_sample(rows, 3, seed=0, n_labels=2)
    with pytest.raises(ValueError, match=r"n_labels=2.*outside: \[2\]"):
        stratified_subset(rows, 6, seed=0, n_labels=2)
    assert {ex.label for ex in balanced_sample(rows, 3, seed=0, n_labels=3)} == {0, 1, 2}


# ---------------------------------------------------------------------------------------------
# Progress bars (tqdm, on stderr)


def test_discover_and_transfer_show_progress(proxy, circuit_file, tmp_path, capfd):
    argv = ["discover", "--model", str(proxy), "--lang", "ind", "--k", "2", "--n-examples", "3"]
    assert main([*argv, "--batch-size", "3", "--no-faithfulness", "--max-len", "48"]) == 0
    assert "head relevance" in capfd.readouterr().err
    assert main(_transfer_args(proxy, circuit_file, tmp_path / "run")) == 0
    err = capfd.readouterr().err
    assert all(f"{when} {lang}" in err for when in ("before", "after") for lang in ("jav", "ind"))


def test_the_demo_shows_progress_from_its_first_step(monkeypatch, tmp_path):
    import circuit_transfer.demo as demo

    class Stop(Exception):
        pass

    def first_step(*args, **kwargs):
        assert kwargs.get("progress") is True
        raise Stop

    monkeypatch.setattr(demo, "prepare_proxy", first_step)
    with pytest.raises(Stop):
        demo.main(["--out", str(tmp_path)])


# ---------------------------------------------------------------------------------------------
# File modes follow the user's umask


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_checkpoints_and_runs_follow_the_umask(proxy, circuit_file, tmp_path, mask):
    model = load_model(str(proxy))
    old = os.umask(mask)
    try:
        ckpt = save_checkpoint(model, tmp_path / "ckpt", metadata={"lang": "ind"})
        assert main(_transfer_args(proxy, circuit_file, tmp_path / "run")) == 0
    finally:
        os.umask(old)
    for folder in (ckpt, ckpt / "tokenizer", tmp_path / "run"):
        assert folder.stat().st_mode & 0o777 == 0o777 & ~mask, folder
    for path in (
        ckpt / "weights.safetensors",
        tmp_path / "run" / "delta.safetensors",
        tmp_path / "run" / "result.json",
    ):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


# ---------------------------------------------------------------------------------------------
# Unstable selection


def _scores(values, stderr):
    from circuit_transfer.discovery import HeadScores

    values = torch.tensor(values)
    return HeadScores(
        values, model_name="m", n_layers=values.shape[0], n_heads=values.shape[1], stderr=torch.tensor(stderr)
    )


def test_a_cut_within_one_standard_error_is_flagged_in_the_repr_and_the_grid():
    from circuit_transfer.discovery import select_threshold, select_top_k
    from circuit_transfer.views import relevance_grid_html

    # the demo's case: L0H2 0.694 +- 0.25 (k-th) vs L0H3 0.677 +- 0.40 ((k+1)-th)
    scores = _scores([[0.9, 0.1, 0.694, 0.677]], [[0.1, 0.1, 0.25, 0.40]])
    circuit = select_top_k(scores, 2)
    assert circuit.heads == ((0, 0), (0, 2))
    cut = circuit.boundary
    assert (cut.last_in, cut.first_out, cut.unstable) == ((0, 2), (0, 3), True)
    assert "unstable selection: L0H2 +0.694 ± 0.25 (last head in) and L0H3 +0.677 ± 0.4" in repr(circuit)
    assert "unstable selection" in relevance_grid_html(circuit)
    assert select_threshold(scores, 0.68).boundary.unstable  # the same cut by a threshold

    stable = select_top_k(_scores([[0.9, 0.1, 0.694, 0.2]], [[0.1, 0.1, 0.25, 0.2]]), 2)
    assert not stable.boundary.unstable and stable.boundary.gap == pytest.approx(0.494)
    assert "unstable" not in repr(stable) and "unstable" not in relevance_grid_html(stable)
    # one standard error is the larger of the two heads' (here the first head out's)
    assert select_top_k(_scores([[0.9, 0.5, 0.3, 0.0]], [[0.0, 0.01, 0.01, 0.35]]), 3).boundary.unstable


def test_discover_says_when_its_cut_is_unstable(proxy, tmp_path, capsys):
    out = tmp_path / "c.json"
    argv = ["discover", "--model", str(proxy), "--lang", "ind", "--n-examples", "3", "--batch-size", "9"]
    seen = set()
    for k in ("1", "2", "3", "4"):
        assert (
            main([*argv, "--k", k, "--no-faithfulness", "--max-len", "48", "--out", str(out), "--overwrite"])
            == 0
        )
        printed = capsys.readouterr().out
        unstable = Circuit.load(out).boundary.unstable
        assert ("unstable selection:" in printed) == unstable
        assert printed.count("within one standard error") == (2 if unstable else 0)  # repr + the line
        seen.add(unstable)
    assert True in seen  # an untrained model on 9 sentences has some cut within noise
