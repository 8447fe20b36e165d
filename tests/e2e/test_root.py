"""Tether refuses to start as root unless TETHER_ALLOW_ROOT=1 (issue 16, item 3), the way
``make run`` starts it. CI runs as root; elsewhere this is skipped (tether.config.check_user is
unit-tested both ways in tests/tether/test_config.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.live import ROOT, LiveServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120),
              pytest.mark.skipif(os.geteuid() != 0, reason="only root is refused")]


@pytest.mark.parametrize("argv", [
    [str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py"],
    [sys.executable, "app.py"],
], ids=["gunicorn", "app.py"])
def test_root_without_allow_root_is_refused_with_the_reason(tmp_path: Path,
                                                            argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update(TETHER_PORT=str(free_port()), TETHER_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "refusing to run as root" in done.stderr, done.stderr[-2000:]
    assert "TETHER_ALLOW_ROOT=1" in done.stderr and "root shell" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "data").exists()  # refused before anything was touched


def test_root_with_allow_root_starts(tmp_path: Path) -> None:
    with LiveServer(tmp_path, TETHER_ALLOW_ROOT="1") as server:
        assert server.api("GET", "/api/sessions").status_code == 200
