"""Self-contained HTML pages: the circuitsvis bundle inlined once, no network references.

circuitsvis renders every component as `<div id=...>` plus a `<script type="module">` that first
inlines its whole JavaScript bundle (`RenderedHTML.local_src`, about 1.3 MB) and then calls
`CircuitsVis.render(...)`; `str(html)` instead imports the bundle from a CDN and renders blank
offline. A page with several components would repeat the bundle each time, so `page` puts it once
in the `<head>` (a classic script, which makes `CircuitsVis` a global) and `component` strips it
from each component's `local_src`. A component whose bundle is not the installed one (another
circuitsvis version) is kept whole: still self-contained, only larger.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from circuit_transfer.io import atomic_write_text

# What a page must not load from the network: script/link/img/iframe sources, CSS @import and
# url(), ES module imports and fetch() of http(s) addresses, and any CDN host circuitsvis uses.
_EXTERNAL = [
    re.compile(r"<(?:script|img|iframe|source|embed)\b[^>]*\bsrc\s*=\s*[\"']?\s*(?:https?:)?//", re.I),
    re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?\s*(?:https?:)?//", re.I),
    re.compile(r"@import\b", re.I),
    re.compile(r"url\(\s*[\"']?\s*(?:https?:)?//", re.I),
    re.compile(r"\bimport\b[^;\n]{0,200}?\bfrom\s*[\"'](?:https?:)?//", re.I),
    re.compile(r"\bimport\s*\(\s*[\"'](?:https?:)?//", re.I),
    re.compile(r"\bfetch\s*\(\s*[\"'](?:https?:)?//", re.I),
    re.compile(r"unpkg\.com|jsdelivr|cdnjs|cdn\.plot\.ly|googleapis\.com", re.I),
]

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto;
       max-width: 1180px; color: #1f2328; line-height: 1.45; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 4px;
margin-top: 1.8em; } h3 { margin-bottom: 0.3em; }
.ct-note { color: #59636e; font-size: 0.9em; }
table.ct-table { border-collapse: collapse; font-size: 0.9em; margin: 8px 0; }
table.ct-table th, table.ct-table td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; }
table.ct-table th { background: #f6f8fa; } table.ct-table td.ct-text { text-align: left; }
table.ct-grid { border-collapse: separate; border-spacing: 2px; font-size: 0.78em; }
table.ct-grid th { font-weight: 600; color: #59636e; padding: 0 4px; }
table.ct-grid td { width: 46px; height: 26px; text-align: center; border: 2px solid transparent;
                   border-radius: 3px; font-variant-numeric: tabular-nums; }
table.ct-grid td.ct-sel { border-color: #111; font-weight: 700; }
.ct-row { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
.ct-card { margin: 8px 0; }
.ct-legend span { display: inline-block; padding: 1px 8px; margin-right: 8px; border-radius: 3px; }
.ct-stats { font-size: 0.95em; margin: 6px 0; } .ct-stats b { font-variant-numeric: tabular-nums; }
"""


def esc(text: object) -> str:
    """HTML-escape any value's str()."""
    return html.escape(str(text), quote=True)


@lru_cache(maxsize=1)
def circuitsvis_bundle() -> str:
    """The JavaScript that circuitsvis inlines in `local_src` (as it inlines it)."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    return path.read_text(encoding="utf-8").replace("</script>", "")


_MOUNT = re.compile(r'(<div id="circuits-vis-[^"]*"[^>]*?)\s*/>')


@dataclass(frozen=True)
class View:
    """circuitsvis components with the legend that explains their colours (`views.colours`).

    What `views.show` and the report's text views return. Displays inline in Jupyter (legend,
    then each component under its caption); `local_src` is the offline HTML (each component with
    its bundle), and `save_html` / `component` write it with the bundle once.

    Attributes:
        parts: (caption, circuitsvis `RenderedHTML`) pairs, shown in order; "" for no caption.
        legend: the legend's HTML.
    """

    parts: tuple[tuple[str, Any], ...]
    legend: str

    def _html(self, render) -> str:
        body = "".join(
            (f"<div><b>{esc(caption)}</b></div>" if caption else "") + render(part)
            for caption, part in self.parts
        )
        return f'<div class="ct-view">{self.legend}{body}</div>'

    def _repr_html_(self) -> str:
        return self._html(lambda part: part._repr_html_())

    @property
    def local_src(self) -> str:
        """Self-contained HTML: the legend and every component with its own copy of the bundle."""
        return self._html(lambda part: part.local_src)


def component(rendered) -> str:
    """A circuitsvis `RenderedHTML` or `View` (or a `local_src`) without its copies of the bundle.

    Needs `page(..., bundle=True)` around it. Falls back to the whole `local_src` when the bundle
    in it is not the installed one. Also closes circuitsvis's mount points: it writes
    `<div id=... />`, which HTML parses as an *open* div, so everything after it on the page
    would become the component's content and be wiped when React renders into it.
    """
    if isinstance(rendered, View):
        return rendered._html(component)
    src = rendered if isinstance(rendered, str) else rendered.local_src
    src = _MOUNT.sub(r"\1></div>", src, count=1)
    bundle = circuitsvis_bundle()
    if src.count(bundle) != 1:
        return src
    return src.replace(bundle, "", 1)


def page(title: str, body: str, bundle: bool = False) -> str:
    """A complete HTML document; with `bundle`, the circuitsvis bundle is inlined once in <head>."""
    script = f"<script>{circuitsvis_bundle()}</script>\n" if bundle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n{script}</head>\n<body>\n{body}\n</body></html>\n"
    )


def to_page(obj, title: str = "circuit-transfer") -> str:
    """A standalone page for a circuitsvis object, an HTML fragment, or anything with `_repr_html_`."""
    if hasattr(obj, "local_src"):
        return page(title, component(obj), bundle=True)
    fragment = obj if isinstance(obj, str) else obj._repr_html_()
    return page(title, fragment, bundle="CircuitsVis.render(" in fragment)


def save_html(obj, path: str | Path, title: str = "circuit-transfer") -> Path:
    """Write `obj` (see `to_page`) as one self-contained HTML file, atomically."""
    text = to_page(obj, title)
    problems = external_references(text)
    if problems:  # never write a page that needs the network
        raise ValueError(f"refusing to write {path}: it references the network: {problems[:3]}")
    return atomic_write_text(path, text)


def external_references(text: str) -> list[str]:
    """Snippets of `text` that would load something over the network (empty for a good page)."""
    found = []
    for pattern in _EXTERNAL:
        for m in pattern.finditer(text):
            found.append(text[max(0, m.start() - 20) : m.end() + 40])
    return found
