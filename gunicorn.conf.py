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
# Seconds an idle keep-alive connection stays open between requests: long enough for a
# long-poll client's next request, short enough not to hold a stopping worker.
keepalive = 5

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


def post_worker_init(worker):
    # On SIGTERM (a graceful stop) end every turn and stop every agent process at once, in the
    # worker, where the sessions live: closing the logs also ends open streams and long-polls,
    # so the worker exits well within graceful_timeout. (worker_exit runs in the master.)
    import signal

    import gevent

    core = worker.wsgi.extensions["tether"]
    graceful_exit = worker.handle_exit

    def handle_exit(sig, frame):
        graceful_exit(sig, frame)
        gevent.spawn(core.shutdown)

    worker.handle_exit = handle_exit
    signal.signal(signal.SIGTERM, handle_exit)


def worker_int(worker):
    # SIGINT / SIGQUIT (Ctrl-C on `make run`): the worker exits right after this hook.
    worker.wsgi.extensions["tether"].shutdown()
