"""Settings: one frozen object, read from ``TETHER_*`` environment variables.

Every duration is in seconds and every size in bytes; the names say so. The environment
variable names are the public contract (README table); the attribute names carry the units.
pydantic-settings does the parsing and refuses a bad value with a message naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tether.projects import parse_roots

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The checkout Tether runs from (``make run``'s directory).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Shortest ``TETHER_TOKEN`` accepted, in characters (a generated token has 43).
MIN_TOKEN_CHARS = 16

#: Settings that hold a secret (README "Security"). Agent processes never see them
#: (:func:`tether.agents.base.inherited_env`) and the app drops them from its own
#: ``os.environ`` once read (``app.create_app``). ``TETHER_REDIS_URL`` may carry a password.
#: Every future secret setting goes here too.
SECRET_SETTINGS = ("TETHER_TOKEN", "TETHER_SECRET_KEY", "TETHER_VAPID_PRIVATE_KEY",
                   "TETHER_REDIS_URL")


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
    codex_bin: str | None = Field(None, validation_alias=_env("CODEX_BIN"))
    gemini_bin: str | None = Field(None, validation_alias=_env("GEMINI_BIN"))
    #: A JSON file of more agents that speak the Agent Client Protocol, in the shape of
    #: Zed's ``agent_servers`` setting (tether.agents.agent_servers); None: none.
    agent_servers: Path | None = Field(None, validation_alias=_env("AGENT_SERVERS"))
    data_dir: Path = Field(Path("data"), validation_alias=_env("DATA_DIR"))
    #: Folders sessions may be opened in (and the picker lists), resolved; empty: none, and
    #: each session gets its own empty workspace (tether.projects).
    project_roots: Annotated[tuple[Path, ...], NoDecode] = Field(
        (), validation_alias=_env("PROJECT_ROOTS")
    )
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
    #: Seconds a new agent process has to finish its handshake (answer ``initialize`` and
    #: open or resume its conversation) before its turn fails; agents that need none
    #: (Claude Code) are not timed.
    agent_start_timeout_seconds: float = Field(
        60.0, gt=0, allow_inf_nan=False, validation_alias=_env("AGENT_START_TIMEOUT")
    )
    command_timeout_seconds: float = Field(
        60.0, gt=0, allow_inf_nan=False, validation_alias=_env("COMMAND_TIMEOUT")
    )
    max_prompt_bytes: int = Field(256 * 1024, gt=0, validation_alias=_env("MAX_PROMPT_BYTES"))
    #: Bytes of one image in a prompt, decoded (tether/images.py; at most 5 per prompt).
    max_image_bytes: int = Field(5 * 1024 * 1024, gt=0, validation_alias=_env("MAX_IMAGE_BYTES"))
    body_timeout_seconds: float = Field(
        10.0, gt=0, allow_inf_nan=False, validation_alias=_env("BODY_TIMEOUT")
    )
    sse_retry_ms: int = Field(2000, gt=0, validation_alias=_env("SSE_RETRY_MS"))
    #: One writer per session writes the live tail of every caught-up SSE stream
    #: (blueprints.fanout); off, each stream writes its own (for comparison in bench/).
    shared_writer: bool = Field(True, validation_alias=_env("SHARED_WRITER"))
    #: gunicorn.conf.py freezes what the worker holds once the app is loaded (gc.freeze), so
    #: that the collector's full passes stop scanning it; off, for comparison in bench/.
    gc_freeze: bool = Field(True, validation_alias=_env("GC_FREEZE"))
    local_word_delay_seconds: float = Field(
        0.02, ge=0, allow_inf_nan=False, validation_alias=_env("LOCAL_WORD_DELAY")
    )
    max_sessions: int = Field(1000, gt=0, validation_alias=_env("MAX_SESSIONS"))
    store: Literal["memory", "sqlite", "redis"] = Field("memory",
                                                        validation_alias=_env("STORE"))
    #: TETHER_STORE=redis: the server (``redis://[[user]:password@]host:port/db``); a secret,
    #: as it may carry a password (SECRET_SETTINGS).
    redis_url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"),
                                 validation_alias=_env("REDIS_URL"))
    #: TETHER_STORE=redis: the start of every key (``<prefix>:epoch``, ``<prefix>:{<sid>}:log``
    #: …), so that several Tethers can share one Redis database.
    redis_prefix: str = Field("tether", min_length=1, max_length=100,
                              pattern=r"^[A-Za-z0-9_.:-]+$",
                              validation_alias=_env("REDIS_PREFIX"))
    #: TETHER_STORE=redis: seconds a worker that stopped renewing its heartbeat keeps its
    #: sessions; past it another worker ends its turns ``interrupted`` and takes them over.
    lease_seconds: float = Field(10.0, gt=0, le=3600, allow_inf_nan=False,
                                 validation_alias=_env("LEASE_SECONDS"))
    #: TETHER_STORE=redis: seconds between a worker's heartbeats (less than the lease).
    heartbeat_seconds: float = Field(2.0, gt=0, le=600, allow_inf_nan=False,
                                     validation_alias=_env("HEARTBEAT_SECONDS"))
    #: TETHER_STORE=redis: this host's name in worker ids (default: the hostname); unique
    #: per host, as gunicorn's process ids are only unique on one host.
    host_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=100,
                         pattern=r"^[A-Za-z0-9_.-]+$", validation_alias=_env("HOST_ID"))
    #: TETHER_STORE=redis: seconds a worker keeps its view of a session nobody on it follows
    #: (no stream, long-poll or owned turn) after its last use; a test knob (the e2e tests
    #: shorten it), 60 by default as SCALE-OUT.md says (tether.stores.redis.drop_idle).
    mirror_idle_seconds: float = Field(60.0, gt=0, le=86400, allow_inf_nan=False,
                                       validation_alias=_env("MIRROR_IDLE_SECONDS"))
    #: Adds ``X-Tether-Worker: <worker id>`` to every response (for tests and debugging).
    debug_worker: bool = Field(False, validation_alias=_env("DEBUG_WORKER"))

    # Trust (README "Security")
    token: SecretStr | None = Field(None, validation_alias=_env("TOKEN"))
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("ALLOWED_ORIGINS")
    )
    #: Peers whose X-Forwarded-* headers are believed (addresses and networks); empty: none.
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = Field(
        (), validation_alias=_env("TRUSTED_PROXIES")
    )
    #: Host names the server answers to (DNS rebinding); None: the loopback names, which
    #: only a server bound to loopback may rely on (:func:`check_binding`).
    allowed_hosts: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        None, validation_alias=_env("ALLOWED_HOSTS")
    )
    #: Signs the login cookies with the token; None: a key kept in the data dir.
    secret_key: SecretStr | None = Field(None, validation_alias=_env("SECRET_KEY"))
    #: How long a browser's login lasts, in days.
    session_days: float = Field(
        30.0, gt=0, le=3650, allow_inf_nan=False, validation_alias=_env("SESSION_DAYS")
    )
    #: Start even as root (check_user): for a container or VM whose root is not the host's.
    allow_root: bool = Field(False, validation_alias=_env("ALLOW_ROOT"))
    #: Sessions may switch auto-approve on; off, every such change is refused (403
    #: ``auto_approve_disabled``) and no session auto-approves.
    allow_auto_approve: bool = Field(True, validation_alias=_env("ALLOW_AUTO_APPROVE"))
    #: Sessions may run in a permission mode that runs tools without asking a person
    #: (``bypassPermissions``, ``auto``: tether.agents.modes); off, such a mode is refused
    #: (400 ``mode_not_allowed``).
    allow_bypass: bool = Field(False, validation_alias=_env("ALLOW_BYPASS"))

    # Web Push (tether.push)
    #: The VAPID private key: the raw 32-byte P-256 key in URL-safe base64; None: the one
    #: kept in the data dir (``vapid.key``, made at the first start). A secret.
    vapid_private_key: SecretStr | None = Field(None, validation_alias=_env("VAPID_PRIVATE_KEY"))
    #: The contact push services may write to about this server's pushes (a ``mailto:`` or
    #: ``https:`` URL); None: ``mailto:tether@localhost``.
    vapid_subject: str | None = Field(None, max_length=500,
                                      pattern=r"^(mailto:[^\s@]+@[^\s@]+|https://\S+)$",
                                      validation_alias=_env("VAPID_SUBJECT"))
    #: Accept push endpoints on ``http://127.0.0.1`` and ``http://localhost`` (tests, with a
    #: fake push service); off, only ``https://`` endpoints on DNS names.
    push_allow_loopback: bool = Field(False, validation_alias=_env("PUSH_ALLOW_LOOPBACK"))

    @model_validator(mode="after")
    def _check_lease(self) -> Settings:
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError(
                f"TETHER_HEARTBEAT_SECONDS ({self.heartbeat_seconds:g}) must be at most half "
                f"of TETHER_LEASE_SECONDS ({self.lease_seconds:g}): a worker must renew its "
                "lease at least twice before it runs out")
        return self

    @field_validator("project_roots", mode="before")
    @classmethod
    def _parse_roots(cls, value: Any) -> Any:
        # "/home/me/src:/srv/work" -> (PosixPath('/home/me/src'), PosixPath('/srv/work'))
        if value is None:
            return ()
        return parse_roots(value if isinstance(value, str) else list(value))

    @field_validator("agent_servers", mode="after")
    @classmethod
    def _check_agent_servers(cls, value: Path | None) -> Path | None:
        # Read the file now, so that a bad one stops the server at start, naming the entry.
        if value is not None:
            from tether.agents.agent_servers import BUILTIN_NAMES, load_agent_servers

            try:
                load_agent_servers(value, BUILTIN_NAMES)
            except ValueError as e:  # pydantic names the variable already
                raise ValueError(str(e).removeprefix("TETHER_AGENT_SERVERS: ")) from None
        return value

    @field_validator("vapid_private_key", mode="before")
    @classmethod
    def _check_vapid_key(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None or value == "":
            return None  # unset: the one kept in the data dir
        from tether.push.keys import private_key_from

        try:
            private_key_from(str(value))
        except ValueError as exc:
            raise ValueError(f"{exc} (the raw P-256 private key, as `npx web-push "
                             "generate-vapid-keys` prints it)") from None
        return value

    @field_validator("token", "secret_key", mode="before")
    @classmethod
    def _check_secret(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None or value == "":
            return None  # unset: the one kept in the data dir
        if not isinstance(value, str) or len(value) < MIN_TOKEN_CHARS or not value.isprintable():
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} printable characters "
                             "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        # "https://a.example, https://b.example" -> ("https://a.example", "https://b.example")
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        origins = []
        for origin in value:
            origin = str(origin).rstrip("/")
            scheme, sep, rest = origin.partition("://")
            if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
                raise ValueError(f"{origin!r} is not an origin like https://tether.example")
            origins.append(origin.lower())
        return tuple(origins)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: Any) -> Any:
        # "127.0.0.1, 10.0.0.0/8" -> (IPv4Network('127.0.0.1/32'), IPv4Network('10.0.0.0/8'))
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
            if value == ["0"]:
                return ()  # the old count form's "no proxy", still meaning none
        networks = []
        for item in value:
            if isinstance(item, str) and item.isdigit():
                raise ValueError(
                    f"{item!r} is a count of proxies, which this setting no longer takes: "
                    "list the proxies' addresses or networks instead, e.g. 127.0.0.1 for a "
                    "proxy on this host, or 10.0.0.0/8 (0 or empty: no proxy)")
            try:
                networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network like 127.0.0.1 "
                                 "or 10.0.0.0/8") from None
        return tuple(networks)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        # "tether.example, .corp.example" -> ("tether.example", ".corp.example"); "*": any
        if value is None:
            return None
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        hosts = []
        for host in value:
            host = str(host).strip().lower()
            bare = host.strip("[]")
            if host != "*" and not re.fullmatch(r"\.?[a-z0-9.-]+|[0-9a-f:.]+", bare):
                raise ValueError(f"{host!r} is not a host name like tether.example "
                                 "(no scheme, port or path; '*' allows any)")
            hosts.append(bare)
        if not hosts:
            raise ValueError("is empty: name the hosts browsers use, or '*' for any")
        return tuple(hosts)

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
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"]
                else str(err["msg"]).removeprefix("Value error, ") for err in exc.errors()
            )
            raise ValueError(f"invalid Tether settings: {problems}") from None

    @property
    def binds_loopback(self) -> bool:
        """True when ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to anything

    @property
    def host_names(self) -> tuple[str, ...]:
        """The host names requests may carry in ``Host``: ``TETHER_ALLOWED_HOSTS``, else
        ``localhost``, ``127.0.0.1``, ``::1`` and the bound address; ``("*",)`` allows any."""
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        names = ["localhost", "127.0.0.1", "::1"]
        bound = self.host.strip("[]").lower()
        if bound not in names:
            names.append(bound)
        return tuple(names)

    @property
    def url_host(self) -> str:
        """The host for a URL that reaches this server from this machine (``0.0.0.0`` and
        ``::`` become loopback; IPv6 gets brackets)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    def resolve_claude_bin(self) -> str | None:
        """The ``claude`` executable (:func:`agent_bin`, ``TETHER_CLAUDE_BIN``)."""
        return agent_bin(self.claude_bin, "claude")

    def resolve_codex_bin(self) -> str | None:
        """The ``codex`` executable (:func:`agent_bin`, ``TETHER_CODEX_BIN``)."""
        return agent_bin(self.codex_bin, "codex")

    def resolve_gemini_bin(self) -> str | None:
        """The ``gemini`` executable (:func:`agent_bin`, ``TETHER_GEMINI_BIN``)."""
        return agent_bin(self.gemini_bin, "gemini")


def agent_bin(configured: str | None, name: str) -> str | None:
    """An agent CLI's executable: the configured path (its ``TETHER_*_BIN`` setting), else
    ``name`` on ``PATH``, else the pinned copy ``make`` installs under ``.tools/`` (``make
    claude-code``, ``codex-cli``, ``gemini-cli``; ``make test`` too); None when none is."""
    if configured:
        return configured
    pinned = PROJECT_ROOT / ".tools" / "node_modules" / ".bin" / name
    return shutil.which(name) or (str(pinned) if os.access(pinned, os.X_OK) else None)


_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::[0-9]{1,5})?")


def host_allowed(host: str, allowed: Collection[str]) -> bool:
    """True when the ``Host`` value ``host`` (``name[:port]``, ``[v6][:port]``, or a bare
    address) names one of ``allowed`` (``.example.com``: it and its subdomains; ``*``: any);
    a malformed value never does. The port is not compared."""
    if "*" in allowed:
        return True
    value = host.strip().lower()
    if ":" in value and not value.startswith("[") and value.count(":") > 1:
        value = f"[{value}]"  # a bare IPv6 address
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    name = match.group(1).strip("[]").rstrip(".")
    return any(name == ref.lstrip(".") or (ref.startswith(".") and name.endswith(ref))
               for ref in allowed)


def check_binding(settings: Settings) -> None:
    """Refuse to listen beyond this machine without the host names browsers will use.

    Without ``TETHER_ALLOWED_HOSTS`` only loopback names would be answered, which no browser
    elsewhere uses; the operator must name the hosts, or say ``*`` explicitly. (A token is
    always there: ``TETHER_TOKEN``, or the one kept in the data dir, 256 random bits.)

    :raises ValueError: ``TETHER_HOST`` is not loopback and ``TETHER_ALLOWED_HOSTS`` is
        unset; the message suggests this machine's addresses.
    """
    if settings.binds_loopback or settings.allowed_hosts is not None:
        return
    from tether.addresses import reachable_hosts  # it imports this module

    ours = [h for h in reachable_hosts(settings.host) if not _is_loopback(h)]
    raise ValueError(
        f"refusing to listen on {settings.host} without TETHER_ALLOWED_HOSTS: name the host "
        f"names and addresses browsers use to reach this server (this machine's: "
        f"TETHER_ALLOWED_HOSTS={','.join(ours) or 'tether.example'}), so that a page on "
        "another site cannot reach it through a DNS name of its own (DNS rebinding); '*' "
        "allows any name.")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_user(settings: Settings) -> None:
    """Refuse to run as root unless ``TETHER_ALLOW_ROOT`` says so.

    Agents run with the server's rights, and an approval click is all that stands between a
    prompt and a shell: as root, that shell owns the machine.

    :raises ValueError: the effective user id is 0 and ``TETHER_ALLOW_ROOT`` is not set.
    """
    if os.geteuid() == 0 and not settings.allow_root:
        raise ValueError(
            "refusing to run as root: agents run with the server's rights, and an approval is "
            "all that stands between a prompt and a root shell on this machine. Run Tether as "
            "a dedicated unprivileged user, or set TETHER_ALLOW_ROOT=1 in a container or VM "
            "whose root is not the host's.")
