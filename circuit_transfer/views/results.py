"""Transfer results (`result.json` records) as a table and an inline-SVG bar chart.

Per method: target accuracy after transfer, proxy accuracy after, forgetting (proxy accuracy
before minus after, in points; negative = the proxy language improved) and the percentage of
parameters that changed (`params_changed / params_total`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from circuit_transfer.io import read_json
from circuit_transfer.views.page import esc

# (key, title, how to get it from a record, is it a percentage of [0, 1])
METRICS = (
    ("target_accuracy", "target accuracy", lambda r: r["target_accuracy"]),
    ("proxy_accuracy_after", "proxy accuracy after", lambda r: r["proxy_accuracy_after"]),
    ("forgetting", "forgetting (proxy before - after)", lambda r: r["forgetting"]),
    ("params_changed_pct", "% parameters changed", lambda r: r["params_changed"] / r["params_total"]),
)
COLOURS = ("#4363d8", "#3cb44b", "#e6194b", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")
REQUIRED = (
    "method",
    "target_accuracy",
    "proxy_accuracy_after",
    "forgetting",
    "params_changed",
    "params_total",
)


def load_results(run_dir: str | Path) -> list[dict]:
    """Every `RUN_DIR/transfer/*/result.json`, sorted by method then seed (may be empty)."""
    paths = sorted(Path(run_dir, "transfer").glob("*/result.json"))
    return sorted((read_json(p) for p in paths), key=lambda r: (str(r.get("method")), r.get("seed", 0)))


def _records(results: Mapping | Iterable[Mapping]) -> list[Mapping]:
    records = [results] if isinstance(results, Mapping) else list(results)
    for r in records:
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            raise ValueError(
                f"not a transfer result record (missing {', '.join(missing)}): keys {sorted(r)[:12]}"
            )
    return records


def _row_labels(records: list[Mapping]) -> list[str]:
    methods = [str(r["method"]) for r in records]
    targets = {r.get("target") for r in records}
    labels = []
    for r, m in zip(records, methods):
        label = m + (f" → {r.get('target')}" if len(targets) > 1 else "")
        if methods.count(m) > 1:
            label += f" (seed {r.get('seed')})"
        labels.append(label)
    return labels


def results_chart_svg(results: Mapping | Iterable[Mapping], width: int = 1100) -> str:
    """Four small bar panels (one per metric), one bar per record; values written on the bars."""
    records = _records(results)
    labels = _row_labels(records)
    panel_w, label_w, bar_h, gap = (width - 20) // 4, 120, 18, 6
    height = 40 + len(records) * (bar_h + gap)
    parts = [
        f'<svg role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="11">'
    ]
    for p, (key, title, get) in enumerate(METRICS):
        values = [float(get(r)) * 100 for r in records]
        lo = min(0.0, *values) if key == "forgetting" else 0.0
        hi = 100.0 if "accuracy" in key else max(1e-9, *[abs(v) for v in values])
        if key == "forgetting":
            hi = max(1e-9, *[abs(v) for v in values])
            lo = -hi if min(values) < 0 else 0.0
        x0 = p * panel_w + (label_w if p == 0 else 10)
        span = panel_w - (label_w if p == 0 else 10) - 50
        zero = x0 + span * (0 - lo) / (hi - lo)
        parts.append(f'<text x="{x0}" y="14" font-weight="600">{esc(title)}</text>')
        for i, value in enumerate(values):
            y = 26 + i * (bar_h + gap)
            if p == 0:
                parts.append(
                    f'<text x="{x0 - 6}" y="{y + bar_h - 5}" text-anchor="end">{esc(labels[i])}</text>'
                )
            end = x0 + span * (value - lo) / (hi - lo) if math.isfinite(value) else zero
            left, w = min(zero, end), abs(end - zero)
            colour = COLOURS[i % len(COLOURS)]
            parts.append(
                f'<rect x="{left:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{bar_h}" fill="{colour}">'
                f"<title>{esc(labels[i])}: {esc(title)} {value:.2f}%</title></rect>"
            )
            text = (
                f"{value:+.1f}"
                if key == "forgetting"
                else f"{value:.1f}%"
                if value >= 0.1
                else f"{value:.2g}%"
            )
            parts.append(f'<text x="{max(zero, end) + 4:.1f}" y="{y + bar_h - 5}">{esc(text)}</text>')
        parts.append(
            f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="20" y2="{height - 4}" stroke="#555" stroke-width="1"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def results_table_html(results: Mapping | Iterable[Mapping]) -> str:
    """One row per record: accuracies before/after, forgetting, parameters, epochs, time."""
    records = _records(results)
    header = (
        "<tr><th>method</th><th>target</th><th>seed</th><th>k</th><th>target acc</th><th>target F1</th>"
        "<th>proxy acc before</th><th>proxy acc after</th><th>forgetting</th><th>trainable</th>"
        "<th>changed</th><th>best epoch</th><th>n train</th><th>time</th></tr>"
    )
    rows = []
    for r in records:
        pct = lambda x: "" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        data = r.get("data") or {}
        rows.append(
            "<tr>"
            f'<td class="ct-text">{esc(r["method"])}</td><td class="ct-text">{esc(r.get("target", ""))}</td>'
            f"<td>{esc(r.get('seed', ''))}</td><td>{esc('all' if r.get('k') is None else r['k'])}</td>"
            f"<td>{pct(r['target_accuracy'])}</td><td>{pct(r.get('target_macro_f1'))}</td>"
            f"<td>{pct(r.get('proxy_accuracy_before'))}</td><td>{pct(r['proxy_accuracy_after'])}</td>"
            f"<td>{100 * r['forgetting']:+.1f}</td>"
            f"<td>{esc(r.get('params_trainable', ''))} ({pct(r.get('params_trainable_fraction'))})</td>"
            f"<td>{r['params_changed']} ({100 * r['params_changed'] / r['params_total']:.3g}%)</td>"
            f"<td>{esc(r.get('best_epoch', ''))}</td><td>{esc(data.get('n_train', ''))}</td>"
            f"<td>{float(r.get('wall_time_s', 0)):.0f}s</td></tr>"
        )
    return f'<table class="ct-table">{header}{"".join(rows)}</table>'


def results_html(results: Mapping | Iterable[Mapping]) -> str:
    """Chart and table of transfer results (one record, or many)."""
    records = _records(results)
    proxy = {r.get("proxy_lang") for r in records}
    note = (
        f'<div class="ct-note">task {esc(", ".join(sorted({str(r.get("task")) for r in records})))}; '
        f"proxy language {esc(', '.join(sorted(str(p) for p in proxy)))}; forgetting in accuracy points "
        "on the proxy language's test set (NusaX is parallel: see docs/method.md §7).</div>"
    )
    return f'<div class="ct-results">{note}{results_chart_svg(records)}{results_table_html(records)}</div>'


class TransferResults:
    """Transfer result records that display as chart + table in Jupyter.

    `TransferResults.load(run_dir)` reads every `transfer/*/result.json`; `TransferResults(records)`
    wraps `transfer(...)` return values.
    """

    def __init__(self, results: Mapping | Iterable[Mapping]):
        self.records = _records(results)

    @classmethod
    def load(cls, run_dir: str | Path) -> TransferResults:
        return cls(load_results(run_dir))

    def _repr_html_(self) -> str:
        return results_html(self.records)

    def __repr__(self) -> str:
        rows = ", ".join(
            f"{r['method']}: target {r['target_accuracy']:.3f} forgetting {r['forgetting']:+.3f}"
            for r in self.records
        )
        return f"TransferResults({rows})"
