"""What an agent process inherits: the server's environment, less Tether's secrets."""

from __future__ import annotations

import pytest

from tests.support import OTHER_SECRETS
from tether.agents.base import inherited_env
from tether.agents.catalog import default_catalog
from tether.config import SECRET_SETTINGS, Settings

#: Each secret setting with a value the settings accept (a VAPID key must be one).
SECRETS = {name: OTHER_SECRETS.get(name, f"secret-value-of-{name.lower()}")
           for name in SECRET_SETTINGS}


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-kept")
    monkeypatch.setenv("TETHER_PORT", "8123")
    monkeypatch.setenv("CLAUDECODE", "1")


def test_the_secret_settings_are_the_documented_four() -> None:
    assert set(SECRET_SETTINGS) >= {"TETHER_TOKEN", "TETHER_SECRET_KEY",
                                    "TETHER_VAPID_PRIVATE_KEY", "TETHER_REDIS_URL"}


@pytest.mark.usefixtures("secret_env")
def test_inherited_env_drops_every_secret_setting_and_keeps_the_rest() -> None:
    env = inherited_env(EXTRA="x")
    assert not set(SECRET_SETTINGS) & set(env)
    assert not any(value in env.values() for value in SECRETS.values())
    assert "CLAUDECODE" not in env
    # What agents need still reaches them: API keys, Tether's other settings, extras.
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-kept"
    assert env["TETHER_PORT"] == "8123"
    assert env["EXTRA"] == "x"


@pytest.mark.usefixtures("secret_env")
@pytest.mark.parametrize("agent", ["local", "claude"])
def test_no_built_in_agent_is_started_with_a_secret(agent: str) -> None:
    env = default_catalog(Settings.from_env()).get(agent).env()
    assert not set(SECRET_SETTINGS) & set(env)
    assert not any(value in env.values() for value in SECRETS.values())
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-kept"
