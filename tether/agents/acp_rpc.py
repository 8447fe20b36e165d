"""JSON-RPC 2.0 messages as the Agent Client Protocol writes them (one object per line,
always with ``"jsonrpc": "2.0"``; jsonrpc.org/specification, ACP schema ``ErrorCode``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: The client does not serve that method (JSON-RPC 2.0).
METHOD_NOT_FOUND = -32601


def request(rid: int, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": dict(params)}


def notification(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": dict(params)}


def response(rid: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def error_response(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


def error_text(error: Any) -> str:
    """A JSON-RPC error's words: ``message``, its ``data.details``, and the API's own message
    when ``message`` is a JSON error body (Gemini CLI 0.61.0 answers a failed model call with
    the HTTP status as ``code`` and the body as ``message`` [obs, api_error.jsonl])."""
    if not isinstance(error, Mapping):
        return str(error)
    message = str(error.get("message") or "error")
    try:
        body = json.loads(message)
        inner = body.get("error", {}).get("message") if isinstance(body, dict) else None
        if isinstance(inner, str) and inner:
            message = inner
    except ValueError:
        pass
    data = error.get("data")
    details = data.get("details") if isinstance(data, Mapping) else None
    if isinstance(details, str) and details and details not in message:
        message = f"{message}: {details}"
    return f"{message} (code {error.get('code')})"
