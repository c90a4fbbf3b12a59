"""One colour convention in every view, stated by a legend next to it (red toward the correct label).

The browser test reads the colours Chromium really painted: the legend's "toward" swatch and the
token that pushes hardest toward the label must be the same colour (circuitsvis's own default
paints positive values blue, the opposite of the relevance grid).
"""

from __future__ import annotations

import re

import pytest
import torch

from circuit_transfer.data import Example
from circuit_transfer.discovery import Circuit, HeadScores
from circuit_transfer.tasks import get_task
from circuit_transfer.views import (
    BrowserNotFound,
    circuit_diff_html,
    dump_dom,
    find_chromium,
    relevance_grid_html,
    save_html,
    show,
    token_contributions,
)

TASK = get_task("nusax-senti")
# In the copy model "good" writes onto " positive" and "bad" onto " negative": for the correct label
# 'positive', "good" pushes toward it and "bad" away from it.
EXAMPLE = Example(id="1", text="the film was good bad", label=2, lang="eng")


def _text(html: str) -> str:
    """Visible text: scripts (circuitsvis's bundle and props) and tags removed."""
    html = re.sub(r"<script\b.*?</script>", " ", html, flags=re.S | re.I)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _rgb(style: str) -> tuple[int, ...]:
    match = re.search(r"background(?:-color)?:\s*rgba?\((\d+),\s*(\d+),\s*(\d+)", style)
    assert match, style
    return tuple(int(x) for x in match.groups())


def _scored_circuit(model) -> Circuit:
    values = torch.tensor([[0.2, 0.9]])
    scores = HeadScores(
        values, model_name="copy", n_layers=1, n_heads=2, stderr=torch.full_like(values, 0.01)
    )
    return Circuit.from_heads([(0, 1)], model, method="top-k", params={"k": 1}, scores=scores)


def _views(model):
    circuit = _scored_circuit(model)
    other = Circuit.from_heads([(0, 0)], model, lang="jav")
    return {
        "grid": relevance_grid_html(circuit),
        "diff": circuit_diff_html(circuit, other),
        **{
            kind: show(model, circuit, EXAMPLE, TASK, kind=kind)._repr_html_()
            for kind in ("heads", "tokens", "tokens-per-head")
        },
    }


def test_every_view_has_a_legend_in_plain_words_that_reads_without_a_stylesheet(copy_model):
    for name, html in _views(copy_model).items():
        assert 'class="ct-legend"' in html, name
        text = _text(html)
        assert "gold" not in text, name
        legend = _text(html.split('class="ct-legend"', 1)[1].split("</div>", 1)[0])
        # entries are separate words even with no stylesheet (a notebook cell): no "goldpushes away"
        assert not re.search(r"[a-z](?:red|blue|grey|both|only|●)", legend), (name, legend)
    for name in ("grid", "tokens", "tokens-per-head"):
        text = _text(_views(copy_model)[name])
        assert "red: pushes toward the correct label" in text and "blue: pushes away from it" in text, name
    assert "grey: attention weight" in _text(_views(copy_model)["heads"])


@pytest.mark.browser
@pytest.mark.parametrize("kind", ["tokens", "tokens-per-head"])
def test_the_strongest_positive_token_is_painted_in_the_legends_toward_colour(copy_model, tmp_path, kind):
    try:
        find_chromium()
    except BrowserNotFound as err:
        pytest.fail(f"{err} (the browser tests need it; CI must `apt-get install chromium`)")
    circuit = Circuit.from_heads([(0, 1)], copy_model)
    contrib = token_contributions(copy_model, circuit, EXAMPLE, TASK)
    strongest, weakest = (
        contrib.str_tokens[int(contrib.total.argmax())],
        contrib.str_tokens[int(contrib.total.argmin())],
    )
    assert (strongest, weakest) == ("good", "bad") and contrib.total.max() > 0 > contrib.total.min()

    dom = dump_dom(save_html(show(copy_model, circuit, EXAMPLE, TASK, kind=kind), tmp_path / "view.html"))
    dom = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S | re.I)
    swatches = {text: style for style, text in re.findall(r'<span style="([^"]*)">([^<]*)</span>', dom)}
    toward = next(style for text, style in swatches.items() if "pushes toward the correct label" in text)
    away = next(style for text, style in swatches.items() if "pushes away" in text)
    assert (
        next(t for t in swatches if "toward" in t).startswith("red")
        and _rgb(toward)[0] > 200 > _rgb(toward)[2] + 100
    )
    painted = dict(
        (token, _rgb(style))
        for style, token in re.findall(r'<span style="(display: inline-block;[^"]*)">([^<]*)</span>', dom)
    )  # the first row: the circuit total
    assert painted[strongest] == _rgb(toward)  # the full "toward" colour, as the legend names it
    r, g, b = painted[weakest]
    assert b > r and _rgb(away)[2] > _rgb(away)[0]  # pushes away: a tint of the legend's blue
    assert painted["the"] == (255, 255, 255)  # no contribution: white
