"""The one colour convention of every view, and the legends that state it.

Red pushes toward the correct label, blue pushes away from it: in the relevance grids (a head's
relevance), the token contributions (a token's contribution through the circuit) and the report.
circuitsvis's own default is the opposite (positive blue, negative red), so every circuitsvis call
here passes the colours explicitly. Attention patterns are not signed: they are drawn in grey, so
that red and blue only ever mean "toward" and "away".

Legends carry their spacing in inline styles and plain spaces, so they read the same inside a
report page and in a notebook cell (where the report's stylesheet is absent).
"""

from __future__ import annotations

from circuit_transfer.views.page import esc

TOWARD_RGB, AWAY_RGB = (215, 48, 39), (49, 104, 189)
TOWARD, AWAY = "#d73027", "#3168bd"  # the same colours, as circuitsvis takes them
ATTENTION = "#3d3d3d"  # attention weight: darker = more attention, no direction
TOWARD_TEXT = "red: pushes toward the correct label"
AWAY_TEXT = "blue: pushes away from it"
_SWATCH = "display:inline-block;padding:1px 8px;margin:0 8px 2px 0;border-radius:3px"


def legend_item(text: str, style: str) -> str:
    """One legend entry: `text` on a swatch styled by `style` (inline, so it needs no stylesheet)."""
    return f'<span style="{_SWATCH};{style}">{esc(text)}</span> '


def legend_html(*items: str, note: str = "") -> str:
    """A legend line: the entries (from `legend_item`), then a plain-text note."""
    tail = f'<span style="color:#59636e">{esc(note)}</span>' if note else ""
    return f'<div class="ct-legend" style="font-size:0.9em;margin:4px 0">{"".join(items)}{tail}</div>'


def direction_items() -> tuple[str, str]:
    """The toward/away entries every signed view shows."""
    return (
        legend_item(
            TOWARD_TEXT, f"background:rgba({TOWARD_RGB[0]},{TOWARD_RGB[1]},{TOWARD_RGB[2]},.85);color:#fff"
        ),
        legend_item(AWAY_TEXT, f"background:rgba({AWAY_RGB[0]},{AWAY_RGB[1]},{AWAY_RGB[2]},.85);color:#fff"),
    )


def tokens_legend(label: str) -> str:
    """Legend of a token-contribution view read in the direction of `label` (e.g. "correct label 'positive'")."""
    return legend_html(
        *direction_items(),
        note=f"each token's contribution through the circuit's heads to the {label} margin; "
        "stronger colour = larger contribution (white: none)",
    )


def attention_legend() -> str:
    return legend_html(
        legend_item("grey: attention weight", f"background:{ATTENTION};color:#fff"),
        note="darker = the row's token attends more to the column's token; attention has no direction "
        "toward or away from a label (the token contributions show that)",
    )
