"""Settings: one frozen object, read from ``TETHER_*`` environment variables.

Every duration is in seconds and every size in bytes; the names say so. The environment
variable names are the public contract (README table); the attribute names carry the units.
pydantic-settings does the parsing and refuses a bad value with a message naming the variable.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    # Accept the environment variable name, and the attribute name for tests and create_app().
    return AliasChoices(f"TETHER_{name}", name.lower())


class Settings(BaseSettings):
    """Tether's configuration.

    Build it with :meth:`from_env`; ``overrides`` (for tests and ``create_app(config)``) win
    over the environment and take either the variable name (``TETHER_PORT``) or the field name.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", validation_alias=_env("HOST"))
    port: int = Field(8000, ge=0, le=65535, validation_alias=_env("PORT"))
    agent: str = Field("local", validation_alias=_env("AGENT"))
    claude_bin: str | None = Field(None, validation_alias=_env("CLAUDE_BIN"))
    data_dir: Path = Field(Path("data"), validation_alias=_env("DATA_DIR"))
    turn_timeout_seconds: float = Field(
        1800.0, ge=0, allow_inf_nan=False, validation_alias=_env("TURN_TIMEOUT")
    )
    prompt_timeout_seconds: float = Field(
        600.0, ge=0, allow_inf_nan=False, validation_alias=_env("PROMPT_TIMEOUT")
    )
    keepalive_seconds: float = Field(
        15.0, gt=0, allow_inf_nan=False, validation_alias=_env("KEEPALIVE")
    )
    agent_idle_seconds: float = Field(
        600.0, ge=0, allow_inf_nan=False, validation_alias=_env("AGENT_IDLE_TIMEOUT")
    )
    cancel_grace_seconds: float = Field(
        3.0, ge=0, allow_inf_nan=False, validation_alias=_env("CANCEL_GRACE")
    )
    command_timeout_seconds: float = Field(
        60.0, gt=0, allow_inf_nan=False, validation_alias=_env("COMMAND_TIMEOUT")
    )
    max_prompt_bytes: int = Field(256 * 1024, gt=0, validation_alias=_env("MAX_PROMPT_BYTES"))
    sse_retry_ms: int = Field(2000, gt=0, validation_alias=_env("SSE_RETRY_MS"))
    local_word_delay_seconds: float = Field(
        0.02, ge=0, allow_inf_nan=False, validation_alias=_env("LOCAL_WORD_DELAY")
    )

    @classmethod
    def from_env(cls, overrides: Mapping[str, Any] | None = None) -> Settings:
        """Read ``TETHER_*`` from the environment, then apply ``overrides``.

        :raises ValueError: a variable has a value of the wrong type or range; the message
            names the variable.
        """
        try:
            return cls(**dict(overrides or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ValueError(f"invalid Tether settings: {problems}") from None

    def resolve_claude_bin(self) -> str | None:
        """The ``claude`` executable: ``TETHER_CLAUDE_BIN``, else ``claude`` on ``PATH``."""
        if self.claude_bin:
            return self.claude_bin
        return shutil.which("claude")
