"""The package imports without `HookedTransformer` (TransformerLens 4.x), and says clearly what is missing.

Two ways: in the TL 4.3 CI environment the real thing is checked (`test_every_module_imports`);
in the TL 3.9 environment a subprocess hides every legacy name TL 4.0 removed and imports every
module, so a new `from transformer_lens import HookedTransformer` anywhere fails here too.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import circuit_transfer
from circuit_transfer.models import backend

pytestmark = pytest.mark.bridge

# What TL 4.0 removed (transformer_lens/__init__.py's _REMOVED_IN_4_0, and the module trees behind it).
_REMOVED_NAMES = (
    "HookedTransformer",
    "HookedTransformerConfig",
    "utils",
    "components",
    "loading_from_pretrained",
)
_REMOVED_MODULES = (
    "HookedTransformer",
    "HookedTransformerConfig",
    "utils",
    "components",
    "loading_from_pretrained",
    "pretrained",
)

_HIDE_LEGACY = f"""
import importlib.abc, sys
import transformer_lens
REMOVED = tuple("transformer_lens." + m for m in {_REMOVED_MODULES!r})
for name in list(sys.modules):
    if name.startswith(REMOVED):
        del sys.modules[name]
for name in {_REMOVED_NAMES!r}:
    transformer_lens.__dict__.pop(name, None)

def _removed(name):
    raise ImportError(f"{{name!r}} was removed in TransformerLens 4.0 (simulated)", name=name)

transformer_lens.__getattr__ = _removed

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(REMOVED):
            raise ModuleNotFoundError(f"No module named {{fullname!r}} (simulated TL 4)")
        return None

sys.meta_path.insert(0, Block())
"""


HOOKED_ONLY = {"circuit_transfer.models.access_hooked"}
"""Modules that exist only for the hooked backend: on TL 4.x importing them raises the clear error."""


def _module_names() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages(circuit_transfer.__path__, "circuit_transfer.")
        if not m.name.endswith("__main__")
    ]


def test_every_module_imports() -> None:
    for name in _module_names():
        if name in HOOKED_ONLY and not backend.HAS_HOOKED:
            with pytest.raises(backend.HookedTransformerUnavailable, match=name):
                importlib.import_module(name)
        else:
            importlib.import_module(name)


def test_every_module_imports_without_hooked_transformer() -> None:
    script = (
        _HIDE_LEGACY
        + f"""
import importlib
from circuit_transfer.models import backend
assert not backend.HAS_HOOKED, "the simulation did not hide HookedTransformer"
for name in {_module_names()!r}:
    if name in {HOOKED_ONLY!r}:
        try:
            importlib.import_module(name)
        except backend.HookedTransformerUnavailable:
            continue
        raise AssertionError(name + " imported without HookedTransformer")
    importlib.import_module(name)
try:
    backend.HookedTransformer.from_pretrained_no_processing("gpt2")
except backend.HookedTransformerUnavailable as e:
    print("CLEAR:", e)
"""
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "CLEAR: HookedTransformer.from_pretrained_no_processing needs TransformerLens 3.x" in out.stdout
    assert "backend='bridge'" in out.stdout


def test_stand_in_class_refuses_clearly() -> None:
    Missing = backend._stand_in("HookedTransformer")
    assert not isinstance(object(), Missing)
    assert not hasattr(Missing, "__origin__")  # introspection sees a plain class, not an error
    with pytest.raises(
        backend.HookedTransformerUnavailable, match=r"HookedTransformer needs TransformerLens 3\.x"
    ):
        Missing(object())
    with pytest.raises(
        backend.HookedTransformerUnavailable, match=r"HookedTransformer\.from_pretrained needs"
    ):
        Missing.from_pretrained("gpt2")
    with pytest.raises(ImportError, match=r"use backend='bridge'|Use backend='bridge'"):
        Missing()


def test_require_hooked_matches_install() -> None:
    if backend.HAS_HOOKED:
        backend.require_hooked("x")
    else:
        with pytest.raises(backend.HookedTransformerUnavailable, match="x needs TransformerLens 3.x"):
            backend.require_hooked("x")


def test_the_command_line_says_what_needs_transformerlens_3(tmp_path) -> None:
    """`prepare-proxy --model tiny` builds a HookedTransformer: without one it exits 2 with the
    message (no traceback), naming the TL 4.x way in."""
    script = (
        _HIDE_LEGACY
        + f"""
import sys
from circuit_transfer.cli import main
sys.exit(main(["prepare-proxy", "--model", "tiny", "--lang", "ind", "--out", {str(tmp_path / "proxy")!r}]))
"""
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert "prepare-proxy: error: the tiny model" in out.stderr
    assert "needs TransformerLens 3.x" in out.stderr and "--backend bridge" in out.stderr
    assert not (tmp_path / "proxy").exists()
