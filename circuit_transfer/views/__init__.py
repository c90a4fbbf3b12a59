"""Views: circuits, token contributions, relevance grids and transfer results as self-contained HTML.

    from circuit_transfer import views
    views.show(model, circuit, example, task, kind="heads")     # circuitsvis, inline in Jupyter
    views.save_html(views.show(...), "heads.html")              # offline file (local_src, no CDN)
    views.circuit_html(circuit); views.head_scores_html(scores)  # Jupyter _repr_html_ bodies
    views.TransferResults.load("runs/demo")                      # chart + table in Jupyter
    views.write_report("runs/demo", "report.html")               # everything in one file

Every file written here is self-contained: circuitsvis components use `local_src` (their bundle
inlined once per page), everything else is plain HTML/CSS/SVG; `external_references(html)` lists
anything that would load from the network (empty for our pages).
"""

from circuit_transfer.views.attention import circuit_attention, circuit_patterns
from circuit_transfer.views.browser import (
    BrowserNotFound,
    dump_dom,
    find_chromium,
    image_stats,
    png_pixels,
    screenshot,
)
from circuit_transfer.views.contributions import (
    TokenContributions,
    contributions_view,
    direct_readout,
    token_contributions,
)
from circuit_transfer.views.grid import circuit_diff_html, circuit_html, head_scores_html, relevance_grid_html
from circuit_transfer.views.inputs import EmptyCircuitError, Prompt, check_circuit, head_label, prepare_prompt
from circuit_transfer.views.page import component, external_references, page, save_html, to_page
from circuit_transfer.views.report import RunDir, RunDirError, build_report, write_report
from circuit_transfer.views.results import (
    TransferResults,
    load_results,
    results_chart_svg,
    results_html,
    results_table_html,
)
from circuit_transfer.views.show import show

__all__ = [
    "BrowserNotFound",
    "EmptyCircuitError",
    "Prompt",
    "RunDir",
    "RunDirError",
    "TokenContributions",
    "TransferResults",
    "build_report",
    "check_circuit",
    "circuit_attention",
    "circuit_diff_html",
    "circuit_html",
    "circuit_patterns",
    "component",
    "contributions_view",
    "direct_readout",
    "dump_dom",
    "external_references",
    "find_chromium",
    "head_label",
    "head_scores_html",
    "image_stats",
    "load_results",
    "page",
    "png_pixels",
    "prepare_prompt",
    "relevance_grid_html",
    "results_chart_svg",
    "results_html",
    "results_table_html",
    "save_html",
    "screenshot",
    "show",
    "to_page",
    "token_contributions",
    "write_report",
]
