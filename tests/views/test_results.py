"""Transfer results as chart and table, from real `transfer(...)` records."""

from __future__ import annotations

import re

from circuit_transfer.views import TransferResults, load_results, results_chart_svg, results_html


def test_chart_and_table_from_real_results(run_dir):
    records = load_results(run_dir)
    assert [r["method"] for r in records] == ["ct-sft", "full"]
    svg = results_chart_svg(records)
    assert svg.startswith("<svg") and svg.count("<rect") == 4 * len(records)
    for r in records:
        assert f"{100 * r['target_accuracy']:.1f}%" in svg
        assert f"{100 * r['forgetting']:+.1f}" in svg
        assert f"{100 * r['params_changed'] / r['params_total']:.1f}%" in svg
    # bar lengths follow the values: the full model changes more parameters than the circuit
    widths = [float(w) for w in re.findall(r'<rect x="[^"]+" y="\d+" width="([^"]+)"', svg)]
    ct, full = widths[3 * 2], widths[3 * 2 + 1]
    assert full > ct
    html = TransferResults.load(run_dir)._repr_html_()
    assert html == results_html(records) and html.count("<tr>") == 1 + len(records)
    assert "ct-sft" in repr(TransferResults(records[0]))
