"""Debian's nginx in front of a :class:`~tests.e2e.live.LiveServer`, configured by the shipped
site file ``deploy/nginx.conf`` (tests/e2e/test_nginx.py).

:func:`render_site` makes the test's copy of the site file by a few substitutions over the
shipped text, each of which must match exactly as often as it says (so a change to the shipped
file that one of them misses fails loudly instead of testing something else):

- the certificate and key paths (certbot's) become a self-signed pair made by
  :func:`make_certificate`, and ``/var/log/nginx/`` the test's directory;
- ``listen 80`` and ``listen 443`` become free loopback ports, and the ``[::]`` listens are
  dropped (the test listens on 127.0.0.1 only);
- the upstream's ``server 127.0.0.1:8000;`` becomes the live server's port;
- ``server_name tether.example`` becomes :data:`SERVER_NAME`;
- optionally ``proxy_read_timeout`` (the keepalive test shortens it);
- optionally, with ``buffering``, the settings of a proxy that holds streaming responses
  until they end (:data:`BUFFERING`), as corporate and antivirus proxies behave.

:func:`main_config` wraps the site in the smallest top-level ``nginx.conf`` that runs it in the
foreground from a temporary directory.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

from tests.e2e.live import ROOT, free_port

SITE = ROOT / "deploy" / "nginx.conf"
#: The host name the test's nginx serves and its certificate names (with 127.0.0.1).
SERVER_NAME = "localhost"

SHIPPED_CERT = "/etc/letsencrypt/live/tether.example/fullchain.pem"
SHIPPED_KEY = "/etc/letsencrypt/live/tether.example/privkey.pem"
SHIPPED_LOG_DIR = "/var/log/nginx/"
SHIPPED_UPSTREAM = "server 127.0.0.1:8000;"
#: What makes nginx hold a stream (issue 20, item 4): HTTP/1.0 to the upstream (so no chunks
#: and no WebSocket upgrade), responses buffered, and Tether's ``X-Accel-Buffering: no``
#: ignored.
BUFFERING = ("proxy_http_version 1.0;\n    proxy_buffering on;\n"
             "    proxy_ignore_headers X-Accel-Buffering;")


def nginx_binary() -> str:
    """Debian's nginx. Missing: the test fails in CI (``.ci/run`` installs it) and is skipped
    elsewhere."""
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if os.access(found, os.X_OK):
        return found
    message = ("nginx is missing: the deployment tests need Debian's nginx "
               "(apt-get install nginx)")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for :data:`SERVER_NAME` and 127.0.0.1, valid for a day, and its
    key (P-256): ``(cert.pem, key.pem)`` in ``directory``. Clients trust it as its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def substitute(text: str, pattern: str, replacement: str, count: int) -> str:
    """``re.sub`` (multiline) that must match exactly ``count`` times in the shipped file."""
    new, matched = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert matched == count, f"{pattern!r} matched {matched} times in {SITE}, not {count}"
    return new


def with_paths(site: str, directory: Path, cert: Path, key: Path) -> str:
    """The shipped site with only its certificate, key and log paths replaced (the logs go to
    ``directory``)."""
    site = substitute(site, re.escape(SHIPPED_CERT), str(cert), 1)
    site = substitute(site, re.escape(SHIPPED_KEY), str(key), 1)
    return substitute(site, re.escape(SHIPPED_LOG_DIR), f"{directory}/", 3)


def render_site(site: str, directory: Path, cert: Path, key: Path, *, http_port: int,
                https_port: int, upstream_port: int, read_timeout: str | None = None,
                buffering: bool = False) -> str:
    """The shipped site as the test runs it (module docstring). ``read_timeout``: an nginx
    time (``3s``) for ``proxy_read_timeout``; None keeps the shipped one. ``buffering``: the
    proxy holds streams (:data:`BUFFERING`) instead of passing each event at once."""
    site = with_paths(site, directory, cert, key)
    site = substitute(site, r"^[ \t]*listen \[::\]:.*\n", "", 4)
    site = substitute(site, r"\blisten 80\b", f"listen 127.0.0.1:{http_port}", 2)
    site = substitute(site, r"\blisten 443\b", f"listen 127.0.0.1:{https_port}", 2)
    site = substitute(site, re.escape(SHIPPED_UPSTREAM), f"server 127.0.0.1:{upstream_port};", 1)
    site = substitute(site, r"\bserver_name tether\.example;", f"server_name {SERVER_NAME};", 2)
    if read_timeout is not None:
        site = substitute(site, r"\bproxy_read_timeout \S+;",
                          f"proxy_read_timeout {read_timeout};", 1)
    if buffering:
        site = substitute(site, r"^[ \t]*proxy_http_version 1\.1;\n", "", 1)
        site = substitute(site, r"\bproxy_buffering off;", BUFFERING, 1)
    return site


def main_config(directory: Path, site: Path) -> str:
    """A top-level nginx.conf that runs ``site`` in the foreground with everything (pid, logs,
    temporary files) under ``directory``. As root the worker runs as root too, so that it can
    use the test's temporary directory."""
    temp = "".join(f"    {kind}_temp_path {directory}/{kind}_temp;\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return ("user root;\n" if os.geteuid() == 0 else "") + (
        f"daemon off;\n"
        f"worker_processes 1;\n"
        f"pid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log info;\n"
        f"events {{ worker_connections 1024; }}\n"
        f"http {{\n"
        f"{temp}"
        f"    access_log {directory}/http-access.log;\n"
        f"    include {site};\n"
        f"}}\n")


def check_config(config: Path, prefix: Path) -> str:
    """``nginx -t`` on ``config``; returns its output.

    :raises AssertionError: nginx refused the configuration.
    """
    result = subprocess.run([nginx_binary(), "-t", "-c", str(config), "-p", f"{prefix}/",
                             "-e", str(prefix / "error.log")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stderr


class Nginx:
    """``with Nginx(directory, upstream_port, cert, key) as edge: edge.url``: nginx running the
    rendered site on two free loopback ports (:attr:`http_port`, :attr:`https_port`)."""

    def __init__(self, directory: Path, upstream_port: int, cert: Path, key: Path,
                 read_timeout: str | None = None, buffering: bool = False) -> None:
        self.directory = directory
        self.cert, self.key = cert, key
        self.http_port, self.https_port = free_port(), free_port()
        self.url = f"https://{SERVER_NAME}:{self.https_port}"
        self.site = directory / "tether.conf"
        self.site.write_text(render_site(SITE.read_text(), directory, cert, key,
                                         http_port=self.http_port, https_port=self.https_port,
                                         upstream_port=upstream_port,
                                         read_timeout=read_timeout, buffering=buffering))
        self.config = directory / "nginx.conf"
        self.config.write_text(main_config(directory, self.site))
        self.access_log = directory / "tether.access.log"
        self.error_log = directory / "error.log"
        self.check_output = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def cookie_name(self) -> str:
        """The login cookie's name Tether picks from the forwarded port."""
        return f"tether-{self.https_port}"

    def __enter__(self) -> Nginx:
        self.check_output = check_config(self.config, self.directory)
        self.process = subprocess.Popen(
            [nginx_binary(), "-c", str(self.config), "-p", f"{self.directory}/",
             "-e", str(self.error_log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.https_port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError("nginx did not listen within 10 s")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # fast shutdown: open streams are cut
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
