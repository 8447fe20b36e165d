"""A stand-in for ``codex app-server`` (PROTOCOLS.md 3.2, 3.3): answers ``initialize``,
``thread/start`` / ``thread/resume`` and ``turn/start``, then streams the turn's text as
``item/agentMessage/delta`` notifications (the ``bench`` prompt of bench/agents/stub.py) and
ends it with ``item/completed`` and ``turn/completed``, shaped as codex 0.171.0 writes them
(tests/fixtures/codex/text.jsonl). Everything else gets an empty result.

    python bench/agents/codex_stub.py app-server
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stub import bench, requests, write  # noqa: E402


def notify(method: str, params: dict[str, Any]) -> None:
    write({"method": method, "params": params, "emittedAtMs": int(time.time() * 1000)})


def main() -> None:
    thread = str(uuid.uuid4())
    for message in requests():
        method, rid = message.get("method"), message.get("id")
        params = message.get("params") or {}
        if rid is None:
            continue  # initialized, and any notification
        if method == "initialize":
            write({"id": rid, "result": {"userAgent": "codex-stub/0", "platformFamily": "unix",
                                         "platformOs": "linux"}})
        elif method in ("thread/start", "thread/resume"):
            thread = params.get("threadId") or thread
            write({"id": rid, "result": {"thread": {"id": thread, "turns": []},
                                         "model": "stub", "cwd": params.get("cwd")}})
        elif method == "turn/start":
            turn(rid, thread, params)
        else:
            write({"id": rid, "result": {}})


def turn(rid: Any, thread: str, params: dict[str, Any]) -> None:
    turn_id, item = str(uuid.uuid4()), f"msg_{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    write({"id": rid, "result": {"turn": {"id": turn_id, "items": [], "status": "inProgress",
                                          "error": None}}})
    notify("turn/started", {"threadId": thread, "turn": {"id": turn_id, "items": [],
                                                         "status": "inProgress"}})
    notify("item/started", {"threadId": thread, "turnId": turn_id,
                            "item": {"type": "agentMessage", "id": item, "text": ""}})
    text = " ".join(part.get("text", "") for part in params.get("input") or []
                    if isinstance(part, dict))
    _, summary = bench(text, lambda delta: {
        "method": "item/agentMessage/delta", "params": {
            "threadId": thread, "turnId": turn_id, "itemId": item, "delta": delta},
        "emittedAtMs": int(time.time() * 1000)})
    notify("item/completed", {"threadId": thread, "turnId": turn_id,
                              "item": {"type": "agentMessage", "id": item, "text": summary}})
    notify("turn/completed", {"threadId": thread, "turn": {
        "id": turn_id, "items": [], "status": "completed", "error": None,
        "durationMs": int((time.monotonic() - started) * 1000)}})


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
