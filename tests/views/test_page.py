"""Pages are self-contained: circuitsvis through local_src, its bundle inlined once, no CDN."""

from __future__ import annotations

import re

import circuitsvis
import pytest
import torch
from selfcontained import network_loads

from circuit_transfer.data import Example
from circuit_transfer.discovery import Circuit
from circuit_transfer.tasks import get_task
from circuit_transfer.views import (
    circuit_html,
    component,
    external_references,
    page,
    save_html,
    show,
)
from circuit_transfer.views.page import circuitsvis_bundle

TASK = get_task("nusax-senti")


def _heads():
    return circuitsvis.attention.attention_heads(
        torch.full((1, 2, 2), 0.5), ["a", "b"], attention_head_names=["L1H2"]
    )


def test_the_checks_catch_circuitsvis_cdn_output():
    html = _heads()
    assert network_loads(str(html)) and external_references(str(html))  # str() imports from unpkg
    assert not network_loads(html.local_src) and not external_references(html.local_src)


def test_component_strips_the_bundle_and_page_inlines_it_once():
    bundle = circuitsvis_bundle()
    a, b = component(_heads()), component(_heads())
    assert bundle not in a and "CircuitsVis.render(" in a and len(a) < 5000
    # circuitsvis's `<div id=.../>` is an open div in HTML: closed, so later content is not wiped
    assert (
        re.search(r'<div id="circuits-vis-[^"]*" style="[^"]*"></div>', a)
        and "/>" not in a.split("<script")[0]
    )
    doc = page("t", a + b, bundle=True)
    assert doc.count(bundle) == 1 and doc.index(bundle) < doc.index("CircuitsVis.render(")
    assert not network_loads(doc)


def test_save_html_writes_self_contained_files(tmp_path, copy_model):
    circuit = Circuit.from_heads([(0, 1), (0, 0)], copy_model)
    ex = Example(id="1", text="the film was good", label=2, lang="eng")
    written = [
        save_html(show(copy_model, circuit, ex, TASK, kind="heads"), tmp_path / "heads.html"),
        save_html(show(copy_model, circuit, ex, TASK, kind="tokens"), tmp_path / "tokens.html"),
        save_html(show(copy_model, circuit, ex, TASK, kind="tokens-per-head"), tmp_path / "multi.html"),
        save_html(circuit_html(circuit), tmp_path / "circuit.html"),
    ]
    for path in written:
        text = path.read_text()
        assert text.startswith("<!DOCTYPE html>") and not network_loads(text), path
    assert "L0H1" in written[0].read_text()


def test_save_html_refuses_cdn_html(tmp_path):
    with pytest.raises(ValueError, match="references the network"):
        save_html(str(_heads()), tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()
