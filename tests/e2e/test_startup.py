"""Starting the server as a newcomer does (issue 17): the token kept across restarts, one
login URL per reachable address with a QR code for a phone, and a second server on the same
data dir or port refused in one line. Several workers (issue 14): refused in one line but
with the Redis store and a token, and started with them."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.e2e.browser import new_page, screenshot
from tests.e2e.live import ROOT, LiveServer, free_port
from tests.redis_server import RedisServer
from tests.support import TEST_TOKEN
from tether.addresses import reachable_hosts

pytestmark = pytest.mark.e2e


def printed_urls(server: LiveServer) -> list[str]:
    return re.findall(r"^    (http://\S+/#token=[\w-]+)$", server.log_text(), re.M)


def test_the_generated_token_is_kept_across_restarts(tmp_path: Path) -> None:
    server = LiveServer(tmp_path, TETHER_TOKEN="")
    with server:
        [url] = printed_urls(server)
        token = url.split("#token=")[1]
        kept = tmp_path / "data" / "token"
        assert kept.read_text().strip() == token
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        browser = requests.Session()
        browser.post(server.url + "/login", data={"token": token}, timeout=10).raise_for_status()
        assert browser.get(server.url + "/api/sessions", timeout=10).status_code == 200
        server.stop()
        server.start()  # a restart, or an upgrade
        # The same login URL, and the phone's login still works.
        assert printed_urls(server)[-1] == url
        assert browser.get(server.url + "/api/sessions", timeout=10).status_code == 200


def test_a_server_on_every_address_prints_each_login_url_once_and_a_qr_code(
        tmp_path: Path) -> None:
    lan = [h for h in reachable_hosts("0.0.0.0") if not h.startswith("127.")]
    if not lan:
        pytest.skip("this machine has no address beyond loopback")
    allowed = ",".join(["127.0.0.1", *lan])
    with LiveServer(tmp_path, TETHER_HOST="0.0.0.0", TETHER_ALLOWED_HOSTS=allowed) as server:
        urls = printed_urls(server)
        token = "test-token-0123456789abcdef"
        assert urls == [f"http://{h}:{server.port}/#token={token}"
                        for h in ["127.0.0.1", *lan]]
        log = server.log_text()
        assert "scan this code" in log and "█" in log
        for url in urls:  # each one logs in
            host = url.split("/")[2]
            response = requests.post(server.url + "/login", data={"token": token},
                                     headers={"Host": host}, allow_redirects=False, timeout=10)
            assert response.status_code == 303, url


def run_second(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``gunicorn -c gunicorn.conf.py *args`` with ``env``, expected to exit."""
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("TETHER_") and k != "WEB_CONCURRENCY"}
    environ.update({"TETHER_DATA_DIR": str(tmp_path / "data"), "TETHER_ALLOW_ROOT": "1",
                    "TETHER_STORE": "sqlite", **env})
    gunicorn = Path(sys.executable).with_name("gunicorn")
    return subprocess.run([str(gunicorn), "-c", "gunicorn.conf.py", *args], cwd=ROOT,
                          env=environ, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("clash", ["data dir", "port"])
def test_a_second_server_is_refused_in_one_line(tmp_path: Path, clash: str) -> None:
    with LiveServer(tmp_path, TETHER_STORE="sqlite") as first:
        if clash == "data dir":
            done = run_second(tmp_path, TETHER_PORT=str(free_port()))
            expected = "another Tether server is using"
        else:
            done = run_second(tmp_path / "elsewhere", TETHER_PORT=str(first.port))
            expected = f"listening on 127.0.0.1:{first.port} is in use"
        assert done.returncode != 0
        output = (done.stdout + done.stderr).strip()
        assert output.count("\n") == 0, output  # one line
        assert output.startswith("Tether: ") and expected in output, output
        assert "ready" not in output and "Traceback" not in output
        assert first.api("GET", "/api/sessions").status_code == 200  # the first one is fine


@pytest.mark.browser
def test_the_page_says_why_claude_is_unavailable(browser: Any, tmp_path: Path) -> None:
    cli = tmp_path / "claude"
    cli.write_text("#!/bin/sh\n")
    cli.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    with LiveServer(tmp_path, TETHER_CLAUDE_BIN=str(cli), HOME=str(home),
                    ANTHROPIC_API_KEY="", CLAUDE_CODE_OAUTH_TOKEN="") as server:
        page = new_page(browser, server)
        try:
            page.locator("#menu-btn").click()
            option = page.locator("#agent-select option[value='claude']")
            expect(option).to_have_text("claude (unavailable)")
            expect(option).to_be_disabled()
            page.get_by_text("Why is claude unavailable?").click()
            expect(page.locator("#agent-why")).to_contain_text("claude setup-token")
            screenshot(page, "claude-unavailable")
        finally:
            page.context.close()


def test_make_runs_install_alone_starts_the_server(tmp_path: Path) -> None:
    """`make run` installs the runtime dependencies only (the tests' venv has many more): that
    install alone must start the server. gunicorn's gevent worker once failed on a module
    only a test dependency had brought in."""
    venv = tmp_path / "venv"
    done = subprocess.run(["make", "install", f"VENV={venv}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "!!" not in done.stderr  # no setuptools banner
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update(TETHER_PORT=str(port), TETHER_DATA_DIR=str(tmp_path / "data"),
               TETHER_ALLOW_ROOT="1", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    server = subprocess.Popen([str(venv / "bin" / "gunicorn"), "-c", "gunicorn.conf.py"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):
                # gunicorn's master listens before its worker has imported the app: a request
                # then waits in the backlog, longer than a second on a loaded machine.
                time.sleep(0.2)
        else:
            raise AssertionError("the server did not answer /healthz")
    finally:
        server.terminate()
        server.wait(20)
        server.stdout.close()


def test_an_unreachable_redis_store_is_refused_in_one_line_without_its_password(
        tmp_path: Path) -> None:
    done = run_second(tmp_path, TETHER_STORE="redis", TETHER_PORT=str(free_port()),
                      TETHER_TOKEN=TEST_TOKEN,
                      TETHER_REDIS_URL=f"redis://:pa55-word@127.0.0.1:{free_port()}/0")
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0 and output.count("\n") == 0, output
    assert "the Redis store does not answer at redis://127.0.0.1:" in output
    assert "pa55-word" not in output and "Traceback" not in output


def test_the_redis_store_without_a_token_is_refused_in_one_line(tmp_path: Path) -> None:
    # Refused before Redis is asked anything: none answers at this URL.
    done = run_second(tmp_path, TETHER_STORE="redis", TETHER_PORT=str(free_port()),
                      TETHER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0 and output.count("\n") == 0, output
    assert output.startswith("Tether: TETHER_STORE=redis needs TETHER_TOKEN"), output
    assert "each host's gunicorn master would make a token of its own" in output
    assert not (tmp_path / "data" / "token").exists()  # none was made


def workers_of(master: int) -> set[int]:
    """The live children of process ``master`` (gunicorn's workers)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            state, parent = stat.rsplit(")", 1)[1].split()[:2]
            if int(parent) == master and state != "Z":
                found.add(int(entry))
    return found


@pytest.mark.parametrize("how", ["WEB_CONCURRENCY=2", "-w 2", "--workers=3"])
@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_several_workers_without_the_redis_store_are_refused_in_one_line(
        tmp_path: Path, store: str, how: str) -> None:
    port = free_port()
    if how.startswith("WEB_CONCURRENCY="):
        done = run_second(tmp_path, TETHER_STORE=store, TETHER_PORT=str(port),
                          WEB_CONCURRENCY=how.split("=")[1])
    else:
        done = run_second(tmp_path, *how.split(), TETHER_STORE=store, TETHER_PORT=str(port))
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0 and output.count("\n") == 0, output  # one line
    workers = how[-1]
    assert output.startswith(f"Tether: {workers} workers were asked"), output
    assert f"TETHER_STORE={store}" in output and "set TETHER_STORE=redis" in output
    assert "Starting gunicorn" not in output and "Traceback" not in output
    with socket.socket() as probe:  # nothing was left listening
        probe.bind(("127.0.0.1", port))


def test_the_redis_store_with_a_token_starts_the_workers_asked(
        tmp_path: Path, redis_server: RedisServer, redis_prefix: str) -> None:
    with LiveServer(tmp_path, TETHER_STORE="redis", TETHER_REDIS_URL=redis_server.url,
                    TETHER_REDIS_PREFIX=redis_prefix, TETHER_DEBUG_WORKER=1,
                    TETHER_HOST_ID="host-a", WEB_CONCURRENCY=2) as server:
        assert server.process is not None
        deadline = time.monotonic() + 30
        while len(workers := workers_of(server.process.pid)) < 2:
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)
        assert len(workers) == 2, workers
        # Each request on a new connection: whichever worker accepts it answers, and says so.
        seen: set[str] = set()
        while len(seen) < 2 and time.monotonic() < deadline:
            response = requests.get(server.url + "/healthz", timeout=10)
            assert response.ok
            seen.add(response.headers["X-Tether-Worker"])
        assert len(seen) == 2, f"one worker answered every request: {seen}"
        assert {int(wid.split(":")[1]) for wid in seen} == workers
        assert all(wid.startswith("host-a:") for wid in seen)
