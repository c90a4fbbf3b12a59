"""The console script: every subcommand has --help, and bad input gives a clear error, not a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from circuit_transfer.cli import build_parser


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_top_level_help_lists_the_pipeline():
    out = subprocess.run(
        [sys.executable, "-m", "circuit_transfer.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for name in ("prepare-proxy", "evaluate", "transfer"):
        assert name in out.stdout


@pytest.mark.parametrize("name", _subcommands())
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage: circuit-transfer " + name in capsys.readouterr().out


def test_unknown_language_is_a_clear_error(capsys, tmp_path):
    from circuit_transfer.cli import main

    code = main(["prepare-proxy", "--lang", "klingon", "--out", str(tmp_path / "p")])
    assert code == 2
    err = capsys.readouterr().err
    assert "Unknown NusaX-Senti language 'klingon'" in err and "jav (javanese)" in err
    assert not (tmp_path / "p").exists()


def test_prepare_proxy_caps_every_split_with_fixed_stratified_subsets(tmp_path, data_dir):
    """--n-train/--n-valid/--n-test shrink the real XNLI splits to label-balanced subsets for a CPU run."""
    from circuit_transfer.cli import main
    from circuit_transfer.models import read_checkpoint_metadata

    out = tmp_path / "proxy"
    argv = ["prepare-proxy", "--task", "xnli", "--lang", "en", "--model", "tiny", "--epochs", "1"]
    argv += ["--n-train", "30", "--n-valid", "12", "--n-test", "24", "--data-dir", str(data_dir)]
    assert main([*argv, "--out", str(out)]) == 0
    meta = read_checkpoint_metadata(out)
    assert meta["splits"] == {"train": 30, "valid": 12, "test": 24}
    assert meta["test"]["n"] == 24


def test_prepare_proxy_interrupted_and_run_again_saves_the_uninterrupted_checkpoint(
    tmp_path, data_dir, monkeypatch, capsys
):
    """Independent answer: the weight fingerprint of the same prepare-proxy run left alone. Killed in
    its second epoch, the same command run again resumes from the state saved beside --out after
    epoch 1 (6 steps, not 9) and saves the identical weights; the state file is gone afterwards, and
    the metadata says it resumed."""
    from circuit_transfer.cli import INTERRUPTED, main
    from circuit_transfer.models import checkpoint_fingerprint, read_checkpoint_metadata
    from circuit_transfer.optim import MaskedAdamW
    from circuit_transfer.proxy import training_state_path

    argv = ["prepare-proxy", "--task", "xnli", "--lang", "en", "--model", "tiny", "--epochs", "3"]
    argv += ["--n-train", "48", "--n-valid", "12", "--n-test", "12", "--data-dir", str(data_dir)]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0  # 3 steps an epoch

    out = tmp_path / "resumed"
    real_step, calls = MaskedAdamW.step, []

    def killed_in_epoch_two(self):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(1)
        real_step(self)

    with monkeypatch.context() as patch:
        patch.setattr(MaskedAdamW, "step", killed_in_epoch_two)
        assert main([*argv, "--out", str(out)]) == INTERRUPTED
    assert f"run the same command again to resume from {training_state_path(out)}" in capsys.readouterr().err
    assert training_state_path(out).is_file() and not out.exists()
    steps_after_resume = []

    def counted(self):
        steps_after_resume.append(1)
        real_step(self)

    with monkeypatch.context() as patch:
        patch.setattr(MaskedAdamW, "step", counted)
        assert main([*argv, "--out", str(out)]) == 0
    assert len(steps_after_resume) == 6  # epochs 2 and 3 from the state saved after epoch 1, not all 9
    assert read_checkpoint_metadata(out)["training"]["best_epoch"] >= 1  # trained weights are compared
    assert checkpoint_fingerprint(out) == checkpoint_fingerprint(tmp_path / "whole")
    assert not training_state_path(out).exists()
    assert (
        read_checkpoint_metadata(out)["resumed"]
        and not read_checkpoint_metadata(tmp_path / "whole")["resumed"]
    )


def test_evaluate_n_scores_the_same_stratified_rows_as_the_sweeps_n_test(tmp_path, data_dir):
    """`evaluate --n 24` reads out the rows `stratified_cap` gives a sweep's --n-test 24, per language."""
    from circuit_transfer.cli import main
    from circuit_transfer.evaluate import evaluate
    from circuit_transfer.io import read_json
    from circuit_transfer.models import load_model
    from circuit_transfer.proxy import task_of_checkpoint
    from circuit_transfer.tasks import stratified_cap

    proxy = tmp_path / "proxy"
    argv = ["prepare-proxy", "--task", "xnli", "--lang", "en", "--model", "tiny", "--epochs", "1"]
    argv += ["--n-train", "30", "--n-valid", "12", "--n-test", "12", "--data-dir", str(data_dir)]
    assert main([*argv, "--out", str(proxy)]) == 0
    out = tmp_path / "eval.json"
    argv = ["evaluate", "--model", str(proxy), "--langs", "en,sw", "--n", "24", "--data-dir", str(data_dir)]
    assert main([*argv, "--max-len", "64", "--batch-size", "8", "--out", str(out)]) == 0
    task, model = task_of_checkpoint(proxy), load_model(str(proxy))
    for row in read_json(out)["results"]:
        rows = stratified_cap(task.examples(row["lang"], "test", data_dir), 24, task.n_labels)
        expected = evaluate(model, task, rows, 8, 64).to_dict()
        assert row == {"lang": row["lang"], **expected} and row["n"] == 24
        assert sum(row["predicted_counts"]) == 24
