"""Model and permission mode over HTTP (issue 18 item 2): the agents' lists, creation, PATCH,
the 400s naming the allowed values and ``mode_not_allowed``; the same over JSON-RPC."""

from __future__ import annotations

import threading
from typing import Any

from flask.testing import FlaskClient

from blueprints.ws import Connection
from tests.blueprints.test_ws import WAIT, FakeWebSocket, wait_until


def test_agents_list_their_modes_and_models(client: FlaskClient) -> None:
    agents = {a["name"]: a for a in client.get("/api/agents").get_json()["agents"]}
    local, claude = agents["local"], agents["claude"]
    assert local["permission_modes"][0] == "default" and "plan" in local["permission_modes"]
    assert local["models"] == [{"id": "local", "name": "Local (no model)", "default": True}]
    assert {"default", "acceptEdits", "plan", "bypassPermissions"} <= set(
        claude["permission_modes"])
    assert [m for m in claude["models"] if m.get("default")] == [claude["models"][0]]
    assert claude["models_source"] in ("static", "agent")


def test_create_with_a_mode_and_patch_it_back(client: FlaskClient) -> None:
    created = client.post("/api/sessions", json={"permission_mode": "plan",
                                                 "client": "phone"})
    assert created.status_code == 201
    session = created.get_json()
    assert (session["permission_mode"], session["model"]) == ("plan", "local")
    sid = session["id"]
    patched = client.patch(f"/api/sessions/{sid}", json={"permission_mode": "default"})
    assert patched.status_code == 200 and patched.get_json()["permission_mode"] == "default"
    events = client.get(f"/api/sessions/{sid}/events").get_json()["events"]
    modes = [(e["permission_mode"], e["by"]) for e in events if e["kind"] == "mode"]
    assert modes[0] == ("plan", "phone") and modes[1][0] == "default"
    assert modes[1][1].startswith("http ")  # no label: the address


def test_unknown_values_are_400s_naming_the_allowed_ones(client: FlaskClient) -> None:
    bad = client.post("/api/sessions", json={"permission_mode": "yolo"})
    assert bad.status_code == 400
    assert "default, acceptEdits, plan, bypassPermissions" in bad.get_json()["error"]["message"]
    sid = client.post("/api/sessions", json={}).get_json()["id"]
    bad = client.patch(f"/api/sessions/{sid}", json={"model": "gpt-9"})
    assert bad.status_code == 400 and "local" in bad.get_json()["error"]["message"]
    assert client.patch(f"/api/sessions/{sid}", json={"model": 7}).status_code == 400


def test_bypass_is_refused_without_the_setting(client: FlaskClient) -> None:
    refused = client.post("/api/sessions", json={"permission_mode": "bypassPermissions"})
    assert refused.status_code == 400
    error = refused.get_json()["error"]
    assert error["code"] == "mode_not_allowed" and "TETHER_ALLOW_BYPASS=1" in error["message"]
    assert client.get("/api/sessions").get_json()["sessions"] == []
    sid = client.post("/api/sessions", json={}).get_json()["id"]
    refused = client.patch(f"/api/sessions/{sid}", json={"permission_mode": "bypassPermissions"})
    assert refused.get_json()["error"]["code"] == "mode_not_allowed"


def test_bypass_is_allowed_with_the_setting(make_app: Any) -> None:
    client = make_app(TETHER_ALLOW_BYPASS="1").test_client()
    created = client.post("/api/sessions", json={"permission_mode": "bypassPermissions"})
    assert created.status_code == 201
    assert created.get_json()["permission_mode"] == "bypassPermissions"


def test_json_rpc_create_and_update_take_the_fields(make_app: Any) -> None:
    core = make_app().extensions["tether"]
    fake = FakeWebSocket()
    reader = threading.Thread(target=Connection(fake, core, "ws test").run, daemon=True)
    reader.start()
    try:
        fake.request(1, "session.create", permission_mode="plan")
        assert wait_until(lambda: any(m.get("id") == 1 for m in fake.messages()))
        created = next(m for m in fake.messages() if m.get("id") == 1)["result"]
        assert created["permission_mode"] == "plan"
        fake.request(2, "session.update", session_id=created["id"],
                     permission_mode="bypassPermissions")
        fake.request(3, "session.update", session_id=created["id"], permission_mode="nope")
        fake.request(4, "session.update", session_id=created["id"], permission_mode="default",
                     client="tablet")
        assert wait_until(lambda: {m.get("id") for m in fake.messages()} >= {2, 3, 4})
        replies = {m["id"]: m for m in fake.messages() if m.get("id") in (2, 3, 4)}
        assert replies[2]["error"]["data"] == {"code": "mode_not_allowed"}
        assert replies[2]["error"]["code"] == -32011
        assert replies[3]["error"]["code"] == -32602
        assert replies[4]["result"]["permission_mode"] == "default"
        modes = [e.payload["by"] for e in core.get(created["id"]).log.read_after(0)
                 if e.kind == "mode"]
        assert modes == ["ws test", "tablet"]
    finally:
        fake.incoming.put(None)
        reader.join(WAIT)
