"""gunicorn settings for Tether: gevent workers holding many long-lived streams.

Read by ``make run`` (``gunicorn -c gunicorn.conf.py``). Host and port come from
``TETHER_HOST`` / ``TETHER_PORT`` (tether.config); the number of workers is gunicorn's own
(``WEB_CONCURRENCY``, or ``-w``), more than one only with ``TETHER_STORE=redis``.
"""

import errno
import os
import shutil
import socket
import tempfile

from gunicorn import glogging

from tether.addresses import login_urls, qr_code
from tether.config import Settings, check_binding, check_user
from tether.datadir import kept_token, prepare
from tether.stores.sqlite import StoreInUse, check_free

_settings = Settings.from_env()


def _check_start(settings):
    """Everything that would stop the server, checked before gunicorn starts: each problem is
    one line, never "ready" followed by a worker's traceback."""
    check_user(settings)
    check_binding(settings)
    if settings.store == "redis" and settings.token is None:
        raise ValueError(
            "TETHER_STORE=redis needs TETHER_TOKEN, set to the same value on every host: "
            "without it each host's gunicorn master would make a token of its own, and a "
            "browser logged in through one host would be refused by the others "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if settings.store == "sqlite":
        check_free(settings.data_dir / "tether.sqlite3")  # another server on this data dir
    if settings.store == "redis":
        _check_redis(settings)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            what = ("is in use (another Tether, or another program): stop it, or set "
                    "TETHER_PORT" if exc.errno == errno.EADDRINUSE else f"fails: {exc.strerror}")
            raise ValueError(f"listening on {settings.host}:{settings.port} {what}") from None


#: Run by _check_redis in a child process: redis-py imports ssl, and a master that imported
#: it would have every gevent worker warn that ssl was monkey-patched after its import.
_PING_REDIS = """
import sys
import redis
try:
    redis.Redis.from_url(sys.stdin.read(), socket_connect_timeout=3, socket_timeout=3).ping()
except redis.RedisError as exc:
    sys.exit(str(exc) or exc.__class__.__name__)
"""


def _check_redis(settings):
    """The Redis store answers, or one line saying where it was looked for (the URL's
    password left out: TETHER_REDIS_URL is a secret setting; it reaches the check on its
    standard input, never in its argv)."""
    import subprocess
    import sys
    from urllib.parse import urlsplit

    url = settings.redis_url.get_secret_value()
    try:
        done = subprocess.run([sys.executable, "-c", _PING_REDIS], input=url, text=True,
                              capture_output=True, timeout=15, check=False)
        problem = done.stderr.strip().splitlines()[-1] if done.returncode else ""
    except subprocess.TimeoutExpired:
        problem = "no answer within 15 s"
    if problem:
        parts = urlsplit(url)
        where = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"
        raise ValueError(f"the Redis store does not answer at {where} (TETHER_REDIS_URL): "
                         f"{problem}")


try:
    _check_start(_settings)
except (ValueError, StoreInUse) as _exc:
    raise SystemExit(f"Tether: {_exc}") from None

# The token: TETHER_TOKEN, else the one kept in the data dir (made at the first start), so
# that a restart logs no browser out. Read here, in the master, so that every worker it forks
# (and re-forks) has it; the master starts no agent, so it keeps the token in its
# environment, and each worker's create_app drops it from its own.
_token_kept = _settings.token is None
if _token_kept:
    for _warning in prepare(_settings.data_dir):
        print(f"Tether: {_warning}")
    os.environ["TETHER_TOKEN"] = kept_token(_settings.data_dir)


#: Names the master that made PROMETHEUS_MULTIPROC_DIR (a re-exec on SIGUSR2 makes its own).
_METRICS_MASTER = "TETHER_METRICS_MASTER"


def _metrics_dir(settings):
    """The directory the workers of this master share their /metrics figures in
    (``PROMETHEUS_MULTIPROC_DIR``, tether.metrics), or None: a lone worker keeps its own.

    With the Redis store, a fresh empty one made for this master (prometheus-client requires
    it empty at start: files left by an earlier run would be added in), set in the environment
    here, before any worker is forked and imports prometheus-client, which reads it then. Made
    even for one worker, since SIGTTIN may add more. A reload (SIGHUP) runs this file again in
    the same master: the directory stays, or the workers would count apart. With another
    store, any inherited value is dropped: one worker's figures are its own.
    """
    if settings.store != "redis":
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return None
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if os.environ.get(_METRICS_MASTER) == str(os.getpid()) and path and os.path.isdir(path):
        return path
    _sweep_metrics_dirs()
    path = tempfile.mkdtemp(prefix=f"tether-metrics-{os.getpid()}.{socket.gethostname()}.")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ[_METRICS_MASTER] = str(os.getpid())
    return path


def _sweep_metrics_dirs():
    """Remove what masters killed before their ``on_exit`` (SIGKILL) left: this user's
    ``tether-metrics-<pid>.<hostname>.*`` directories in the temp dir whose master ``<pid>``
    is gone. Only this host name's: a temp dir shared by containers (other pid namespaces)
    keeps the others'."""
    top = tempfile.gettempdir()
    for name in os.listdir(top):
        if not name.startswith("tether-metrics-"):
            continue
        pid, _, rest = name.removeprefix("tether-metrics-").partition(".")
        if not pid.isdigit() or not rest.startswith(f"{socket.gethostname()}."):
            continue
        path = os.path.join(top, name)
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # gone meanwhile, or another user's process: left as it is
            continue


_metrics = _metrics_dir(_settings)

# Server socket
_host = f"[{_settings.host}]" if ":" in _settings.host else _settings.host
bind = f"{_host}:{_settings.port}"

# The application
wsgi_app = "app:create_app()"

# Worker processes
# `workers` is not set here: gunicorn's default reads WEB_CONCURRENCY (1 when unset), and -w
# on the command line wins over both. More than one needs TETHER_STORE=redis, where sessions
# and their turns are shared between workers (nworkers_changed refuses the others).
worker_class = "gevent"
# Each SSE stream and long-poll holds one connection; an idle stream costs a greenlet.
worker_connections = 10000
# gevent records, for each greenlet it spawns (one per connection), the greenlet and the stack
# that spawned it: a debugging aid (gevent.util.format_run_info) that costs an idle stream
# about 0.35 KB (issue 5). GEVENT_TRACK_GREENLET_TREE=true in the environment keeps it.
os.environ.setdefault("GEVENT_TRACK_GREENLET_TREE", "false")
# For async workers the timeout is the worker heartbeat, not a request limit, so long-lived
# streams are fine with it.
timeout = 30
# Streams end when the worker stops; clients resume from their cursor.
graceful_timeout = 10
# Seconds an idle keep-alive connection stays open between requests: long enough for a
# long-poll client's next request, short enough not to hold a stopping worker. The gevent
# worker also gives every request line and header block this long to arrive (a slowloris
# client is cut off after it, with no answer); a request body has TETHER_BODY_TIMEOUT
# (blueprints/bodies.py).
keepalive = 5

# Request framing limits (docs/protocol.md "Limits"), gunicorn's defaults made explicit:
# a request line over 4094 bytes is 414, more than 100 header fields or one over 8190
# bytes is 431, each answered by gunicorn before the app sees the request.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# No runtime control socket: it defaults to one shared path per user, which two Tether
# servers on one machine (tests, a dev and a prod instance) would fight over.
control_socket_disable = True

# Forwarded headers (X-Forwarded-Proto …) are honoured by the app only with
# TETHER_TRUSTED_PROXIES (werkzeug's ProxyFix); gunicorn's own reading of them is off.
secure_scheme_headers: dict[str, str] = {}

# Logging
accesslog = "-"
# The path without its query string: the login URL carries the token in `?token=`.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss "%(a)s"'
loglevel = "info"


class AccessLog(glogging.Logger):
    """gunicorn's logger, without an access line for a successful poll or health check.

    A long-poll client makes one request per batch of events and a health checker one every
    few seconds: their lines would be most of the log, and writing them was 14 % of the
    worker's time under a poll load (bench/longpoll.py). Errors (status 400 and up) on these
    paths, and every other request, are still logged.
    """

    def access(self, resp, req, environ, request_time):
        # gunicorn's own error answers (a malformed request) carry no status_code: logged.
        status = getattr(resp, "status_code", None)
        if status is not None and status < 400 and environ.get("REQUEST_METHOD") == "GET":
            path = environ.get("PATH_INFO", "")
            if path in QUIET_PATHS or (path.startswith("/api/sessions/")
                                       and path.endswith("/events")):
                return
        super().access(resp, req, environ, request_time)


#: Paths (besides each session's /events long-poll) whose successful GETs are not logged.
QUIET_PATHS = frozenset({"/healthz", "/api/inbox", "/metrics"})
logger_class = AccessLog


def _workers_refusal(workers):
    """Why ``workers`` workers cannot run with this store, or None when they can."""
    if workers > 1 and _settings.store != "redis":
        return (f"{workers} workers were asked (WEB_CONCURRENCY or -w), but with "
                f"TETHER_STORE={_settings.store} sessions and their turns live in the one "
                f"process that runs them: run one worker (one gevent worker holds thousands "
                f"of connections), or set TETHER_STORE=redis (with TETHER_TOKEN) to share "
                f"them between workers and hosts")
    return None


def nworkers_changed(server, new_value, old_value):
    # The final number of workers (the conf file, WEB_CONCURRENCY and -w all applied), set in
    # the master before it logs, binds or forks anything: the first call (old_value None) is
    # the start, refused in one line. Later ones are SIGTTIN / SIGTTOU or a reload (SIGHUP),
    # where exiting would end every session: the change is undone and logged instead.
    refusal = _workers_refusal(new_value)
    if refusal is None:
        return
    if old_value is None:
        raise SystemExit(f"Tether: {refusal}")
    server.log.error("Tether: not changing to %s workers: %s", new_value, refusal)
    server._num_workers = old_value  # the property's storage: setting it again would recurse


def when_ready(server):
    port = server.address[0][1] if server.address else _settings.port
    token = os.environ["TETHER_TOKEN"]
    # The token rides in the fragment, which browsers never send: no server, proxy or
    # history entry keeps it (the page posts it to /login and drops it from the address).
    urls = login_urls(_settings, port, token)
    where = (f"kept in {_settings.data_dir / 'token'}" if _token_kept else "TETHER_TOKEN")
    if not urls:  # behind a proxy, whose name is the only allowed host
        urls = [f"https://{_settings.host_names[0]}/#token={token}"]
    lines = "\n".join(f"    {url}" for url in urls)
    server.log.info("Tether is ready (agent: %s). Open a URL to log in (the token in it is %s):"
                    "\n\n%s\n", _settings.agent, where, lines)
    phone = [url for url in urls if "//127." not in url and "//[::1]" not in url]
    if phone and not _settings.binds_loopback:
        server.log.info("From a phone on the same network, scan this code (it opens %s):\n%s",
                        phone[0].split("#")[0], qr_code(phone[0]))


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

    # Everything the app holds once loaded (about 58,000 objects: Flask, gevent, pydantic and
    # their modules) lives as long as the worker. Frozen, the collector stops scanning it: a
    # full collection took 42 ms of the worker, every stream and turn waiting, and now scans
    # only what came after (issue 5: the mix's tail, bench/README.md). TETHER_GC_FREEZE=0
    # leaves the collector as it is.
    if _settings.gc_freeze:
        import gc

        gc.collect()
        gc.freeze()


def child_exit(server, worker):
    # In the master, just after a worker exited (a crash, SIGKILL, or a graceful stop): its
    # live /metrics gauges (clients, agent processes) leave the host's sum, its counters stay.
    # With the Redis store its sessions are released at once (its heartbeats deleted, its
    # agents' process groups killed) instead of when its lease runs out. Whatever fails here
    # is logged: the master must go on managing the other workers.
    if _metrics is not None:
        try:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, _metrics)
        except Exception:
            server.log.exception("Tether: the /metrics gauges of worker %s were not dropped",
                                 worker.pid)
    if _settings.store != "redis":
        return
    try:
        from tether.cluster.membership import worker_exited

        worker_exited(_settings, worker.pid)
    except Exception:
        server.log.exception("Tether: releasing the sessions of worker %s failed; its lease "
                             "(TETHER_LEASE_SECONDS) will release them", worker.pid)


def worker_int(worker):
    # SIGINT / SIGQUIT (Ctrl-C on `make run`): the worker exits right after this hook.
    worker.wsgi.extensions["tether"].shutdown()


def on_exit(server):
    # The master stops: the workers' /metrics files go with it.
    if _metrics is not None:
        shutil.rmtree(_metrics, ignore_errors=True)
