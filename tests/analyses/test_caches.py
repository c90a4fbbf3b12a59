"""The analyses' caches are keyed by what made them: a proxy retrained into the same folder, or other
discovery settings, are refused with a message that names what differs, never silently reused."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "analyses"))

from common import head_scores  # noqa: E402

from circuit_transfer.models import checkpoint_fingerprint, load_model, save_checkpoint  # noqa: E402
from circuit_transfer.models.checkpoint import read_checkpoint_metadata  # noqa: E402
from circuit_transfer.tasks import get_task  # noqa: E402


def _scores(proxy: Path, path: Path, data_dir, **kw):
    settings = dict(estimator="attribution", max_len=48, data_dir=data_dir) | kw
    return head_scores(proxy, get_task("nusax-senti"), "ind", 2, path, **settings)


def test_fingerprint_follows_the_weights(tiny_proxy, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_proxy, copy)
    assert checkpoint_fingerprint(copy) == checkpoint_fingerprint(tiny_proxy)
    model = load_model(str(tiny_proxy))
    with torch.no_grad():
        model.blocks[0].attn.W_Q[0, 0, 0] += 1e-3
    save_checkpoint(model, copy, metadata=read_checkpoint_metadata(tiny_proxy))
    assert checkpoint_fingerprint(copy) != checkpoint_fingerprint(tiny_proxy)


def test_cached_head_scores_are_reused_only_for_the_same_proxy_and_settings(tiny_proxy, tmp_path, data_dir):
    path = tmp_path / "scores.json"
    first = _scores(tiny_proxy, path, data_dir)
    stamp = path.stat().st_mtime_ns
    again = _scores(tiny_proxy, path, data_dir)
    assert path.stat().st_mtime_ns == stamp
    assert torch.allclose(again.scores.double(), first.scores.double())

    with pytest.raises(SystemExit, match=r"max_len differ"):
        _scores(tiny_proxy, path, data_dir, max_len=40)
    with pytest.raises(SystemExit, match=r"estimator differ"):
        _scores(tiny_proxy, path, data_dir, estimator="cdt")

    retrained = tmp_path / "retrained"
    model = load_model(str(tiny_proxy))
    with torch.no_grad():
        model.blocks[1].attn.W_O[0, 0, 0] += 1e-3
    save_checkpoint(model, retrained, metadata=read_checkpoint_metadata(tiny_proxy))
    with pytest.raises(SystemExit, match=r"proxy_fingerprint differ.*delete that file"):
        _scores(retrained, path, data_dir)
