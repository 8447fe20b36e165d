"""The layers, checked by import-linter (pyproject.toml): the domain imports no web stack
(DESIGN.md rule 9), and agent drivers never import the registry, the store or the sessions
(DESIGN.md section 5)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_layer_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout
    assert "The domain runs without the web stack" in result.stdout
    assert "Agent drivers hand events to the runner" in result.stdout
