"""A stopping server (SessionRegistry.shutdown, run on SIGTERM) refuses new work with
``shutting_down``: HTTP 503 and JSON-RPC -32006, never a 500 or a misleading 400."""

from __future__ import annotations

import json

from flask import Flask

from blueprints import jsonrpc
from blueprints.errors import HTTP_STATUS, JSONRPC_CODE
from tether.errors import ShuttingDown


def test_prompts_sessions_and_deletes_get_503_while_the_server_stops(app: Flask) -> None:
    client = app.test_client()
    sid = client.post("/api/sessions", json={}).get_json()["id"]
    app.extensions["tether"].shutdown()
    for method, path, body in [("POST", f"/api/sessions/{sid}/prompt", {"text": "hello"}),
                               ("POST", "/api/sessions", {}),
                               ("PATCH", f"/api/sessions/{sid}", {"title": "x"}),
                               ("DELETE", f"/api/sessions/{sid}", None)]:
        response = client.open(path, method=method, json=body)
        assert response.status_code == 503, (method, path, response.get_json())
        assert response.get_json()["error"]["code"] == "shutting_down"
    # Reads still answer: the session and its log are kept.
    assert client.get(f"/api/sessions/{sid}").status_code == 200


def test_shutting_down_has_its_own_json_rpc_code() -> None:
    assert HTTP_STATUS["shutting_down"] == 503
    codes = [code for name, code in JSONRPC_CODE.items() if name != "shutting_down"]
    assert JSONRPC_CODE["shutting_down"] not in codes

    def handler(method: str, params: dict) -> None:
        raise ShuttingDown("the server is shutting down")

    reply = json.loads(jsonrpc.handle(json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "prompt.submit", "params": {}}), handler) or "")
    assert reply["error"]["code"] == JSONRPC_CODE["shutting_down"]
    assert reply["error"]["data"] == {"code": "shutting_down"}
