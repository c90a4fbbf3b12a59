"""Relevance grids: `[n_layers, n_heads]` head scores as coloured HTML tables (no scripts).

circuitsvis has no layer x head heatmap, so these are plain tables in the colours of every view
(`views.colours`): red pushes toward the correct label, blue away, colour strength
|score| / max |score|; selected heads have a black frame and a dot. `circuit_diff_html` puts two languages' circuits side by side with their overlap.
"""

from __future__ import annotations

import math

from circuit_transfer.discovery import Circuit, HeadScores, compare, head_name
from circuit_transfer.discovery.relevance import Head
from circuit_transfer.views.colours import AWAY_RGB, TOWARD_RGB, direction_items, legend_html, legend_item
from circuit_transfer.views.page import esc

SHARED, ONLY_A, ONLY_B = "#8e44ad", "#e67e22", "#27ae60"


def _cell_colour(value: float, bound: float) -> str:
    if not math.isfinite(value) or bound == 0:
        return "background:#eee"
    r, g, b = TOWARD_RGB if value >= 0 else AWAY_RGB
    alpha = min(1.0, abs(value) / bound)
    ink = "#fff" if alpha > 0.6 else "#1f2328"
    return f"background:rgba({r},{g},{b},{alpha:.3f});color:{ink}"


def _grid(
    n_layers: int,
    n_heads: int,
    cell,  # (layer, head) -> (style, text, title, selected)
) -> str:
    head_row = "".join(f"<th>H{h}</th>" for h in range(n_heads))
    rows = []
    for ly in range(n_layers):
        cells = []
        for h in range(n_heads):
            style, text, title, selected = cell((ly, h))
            cls = ' class="ct-sel"' if selected else ""
            cells.append(f'<td{cls} style="{style}" title="{esc(title)}">{esc(text)}</td>')
        rows.append(f"<tr><th>L{ly}</th>{''.join(cells)}</tr>")
    return f'<table class="ct-grid"><tr><th></th>{head_row}</tr>{"".join(rows)}</table>'


def _describe(x: Circuit | HeadScores) -> str:
    where = "/".join(p for p in (x.task, x.lang) if p)
    if isinstance(x, HeadScores):
        return f"{x.score} relevance ({x.estimator}) of {x.n_layers}x{x.n_heads} {x.model_name!r} on {where}, n={x.n_examples}"
    params = ", ".join(f"{k}={v}" for k, v in x.params.items() if not isinstance(v, (list, dict)))
    return f"{len(x.heads)} heads by {x.method}{f' ({params})' if params else ''} of {x.n_layers}x{x.n_heads} {x.model_name!r} on {where}"


def relevance_grid_html(
    scores: HeadScores | Circuit, selected: Circuit | list[Head] | None = None, title: str | None = None
) -> str:
    """A `[n_layers, n_heads]` heatmap of head scores with the selected heads framed.

    Args:
        scores: a `HeadScores`, or a `Circuit` (its scores, its heads selected; a circuit without
            scores shows its heads only).
        selected: heads to frame (default: the circuit's heads, none for bare scores).
    """
    circuit = scores if isinstance(scores, Circuit) else None
    head_scores = circuit.scores if circuit is not None else scores
    if selected is None:
        selected = circuit.heads if circuit is not None else []
    chosen = set(selected.heads if isinstance(selected, Circuit) else (tuple(h) for h in selected))
    n_layers, n_heads = scores.n_layers, scores.n_heads
    if head_scores is None:
        bound = 0.0
    else:
        bound = max((abs(v) for v in head_scores.scores.flatten().tolist() if math.isfinite(v)), default=0.0)

    def cell(head: Head):
        sel = head in chosen
        mark = "● " if sel else ""
        if head_scores is None:
            style = f"background:{SHARED};color:#fff" if sel else "background:#f3f3f3"
            return style, "●" if sel else "", head_name(head) + (" (selected)" if sel else ""), sel
        value = head_scores[head]
        title = f"{head_name(head)} relevance {value:+.4g}" + (" (selected)" if sel else "")
        return _cell_colour(value, bound), f"{mark}{value:+.2g}", title, sel

    caption = title or _describe(scores)
    legend = (
        legend_html(
            *direction_items(),
            legend_item("● selected", "border:2px solid #111"),
            note=f"relevance of each head; max |score| {bound:.3g}",
        )
        if head_scores is not None
        else ""
    )
    cut = circuit.boundary if circuit is not None else None
    warning = (
        f'<div class="ct-unstable" style="color:#9a6700;font-size:0.9em">unstable selection: {esc(cut.describe())}</div>'
        if cut is not None and cut.unstable
        else ""
    )
    return f'<div class="ct-card"><div><b>{esc(caption)}</b></div>{_grid(n_layers, n_heads, cell)}{legend}{warning}</div>'


