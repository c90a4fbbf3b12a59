"""The report of a real run directory is self-contained and renders in headless Chromium."""

from __future__ import annotations

import re

import pytest
from selfcontained import network_loads

from circuit_transfer.cli import main
from circuit_transfer.discovery import Circuit, head_name
from circuit_transfer.views import (
    BrowserNotFound,
    dump_dom,
    find_chromium,
    image_stats,
    png_pixels,
    screenshot,
)
from circuit_transfer.views.page import circuitsvis_bundle


def rendered_components(dom: str) -> list[str]:
    """Visible text of each circuitsvis mount point (`<div id="circuits-vis-...">`) in a dumped DOM.

    Script bodies are removed first, so a head name found here was rendered by React, not merely
    present in the props of the inline script. A component's DOM ends where the report's own markup
    resumes (a caption `ct-note` div, a bare `<h3>`, or the end of the body).
    """
    dom = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S | re.I)
    pieces = re.split(r'<div id="circuits-vis-[^"]*"', dom)[1:]
    out = []
    for piece in pieces:
        piece = re.split(r'<div class="ct-note"|<h3>|</body>', piece)[0]
        out.append(piece)
    return out


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _chromium() -> str:
    try:
        return find_chromium()
    except BrowserNotFound as err:
        pytest.fail(f"{err} (the browser tests need it; CI must `apt-get install chromium`)")


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    return out


def test_report_is_self_contained(report, run_dir):
    text = report.read_text()
    assert not network_loads(text)
    assert text.count(circuitsvis_bundle()) == 1  # the bundle once, however many components
    assert text.count("CircuitsVis.render(") == 2 * 2  # heads + tokens for ind and jav
    size = report.stat().st_size
    assert size < len(circuitsvis_bundle()) + 400_000, size
    circuit = Circuit.load(run_dir / "circuits" / "ind.json")
    assert all(head_name(h) in text for h in circuit.heads)


@pytest.mark.browser
@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, run_dir, tmp_path):
    _chromium()
    dom = dump_dom(report)
    components = rendered_components(dom)
    assert len(components) == 4, len(components)
    heads_ind, tokens_ind = components[0], components[1]
    # circuitsvis really rendered: head names as component text (not script), one canvas per head
    proxy = Circuit.load(run_dir / "circuits" / "ind.json")
    for head in proxy.heads:
        assert re.search(rf"{head_name(head)} [+-]\d", _text(heads_ind)), (
            head_name(head),
            _text(heads_ind)[:300],
        )
    assert "Head Selector" in _text(heads_ind) and heads_ind.count("<canvas") >= len(proxy.heads)
    assert "Sentiment" in _text(tokens_ind)  # the coloured tokens of the prompt
    assert all(len(_text(c).strip()) > 20 for c in components)
    png = screenshot(report, tmp_path / "report.png", window_size=(1280, 2000))
    stats = image_stats(png_pixels(png))
    assert stats["shape"][:2] == (2000, 1280)
    assert stats["n_colours"] > 50 and 0.02 < stats["non_background_fraction"] < 0.9, stats
