"""The tiny NusaX proxy that the analyses tests share (trained once per session on real Indonesian)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_proxy(tmp_path_factory, data_dir) -> Path:
    from circuit_transfer.proxy import prepare_proxy
    from circuit_transfer.tasks import get_task

    out = tmp_path_factory.mktemp("proxy") / "tiny-ind"
    prepare_proxy(get_task("nusax-senti"), "ind", "tiny", out, data_dir=data_dir)
    return out
