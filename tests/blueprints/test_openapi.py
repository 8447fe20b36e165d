"""The OpenAPI description (``GET /api/openapi.json``) and schemathesis fuzzing the API with it.

The fuzz run is in-process (schemathesis's WSGI transport, loading the document the app
serves), one test per operation and generation mode (positive: valid by the document;
negative: each case breaks it somewhere), with the bearer token. schemathesis is used as a
library (``operation.as_strategy`` under Hypothesis's ``@given``): its pytest plugin's
``from_fixture`` loader fails on pytest 9.2 (``Function`` has no ``_nodeid``), and it is
disabled in pyproject.toml. Bounded so it cannot hang and stays well under a minute:

- ``wait`` (long-polls) is clamped on the server to :data:`FUZZ_MAX_WAIT` seconds by patching
  ``blueprints.poll.MAX_WAIT_SECONDS``: every ``wait`` value the document allows is still sent
  and parsed, it just cannot hold a request for a minute.
- Streams (SSE) are read by schemathesis up to ``max-stream-events`` = 1 event (the first is
  always there at once: ``caught-up`` or a replayed event for a session, the snapshot for the
  inbox), and the keepalive is short, so even a stream with nothing to say pings in time.
- Hypothesis runs derandomized (the same cases every run) with :data:`MAX_EXAMPLES` per
  operation and mode, no deadline and no example database.

Half of the generated session ids are swapped for a real session's (and request ids for a
real pending approval or question), so the fuzzer reaches past the 404s. That session's agent
is ``claude`` as a stand-in that exits at once (``failing_claude``): a prompt starts a turn
that fails at once, and nothing the
fuzzer types is ever run as a shell command (the ``local`` agent runs ``$ <cmd>``).
"""

from __future__ import annotations

import os
import re
import secrets
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from blueprints import openapi, poll
from tests.fakes import conversations as saved
from tests.support import AUTH_HEADERS, TEST_TOKEN
from tether.sessions import Session, SessionRegistry

#: Longest long-poll during the fuzz run, in seconds.
FUZZ_MAX_WAIT = 0.01
#: Generated cases per operation and mode (``FUZZ_MAX_EXAMPLES=500`` for a deeper run).
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "40"))

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]

#: Operations that answer no 2xx over plain HTTP: the WebSocket wants an upgrade.
NEVER_2XX = {"GET /api/ws"}

#: Endpoints that are not API: the page, static files, the login form.
# The service worker (/sw.js) and the offline page it keeps are the page's, not API.
NOT_API = {"static", "ui.index", "auth.login", "auth.logout", "shell.service_worker",
           "shell.offline"}


def _document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


# -- the document -------------------------------------------------------------------------


def test_document_is_valid_openapi_31(client: FlaskClient) -> None:
    doc = _document(client)
    assert doc["openapi"].startswith("3.1.")
    # schemathesis validates the document against the OpenAPI 3.1 meta-schema on load.
    schema = schemathesis.openapi.from_dict(doc)
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert "POST /api/sessions/{session_id}/prompt" in labels
    assert "GET /api/sessions/{session_id}/stream" in labels


def test_every_flask_rule_is_documented_and_nothing_else(app: Flask, client: FlaskClient) -> None:
    """No drift: each Flask URL rule (method and path) is an operation, and each operation a
    rule."""
    rules = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in NOT_API:
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)  # <path:path> too
        rules |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in _document(client)["paths"].items()
                  for method in item if method in ("get", "post", "put", "patch", "delete")}
    assert rules == documented
    assert all(path.startswith("/api/") or path in ("/healthz", "/metrics") for path, _ in rules)


def test_every_operation_needs_the_token_but_healthz(client: FlaskClient) -> None:
    doc = _document(client)
    assert {"bearer", "cookie"} == set(doc["components"]["securitySchemes"])
    assert doc["security"] == [{"bearer": []}, {"cookie": []}]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            if path == "/healthz":
                assert op["security"] == [] and "401" not in op["responses"]
            else:
                assert "security" not in op, (method, path)
                assert {"401", "429"} <= set(op["responses"]), (method, path)


def test_the_cookie_scheme_names_the_login_cookie(app: Flask) -> None:
    """A browser that logged in reads the document by cookie alone, under the name the
    document gives."""
    browser = app.test_client()
    browser.environ_base.pop("HTTP_AUTHORIZATION")
    assert browser.get(f"/?token={TEST_TOKEN}").status_code == 303
    response = browser.get("/api/openapi.json")
    assert response.status_code == 200
    name = response.get_json()["components"]["securitySchemes"]["cookie"]["name"]
    assert browser.get_cookie(name) is not None


