"""gunicorn settings for Tether: one gevent worker holding many long-lived streams.

Read by ``make run`` (``gunicorn -c gunicorn.conf.py``). Host and port come from
``TETHER_HOST`` / ``TETHER_PORT`` (tether.config).
"""

from tether.config import Settings

_settings = Settings.from_env()

# Server socket
_host = f"[{_settings.host}]" if ":" in _settings.host else _settings.host
bind = f"{_host}:{_settings.port}"

# The application
wsgi_app = "app:create_app()"

# Worker processes
# The in-memory store lives in one process: exactly one worker (see on_starting).
workers = 1
worker_class = "gevent"
# Each SSE stream and long-poll holds one connection; an idle stream costs a greenlet.
worker_connections = 10000
# For async workers the timeout is the worker heartbeat, not a request limit, so long-lived
# streams are fine with it.
timeout = 30
# Streams end when the worker stops; clients resume from their cursor.
graceful_timeout = 10
# HTTP keep-alive between requests (long-poll clients reuse connections); above the
# 60 s idle timeout of common proxies so the proxy closes first.
keepalive = 75

# No runtime control socket: it defaults to one shared path per user, which two Tether
# servers on one machine (tests, a dev and a prod instance) would fight over.
control_socket_disable = True

# Logging
accesslog = "-"
loglevel = "info"


def on_starting(server):
    if server.cfg.workers != 1:
        raise SystemExit(
            f"Tether's in-memory store lives in one process, so it needs exactly one worker "
            f"(workers = {server.cfg.workers} was asked). One gevent worker holds thousands of "
            f"connections; for more, use a shared store (Redis) once it is configured."
        )


def when_ready(server):
    host = _settings.host if _settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    server.log.info("Tether is ready: open http://%s:%s/ (agent: %s)", host,
                    server.address[0][1] if server.address else _settings.port, _settings.agent)


def worker_exit(server, worker):
    # Stop every agent process (and its tools) with the worker: no orphans.
    core = getattr(worker, "wsgi", None)
    if core is not None and hasattr(core, "extensions"):
        core.extensions["tether"].shutdown()
