"""The README's command-line block runs as written: every command in it, in order, verbatim.

It once failed at `compare` (no command made the second circuit); running the block itself keeps
it true. The block's own size flags keep it small enough for CI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_cli_block() -> str:
    """The first ```bash block under "## Command line"."""
    section = README.read_text(encoding="utf-8").split("## Command line", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert match, "README has no ```bash block under '## Command line'"
    return match.group(1)


def test_the_block_is_the_whole_pipeline():
    commands = [
        line.split()[1] for line in readme_cli_block().splitlines() if line.startswith("circuit-transfer")
    ]
    assert commands[0] == "prepare-proxy" and commands[-1] == "report"
    assert {"evaluate", "discover", "compare", "transfer"} <= set(commands)


@pytest.mark.slow
def test_readme_cli_block_runs_verbatim(tmp_path, data_dir):
    block = readme_cli_block()
    # `circuit-transfer` is this interpreter's console script (the installed one may be another checkout's)
    script = f'set -euo pipefail\ncircuit-transfer() {{ "{sys.executable}" -m circuit_transfer.cli "$@"; }}\n{block}'
    env = {**os.environ, "CT_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(README.parent), env.get("PYTHONPATH")]))
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"README block failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    run = tmp_path / "runs" / "cli"
    for path in (
        "proxy/weights.safetensors",
        "evaluate.json",
        "circuits/jav.json",
        "transfer/ct-sft/result.json",
    ):
        assert (run / path).is_file(), path
    assert (run / "report.html").stat().st_size > 100_000  # the self-contained report, bundle inlined
    assert "Jaccard" in done.stdout  # compare ran
