"""The offline shell (README, "In the browser"): the service worker at the root of the site,
and the page it shows when the server cannot be reached.

``/sw.js`` is ``static/sw.js`` with two values filled in: ``SHELL_FILES``, the URLs it keeps
(the page's styles, scripts and icons, and ``/offline``), and ``SHELL_VERSION``, a hash of
their content. A release that changes any of them therefore serves a byte-different
``/sw.js``, which is what makes a browser install the new worker; the new worker keeps the
new files under a new cache name and deletes the old cache.

Both are open without the token: they hold no secret, a browser re-fetches ``/sw.js`` in the
background to look for updates (when the login may have run out), and the worker fetches the
shell without credentials, so that nothing it keeps was ever answered to a login. ``/sw.js``
is served from the root with ``Service-Worker-Allowed: /`` so that its scope is the whole
site (Web Push uses the same worker: docs/protocol.md, "Web Push").

The main page itself is never kept: it needs the login, and every API answer and stream
carries session data. Opened with no network, the worker answers the page's URL with
``/offline`` instead, which waits for the server and then reloads that URL.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from flask import Blueprint, Response, current_app, render_template, url_for

bp = Blueprint("shell", __name__)

#: The modern client's scripts, in the order boot.js loads them (templates/index.html).
MODERN_SCRIPTS = ("vendor/marked/marked.umd.js", "vendor/dompurify/purify.min.js",
                  "js/core.js", "js/link.js", "js/transcript.js", "js/changes.js",
                  "js/push.js", "js/app.js")
#: Static files the service worker keeps: what the modern page and the offline page load,
#: and the icons the manifest and notifications name. The basic client's files are not
#: kept: a browser that runs it has no service worker.
SHELL_STATIC = ("style.css", "noscript.css", "manifest.webmanifest", "icon.svg",
                "icons/apple-touch-icon.png", "icons/icon-192.png", "icons/icon-512.png",
                "icons/icon-maskable-192.png", "icons/icon-maskable-512.png", "js/boot.js",
                *MODERN_SCRIPTS, "js/offline.js")
#: In sw.js, replaced when it is served.
VERSION_PLACEHOLDER = b'"__SHELL_VERSION__"'
FILES_PLACEHOLDER = b'["__SHELL_FILES__"]'


def static_path(name: str) -> Path:
    return Path(current_app.static_folder or "static", name)


def shell_files() -> list[str]:
    """The URLs the service worker keeps, as the pages name them."""
    return [url_for("shell.offline"), *(url_for("static", filename=n) for n in SHELL_STATIC)]


def shell_version() -> str:
    """A hash of everything the worker keeps: each URL with its content (the offline page as
    rendered). Read on each request for ``/sw.js``, which a browser asks for at most once
    per page load: a changed file is never served under an old version."""
    digest = hashlib.sha256()
    digest.update(offline_page().encode())
    for name in SHELL_STATIC:
        content = static_path(name).read_bytes()
        digest.update(f"\0{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:16]


def offline_page() -> str:
    return render_template("offline.html")


@bp.get("/sw.js")
def service_worker() -> Response:
    script = static_path("sw.js").read_bytes()
    script = script.replace(VERSION_PLACEHOLDER, json.dumps(shell_version()).encode(), 1)
    script = script.replace(FILES_PLACEHOLDER, json.dumps(shell_files()).encode(), 1)
    return Response(script, mimetype="text/javascript",
                    headers={"Service-Worker-Allowed": "/"})


@bp.get("/offline")
def offline() -> Response:
    """Tether's own "offline" page: no session data, no login, nothing secret."""
    return Response(offline_page(), mimetype="text/html")
