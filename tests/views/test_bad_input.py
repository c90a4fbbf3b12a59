"""Bad input gives a clear error: wrong model shape, empty circuit, incomplete run directory."""

from __future__ import annotations

import pytest

from circuit_transfer.cli import main
from circuit_transfer.discovery import Circuit, CircuitModelMismatch
from circuit_transfer.tasks import get_task
from circuit_transfer.views import EmptyCircuitError, RunDirError, TransferResults, build_report, show

TASK = get_task("nusax-senti")


@pytest.mark.parametrize("kind", ["heads", "tokens"])
def test_circuit_of_another_model_shape(copy_model, kind):
    circuit = Circuit.from_heads([(2, 1)], n_layers=3, n_heads=2, model_name="other")
    with pytest.raises(CircuitModelMismatch, match="3 layers x 2 heads"):
        show(copy_model, circuit, "the film was good", TASK, kind=kind)


@pytest.mark.parametrize("kind", ["heads", "tokens"])
def test_empty_circuit(copy_model, kind):
    with pytest.raises(EmptyCircuitError, match="circuit has no heads: nothing to render"):
        show(copy_model, Circuit.empty(copy_model), "the film was good", TASK, kind=kind)


def test_unknown_view_kind(copy_model):
    with pytest.raises(ValueError, match="Unknown view kind"):
        show(copy_model, Circuit.from_heads([(0, 1)], copy_model), "good", TASK, kind="pie")


def test_run_dir_without_results_names_what_is_missing(tmp_path):
    (tmp_path / "circuits").mkdir()
    with pytest.raises(RunDirError) as err:
        build_report(tmp_path)
    msg = str(err.value)
    assert "transfer/<method>/result.json" in msg and "circuit-transfer transfer" in msg and "--out" in msg
    assert "proxy/" in msg and "circuits/<lang>.json" in msg and "make demo" in msg


def test_missing_run_dir_and_cli_exit_code(tmp_path, capsys):
    with pytest.raises(RunDirError, match="does not exist"):
        build_report(tmp_path / "nope")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "circuit-transfer report: error:" in err and "result.json" in err
    assert not (tmp_path / "r.html").exists()


def test_not_a_result_record():
    with pytest.raises(ValueError, match="not a transfer result record"):
        TransferResults([{"method": "ct-sft"}])
