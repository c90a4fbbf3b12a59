"""Headless Chromium: dump a page's DOM after its scripts ran, take screenshots, read PNG pixels.

Used to check that reports really render offline (tests) and to save report screenshots. Needs
Debian's `chromium` (`apt-get install chromium`); `find_chromium` says so when it is missing.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np

from circuit_transfer.io import atomic_write

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--hide-scrollbars",
)


class BrowserNotFound(FileNotFoundError):
    """No headless Chromium on this machine."""


def find_chromium() -> str:
    """Path of a Chromium binary ($CT_CHROMIUM, then PATH, then /usr/bin/chromium)."""
    for name in filter(None, (os.environ.get("CT_CHROMIUM"), *CANDIDATES, "/usr/bin/chromium")):
        found = shutil.which(name)
        if found:
            return found
    raise BrowserNotFound(
        "headless Chromium not found (looked for $CT_CHROMIUM, " + ", ".join(CANDIDATES) + "): "
        "install it with `apt-get install chromium` (Debian/Ubuntu) or set CT_CHROMIUM."
    )


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="ct-chromium-") as profile:
        cmd = [find_chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
        out = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(
            f"chromium failed ({out.returncode}): {out.stderr.decode(errors='replace')[-2000:]}"
        )
    return out


def dump_dom(html_path: str | Path, budget_ms: int = 5000, timeout: float = 90.0) -> str:
    """The page's DOM after its scripts ran (`--dump-dom` with a virtual time budget)."""
    url = Path(html_path).resolve().as_uri()
    return _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout).stdout.decode(
        "utf-8", "replace"
    )


def screenshot(
    html_path: str | Path,
    png_path: str | Path,
    window_size: tuple[int, int] = (1280, 2000),
    budget_ms: int = 5000,
    timeout: float = 90.0,
) -> Path:
    """Render `html_path` in headless Chromium and save a PNG screenshot to `png_path` (atomically)."""
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    url = Path(html_path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="ct-shot-") as tmp:
        shot = Path(tmp) / "shot.png"
        _run(
            [
                f"--virtual-time-budget={budget_ms}",
                f"--window-size={window_size[0]},{window_size[1]}",
                f"--screenshot={shot}",
                url,
            ],
            timeout,
        )
        if not shot.is_file():
            raise RuntimeError(f"chromium wrote no screenshot for {url}")
        atomic_write(png_path, lambda tmp: shutil.copyfile(shot, tmp))
    return png_path


def png_pixels(path: str | Path) -> np.ndarray:
    """Decode an 8-bit, non-interlaced PNG (what Chromium writes) to `[height, width, channels]` uint8.

    Uses Pillow when it is installed; otherwise a small zlib + numpy decoder (all five filters).
    """
    try:
        from PIL import Image

        with Image.open(path) as img:
            return np.asarray(img)
    except ImportError:
        pass
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path}: no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or interlace != 0 or channels is None:
        raise ValueError(f"{path}: only 8-bit non-interlaced grey/RGB(A) PNGs are supported (got {header})")
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    stride = width * channels
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:
            cur = line.copy()
        elif kind == 1:  # Sub: running sum per channel, mod 256
            cur = (
                np.cumsum(line.reshape(width, channels), axis=0, dtype=np.uint64).astype(np.uint8).reshape(-1)
            )
        elif kind == 2:  # Up
            cur = line + prev
        elif kind in (3, 4):  # Average / Paeth: sequential along the row
            cur = _unfilter_sequential(int(kind), line, prev, channels)
        else:
            raise ValueError(f"{path}: bad PNG filter type {kind} on row {y}")
        out[y], prev = cur, cur
    return out.reshape(height, width, channels)


def _unfilter_sequential(kind: int, line: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    line_l, up = line.tolist(), prev.tolist()
    cur = [0] * len(line_l)
    for i, x in enumerate(line_l):
        a = cur[i - bpp] if i >= bpp else 0
        b = up[i]
        if kind == 3:
            cur[i] = (x + ((a + b) >> 1)) & 0xFF
            continue
        c = up[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
        cur[i] = (x + pred) & 0xFF
    return np.array(cur, dtype=np.uint8)


def image_stats(pixels: np.ndarray) -> dict:
    """Numbers that tell a rendered page from a blank one: colours used, share of non-background pixels."""
    rgb = pixels[..., :3] if pixels.ndim == 3 and pixels.shape[-1] >= 3 else pixels
    flat = rgb.reshape(-1, rgb.shape[-1]) if rgb.ndim == 3 else rgb.reshape(-1, 1)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    return {
        "shape": tuple(pixels.shape),
        "n_colours": int(len(colours)),
        "non_background_fraction": float((flat != background).any(-1).mean()),
        "std": float(flat.std()),
    }