def circuit_html(circuit: Circuit) -> str:
    """Notebook display of a `Circuit`: summary line, heads by relevance, and the relevance grid."""
    heads = list(circuit.heads)
    if circuit.scores is not None:
        heads.sort(key=lambda h: (-circuit.scores[h], h))
    names = ", ".join(
        head_name(h) + ("" if circuit.scores is None else f" {circuit.scores[h]:+.3g}") for h in heads
    )
    return (
        f'<div class="ct-circuit"><div><b>Circuit</b>: {esc(_describe(circuit))}</div>'
        f'<div class="ct-note">{esc(names) if names else "(no heads)"}</div>'
        f"{relevance_grid_html(circuit, title=' ')}</div>"
    )


def head_scores_html(scores: HeadScores, top: int = 5) -> str:
    """Notebook display of `HeadScores`: summary, top heads, and the grid."""
    best = ", ".join(f"{head_name(h)} {v:+.3g}" for h, v in scores.ranked()[:top])
    return (
        f'<div class="ct-scores"><div><b>HeadScores</b>: {esc(_describe(scores))}</div>'
        f'<div class="ct-note">top: {esc(best)}</div>{relevance_grid_html(scores, title=" ")}</div>'
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def circuit_diff_html(a: Circuit, b: Circuit, k: int | None = None) -> str:
    """Two circuits of one model side by side, their overlap grid, and Jaccard / overlap@k / Spearman.

    Raises:
        ValueError: the circuits come from models of different shapes.
    """
    cmp = compare(a, b, k)
    set_a, set_b = set(a.heads), set(b.heads)
    label_a, label_b = a.lang or "A", b.lang or "B"

    def cell(head: Head):
        in_a, in_b = head in set_a, head in set_b
        if in_a and in_b:
            return f"background:{SHARED};color:#fff", "both", f"{head_name(head)}: in both", True
        if in_a:
            return f"background:{ONLY_A};color:#fff", label_a, f"{head_name(head)}: only {label_a}", False
        if in_b:
            return f"background:{ONLY_B};color:#fff", label_b, f"{head_name(head)}: only {label_b}", False
        return "background:#f3f3f3", "", head_name(head), False

    stats = (
        f'<div class="ct-stats">Jaccard <b>{_fmt(cmp.jaccard)}</b> · overlap@{cmp.k} '
        f"<b>{_fmt(cmp.overlap_at_k)}</b> · Spearman of scores <b>{_fmt(cmp.spearman)}</b> · "
        f"shared: {esc(', '.join(cmp.shared) or 'none')} · only {esc(label_a)}: "
        f"{esc(', '.join(cmp.only_a) or 'none')} · only {esc(label_b)}: {esc(', '.join(cmp.only_b) or 'none')}</div>"
    )
    legend = legend_html(
        legend_item("both", f"background:{SHARED};color:#fff"),
        legend_item(f"only {label_a}", f"background:{ONLY_A};color:#fff"),
        legend_item(f"only {label_b}", f"background:{ONLY_B};color:#fff"),
    )
    overlap = (
        f'<div class="ct-card"><div><b>overlap {esc(label_a)} vs {esc(label_b)}</b></div>'
        f"{_grid(a.n_layers, a.n_heads, cell)}{legend}</div>"
    )
    return (
        f'<div class="ct-diff">{stats}<div class="ct-row">'
        f"{relevance_grid_html(a, title=f'{label_a}: {_describe(a)}')}"
        f"{relevance_grid_html(b, title=f'{label_b}: {_describe(b)}')}{overlap}</div></div>"
    )