def test_the_document_itself_needs_the_token(client: FlaskClient) -> None:
    response = client.get("/api/openapi.json", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/healthz", headers={"Authorization": ""}).status_code == 200


def test_request_bodies_are_the_pydantic_models(client: FlaskClient) -> None:
    schemas = _document(client)["components"]["schemas"]
    for model in openapi.BODY_MODELS:
        assert schemas[model.__name__]["properties"].keys() == model.model_fields.keys()
    assert schemas["Prompt"]["required"] == ["text"]
    assert schemas["ApprovalAnswer"]["properties"]["decision"]["enum"] == ["allow", "deny"]


def test_every_error_status_uses_the_error_schema(client: FlaskClient) -> None:
    doc = _document(client)
    responses = doc["components"]["responses"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    name = response["$ref"].rsplit("/", 1)[1]
                    schema = responses[name]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)


def test_every_operation_with_a_body_lists_its_body_errors(client: FlaskClient) -> None:
    """A body may be malformed (400), too large (413), not JSON (415) or too slow to arrive
    (408 ``request_timeout``, TETHER_BODY_TIMEOUT)."""
    doc = _document(client)
    with_body = [(method, path, op) for path, item in doc["paths"].items()
                 for method, op in item.items() if isinstance(op, dict) and "requestBody" in op]
    assert len(with_body) == len(openapi.BODY_MODELS)
    for method, path, op in with_body:
        assert {"400", "408", "413", "415"} <= set(op["responses"]), (method, path)
    timeout = doc["components"]["responses"]["RequestTimeout"]
    assert "TETHER_BODY_TIMEOUT" in timeout["description"]
    assert "request_timeout" in doc["components"]["schemas"]["Error"]["properties"]["error"][
        "properties"]["code"]["enum"]


def test_refusals_while_the_server_stops_are_documented(make_app: Any,
                                                        failing_claude: str) -> None:
    """After shutdown begins, creating, changing, prompting and deleting answer 503
    ``shutting_down``, as the document says (checked by schemathesis, not by hand)."""
    app = make_app(TETHER_CLAUDE_BIN=failing_claude)
    api = schemathesis.openapi.from_wsgi("/api/openapi.json", app, headers=AUTH_HEADERS)
    core = app.extensions["tether"]
    sid = core.create(agent="claude").id
    core.shutdown()
    cases = [api["/api/sessions"]["POST"].Case(body={}, media_type="application/json"),
             api["/api/sessions/{session_id}"]["PATCH"].Case(
                 path_parameters={"session_id": sid}, body={"title": "t"},
                 media_type="application/json"),
             api["/api/sessions/{session_id}/prompt"]["POST"].Case(
                 path_parameters={"session_id": sid}, body={"text": "hi"},
                 media_type="application/json"),
             api["/api/sessions/{session_id}"]["DELETE"].Case(path_parameters={"session_id": sid})]
    for case in cases:
        response = case.call_and_validate(headers=AUTH_HEADERS, checks=CHECKS[1:])
        assert response.status_code == 503, case.operation.label
        assert response.json()["error"]["code"] == "shutting_down"


def test_a_refused_auto_approve_is_documented(make_app: Any) -> None:
    """``TETHER_ALLOW_AUTO_APPROVE=0``: a PATCH that switches auto-approve on answers 403
    ``auto_approve_disabled``, a status and shape the document lists (schemathesis checks)."""
    app = make_app(TETHER_ALLOW_AUTO_APPROVE="0")
    api = schemathesis.openapi.from_wsgi("/api/openapi.json", app, headers=AUTH_HEADERS)
    sid = app.extensions["tether"].create().id
    case = api["/api/sessions/{session_id}"]["PATCH"].Case(
        path_parameters={"session_id": sid}, body={"auto_approve": True},
        media_type="application/json")
    response = case.call_and_validate(headers=AUTH_HEADERS, checks=CHECKS[1:])
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "auto_approve_disabled"
    document = app.test_client().get("/api/openapi.json", headers=AUTH_HEADERS).get_json()
    assert "auto_approve_disabled" in document["components"]["responses"]["Forbidden"][
        "description"]


def test_readme_and_protocol_name_the_same_paths(client: FlaskClient) -> None:
    """README's API table and docs/protocol.md mention every documented path."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "README.md").read_text() + (root / "docs" / "protocol.md").read_text()
    for path in _document(client)["paths"]:
        written = (path.replace("{session_id}", "<id>").replace("{request_id}", "<request_id>")
                   .replace("{n}", "<n>").replace("{path}", "<path>")
                   .replace("{sha256}", "<sha256>"))
        assert written in text, path


# -- the fuzz run -------------------------------------------------------------------------


class Target:
    """The real session (and pending requests) the fuzzer's ids are swapped for."""

    def __init__(self, core: SessionRegistry, push: Any = None) -> None:
        self.core = core
        self.core_push = push
        self.session: Session = core.create(agent="claude", title="fuzz target")
        #: A project folder with a conversation Claude Code saved (fuzz_app writes it).
        self.folder = str(core.projects.roots[0] / "app")
        self.conversation = FUZZ_CONVERSATION

    def approval_id(self) -> str:
        return self._pending("approval") or self.session.prompts.open_approval(
            "Bash", {"command": "true"}, None)[0].request_id

    def clarify_id(self) -> str:
        return self._pending("clarify") or self.session.prompts.open_clarify(
            [{"question": "Which?", "header": "Pick",
              "options": [{"label": "a", "description": ""}, {"label": "b", "description": ""}],
              "multiSelect": False}], None)[0].request_id

    def queued_id(self) -> str:
        """The id of the target's first queued prompt, queued as a restart would bring it back
        (its turn is over: the fuzzer's prompts fail at once, a missing binary)."""
        queue = self.session.queue
        if queue:
            return queue[0].queue_id
        session = self.session
        queue_id = secrets.token_hex(16)
        session.restore(session.turn, session.auto_approve, session.agent_session_id,
                        resume=False, queued=[(queue_id, "fuzz", [])])
        return queue_id

    def image_sha(self) -> str:
        """An image a prompt of the target carried (kept as the prompt route keeps it)."""
        from tests.tether.test_images import picture
        from tether.images import ImageStore

        store = ImageStore(self.core.settings.data_dir)
        return store.save(self.session.id, picture("image/png"), "image/png").sha256

    def written_file(self) -> str:
        """A file in the target's folder that its agent wrote (a Write tool call in its log),
        for the Changes routes."""
        path = Path(self.session.workspace) / "fuzz.txt"
        if not path.exists():
            path.write_text("written by the agent\n")
            self.session.log.append("tool_use", {"tool_use_id": "fuzz", "name": "Write",
                                                 "input": {"file_path": str(path),
                                                           "content": path.read_text()}})
        return path.name

    def _pending(self, kind: str) -> str | None:
        if self.session.state == "ended":
            return None
        return next((p.request_id for p in self.session.prompts.pending() if p.kind == kind),
                    None)

    def aim(self, case: Any) -> None:
        """Swap about half of the generated ids for real ones (deterministically: by CRC)."""
        self._aim_at_conversations(case)
        self._aim_at_push(case)
        params = case.path_parameters or {}
        sid = params.get("session_id")
        if not isinstance(sid, str) or zlib.crc32(sid.encode("utf-8", "replace")) % 2:
            return
        if self.session.state == "ended":  # the fuzzer deleted it: a fresh one
            self.session = self.core.create(agent="claude", title="fuzz target")
        params["session_id"] = self.session.id
        if "/queue/" in case.path and zlib.crc32(sid.encode("utf-8", "replace")) % 3:
            params["n"] = 1
            queue_id = self.queued_id()  # position 1 holds a prompt
            if isinstance(case.query, dict) and "queue_id" in case.query:
                case.query["queue_id"] = queue_id
        path = params.get("path")
        if isinstance(path, str) and zlib.crc32(path.encode("utf-8", "replace")) % 2:
            params["path"] = self.written_file()
        sha = params.get("sha256")
        if isinstance(sha, str) and zlib.crc32(sha.encode("utf-8", "replace")) % 2:
            params["sha256"] = self.image_sha()
        rid = params.get("request_id")
        if isinstance(rid, str) and zlib.crc32(rid.encode("utf-8", "replace")) % 3:
            params["request_id"] = (self.approval_id() if "/approvals/" in case.path
                                    else self.clarify_id())


    def _aim_at_push(self, case: Any) -> None:
        """About half of the subscriptions name a push service's endpoint and real keys;
        about half of the unsubscribes name a subscribed endpoint."""
        if case.path != "/api/push/subscriptions" or not isinstance(case.body, dict):
            return
        endpoint = case.body.get("endpoint")
        if not isinstance(endpoint, str) or zlib.crc32(endpoint.encode("utf-8", "replace")) % 2:
            return
        from tests.fakes.push_service import browser_subscription

        # A name that never resolves: nothing leaves this machine when an approval opens.
        real = browser_subscription(
            f"https://push.invalid/{zlib.crc32(endpoint.encode('utf-8', 'replace'))}")
        if case.method.upper() == "POST":
            case.body.update(endpoint=real["endpoint"], keys=real["keys"])
        else:
            self.core_push.subscribe(real)
            case.body["endpoint"] = real["endpoint"]

    def _aim_at_conversations(self, case: Any) -> None:
        """About half of the listings ask for the folder with a saved conversation; about
        half of the creates that name one continue the real one."""
        if case.path == "/api/projects/conversations":
            query = case.query if isinstance(case.query, dict) else {}
            if zlib.crc32(repr(sorted(query.items())).encode("utf-8", "replace")) % 2 == 0:
                case.query = {**query, "path": self.folder, "agent": "claude"}
        elif case.path == "/api/sessions" and case.method.upper() == "POST" \
                and isinstance(case.body, dict) and "resume" in case.body \
                and zlib.crc32(repr(case.body).encode("utf-8", "replace")) % 2 == 0:
            case.body = {**case.body, "agent": "claude", "cwd": self.folder,
                         "resume": self.conversation}


#: The id of the conversation fuzz_app saves.
FUZZ_CONVERSATION = "0f0f0f0f-0000-4000-8000-000000000001"


@pytest.fixture
def fuzz_app(make_app: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
             failing_claude: str) -> Flask:
    monkeypatch.setattr(poll, "MAX_WAIT_SECONDS", FUZZ_MAX_WAIT)
    # A project root whose folder has a conversation Claude Code saved (in the HOME the
    # agent inherits).
    home, root = tmp_path / "home", tmp_path / "projects"
    (root / "app").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    saved.save(home, root.resolve() / "app", saved.exchange("fix the build", "Fixed."),
               FUZZ_CONVERSATION)
    # The durable store, as `make run` has it: every change the fuzzer makes is saved too.
    return make_app(TETHER_PROJECT_ROOTS=str(root), TETHER_KEEPALIVE=0.2,
                    TETHER_CLAUDE_BIN=failing_claude,
                    TETHER_PROMPT_TIMEOUT=0, TETHER_STORE="sqlite")


@pytest.fixture
def target(fuzz_app: Flask) -> Iterator[Target]:
    yield Target(fuzz_app.extensions["tether"], fuzz_app.extensions["tether_push"])


def _fuzz_params() -> list[Any]:
    """(operation label, mode) for every operation schemathesis finds in the document (read
    without an app, for collection); negative only where there is something to break."""
    params = []
    for result in schemathesis.openapi.from_dict(openapi.document()).get_all_operations():
        operation = result.ok()
        params.append(pytest.param(operation.label, GenerationMode.POSITIVE,
                                   id=f"{operation.label}-positive"))
        if list(operation.iter_parameters()) or operation.body:
            params.append(pytest.param(operation.label, GenerationMode.NEGATIVE,
                                       id=f"{operation.label}-negative"))
    return sorted(params, key=lambda p: p.id)


@pytest.mark.parametrize("label, mode", _fuzz_params())
def test_fuzz_the_api(fuzz_app: Flask, target: Target, tally: Any, label: str,
                      mode: GenerationMode) -> None:
    """schemathesis generates cases for one operation from the served document, positive
    (valid by the document) or negative (each violating it somewhere), and checks every
    answer: no 5xx, a documented status and content type, a body that fits its schema."""
    config = SchemathesisConfig.from_dict({"max-stream-events": 1, "request-timeout": 10})
    api = schemathesis.openapi.from_wsgi("/api/openapi.json", fuzz_app, config=config,
                                         headers=AUTH_HEADERS)
    method, path = label.split(" ", 1)
    operation = api[path][method]
    tried = 0
    statuses: Counter[int] = Counter()

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        nonlocal tried
        target.aim(case)
        tried += 1
        response = case.call_and_validate(headers=AUTH_HEADERS, checks=CHECKS)
        statuses[response.status_code] += 1

    try:
        fuzz()
    finally:
        tally.add("inputs tried", tried)
    assert tried > 0
    if mode is GenerationMode.POSITIVE and label not in NEVER_2XX:
        # The swapped ids reach past the 404s: the operation really ran.
        assert any(200 <= status < 300 for status in statuses), sorted(statuses.items())
