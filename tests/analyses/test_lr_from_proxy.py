"""`--lr-from-proxy`: an XNLI sweep trains each method at the rate a NusaX selection chose for it
(the fifth execution note's reduction), and refuses a proxy language the selection does not hold."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "analyses"))

from sweep import build_parser, lr_for, settings_from  # noqa: E402
from xnli_transfer import FULL, NAME, QUICK  # noqa: E402

from circuit_transfer.io import atomic_write_json  # noqa: E402


def _selection(path: Path) -> Path:
    """A selection.json as lr_selection.py writes it, with rates that differ per method."""
    chosen = {
        m: {"lr": lr, "complete": True} for m, lr in (("full", 3e-5), ("ct-sft", 3e-4), ("random", 1e-3))
    }
    return atomic_write_json(path / "selection.json", {"chosen": {"ind": chosen}})


def _settings(argv):
    return settings_from(build_parser(NAME, FULL, QUICK).parse_args(argv), FULL, QUICK)


def test_each_method_gets_the_rate_chosen_for_it_with_the_named_proxy(tmp_path):
    selection = _selection(tmp_path)
    s = _settings(["--proxy-langs", "en", "--lr-from", str(selection), "--lr-from-proxy", "ind"])
    assert s["lr_from_proxy"] == "ind"
    for method, lr in (("full", 3e-5), ("ct-sft", 3e-4), ("random", 1e-3)):
        assert lr_for({"method": method, "proxy_lang": "en"}, s) == lr
    with pytest.raises(SystemExit, match="names no learning rate for ln-only with proxy en"):
        lr_for({"method": "ln-only", "proxy_lang": "en"}, s)


def test_without_lr_from_proxy_an_english_sweep_finds_no_indonesian_rate(tmp_path):
    s = _settings(["--proxy-langs", "en", "--lr-from", str(_selection(tmp_path))])
    with pytest.raises(SystemExit, match="names no learning rate for full with proxy en"):
        lr_for({"method": "full", "proxy_lang": "en"}, s)


def test_a_proxy_the_selection_does_not_hold_or_no_selection_is_refused(tmp_path):
    selection = _selection(tmp_path)
    with pytest.raises(SystemExit, match=r"--lr-from-proxy sw: .* chose rates for proxy \['ind'\] only"):
        _settings(["--lr-from", str(selection), "--lr-from-proxy", "sw"])
    with pytest.raises(SystemExit, match="--lr-from-proxy needs --lr-from"):
        _settings(["--lr-from-proxy", "ind"])
