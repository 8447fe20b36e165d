"""The systemd unit (deploy/tether.service) and its environment file example: the settings
the README's Deployment section relies on, and ``systemd-analyze verify`` where it exists."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "tether.service"
ENV_EXAMPLE = ROOT / "deploy" / "tether.env.example"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values in order]}}`` of a systemd unit file (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a setting outside any section: {line}"
        assert "=" in line and not line.endswith("\\"), f"not a KEY=value line: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service() -> dict[str, str]:
    """The [Service] section, each key's last value (systemd's rule for single-value keys)."""
    return {key: values[-1] for key, values in parse_unit(UNIT.read_text())["Service"].items()}


def gunicorn_setting(name: str) -> object:
    """A literal assigned at the top of gunicorn.conf.py (read, not imported: importing it
    would generate a token into the environment)."""
    for node in ast.parse((ROOT / "gunicorn.conf.py").read_text()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == name):
            return ast.literal_eval(node.value)
    raise AssertionError(f"gunicorn.conf.py sets no {name}")


def seconds(value: str) -> float:
    """A systemd time span of seconds or minutes (``20``, ``20s``, ``2min``), in seconds."""
    if value.endswith("min"):
        return float(value[:-3]) * 60
    return float(value.removesuffix("s"))


def test_runs_gunicorn_as_its_own_user_with_the_environment_file() -> None:
    unit = service()
    assert unit["User"] == unit["Group"] == "tether"
    assert unit["EnvironmentFile"] == "/etc/tether/tether.env"
    assert unit["WorkingDirectory"] == "/opt/tether"
    assert unit["ExecStart"] == "/opt/tether/.venv/bin/gunicorn -c gunicorn.conf.py"
    assert unit["StateDirectory"] == "tether"
    # One file descriptor per connection; the worker holds up to worker_connections.
    assert int(unit["LimitNOFILE"]) > gunicorn_setting("worker_connections")  # type: ignore[operator]
    assert parse_unit(UNIT.read_text())["Install"]["WantedBy"] == ["multi-user.target"]


def test_stops_tether_before_its_agents_and_restarts_on_failure() -> None:
    """SIGTERM reaches gunicorn alone, which stops the agents itself within its
    graceful_timeout (seconds); systemd kills what is left only after that."""
    unit = service()
    assert unit["KillMode"] == "mixed"
    assert seconds(unit["TimeoutStopSec"]) > gunicorn_setting("graceful_timeout")  # type: ignore[operator]
    assert unit["Restart"] == "on-failure"
    assert seconds(unit["RestartSec"]) > 0


def test_hardening_that_leaves_agents_able_to_work() -> None:
    unit = service()
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectControlGroups", "RestrictSUIDSGID", "LockPersonality",
                "RestrictRealtime"):
        assert unit.get(key) == "yes", key
    assert unit["ProtectSystem"] == "strict"  # writable: the state directory, ReadWritePaths
    assert unit["ProtectHome"] == "yes"  # the tether user's home is /var/lib/tether
    # Node's JIT (Claude Code) needs writable executable memory; agents' files in project
    # folders must stay readable to the people who use them.
    assert "MemoryDenyWriteExecute" not in unit
    assert "UMask" not in unit


def test_environment_example_names_the_proxy_settings() -> None:
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines()
             if line and not line.startswith("#")]
    env = dict(line.split("=", 1) for line in lines)
    assert env["TETHER_HOST"] == "127.0.0.1"
    assert env["TETHER_TRUSTED_PROXIES"] == "127.0.0.1"
    assert env["TETHER_ALLOWED_HOSTS"] == "tether.example"
    assert env["TETHER_DATA_DIR"].startswith("/var/lib/tether/")  # inside StateDirectory
    assert len(env["TETHER_TOKEN"]) >= 16


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on the unit, with ExecStart, WorkingDirectory and
    EnvironmentFile pointed at this checkout (they must exist): no warning at all."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    env = tmp_path / "tether.env"
    env.write_text(ENV_EXAMPLE.read_text())
    text = (UNIT.read_text()
            .replace("/opt/tether/.venv/bin/gunicorn", str(gunicorn))
            .replace("WorkingDirectory=/opt/tether", f"WorkingDirectory={ROOT}")
            .replace("/etc/tether/tether.env", str(env)))
    unit = tmp_path / "tether.service"
    unit.write_text(text)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and not result.stdout and not result.stderr, (
        result.stdout + result.stderr)
