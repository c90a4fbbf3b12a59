"""An independent check that an HTML text loads nothing from the network (not the package's own)."""

from __future__ import annotations

import re

NETWORK_LOADS = [
    r"<script\b[^>]*\bsrc\s*=",  # any external script file at all (ours are all inline)
    r"<link\b[^>]*\bhref\s*=\s*[\"']?https?://",
    r"@import",
    r"url\(\s*[\"']?https?://",
    r"from\s*[\"']https?://",
    r"import\(\s*[\"']https?://",
    r"unpkg|jsdelivr|cdnjs",
    r"\bsrc\s*=\s*[\"']?https?://",
]


def network_loads(text: str) -> list[str]:
    return [m.group(0) for pattern in NETWORK_LOADS for m in re.finditer(pattern, text, re.I)]
