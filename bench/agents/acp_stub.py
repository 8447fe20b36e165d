"""A stand-in Agent Client Protocol agent (PROTOCOLS.md 4.2): answers ``initialize`` and
``session/new``, then streams each ``session/prompt``'s text as ``session/update``
``agent_message_chunk`` notifications (the ``bench`` prompt of bench/agents/stub.py) and ends
it with the prompt's response (``stopReason: end_turn``), shaped as gemini 0.61.0 writes them
(tests/fixtures/gemini/text.jsonl). No ``loadSession``; anything else gets an empty result.

    python bench/agents/acp_stub.py
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stub import bench, requests, write  # noqa: E402


def respond(rid: Any, result: Any) -> None:
    write({"jsonrpc": "2.0", "id": rid, "result": result})


def main() -> None:
    session = str(uuid.uuid4())
    for message in requests():
        method, rid = message.get("method"), message.get("id")
        params = message.get("params") or {}
        if rid is None:
            continue  # session/cancel, and any notification
        if method == "initialize":
            respond(rid, {"protocolVersion": 1, "authMethods": [],
                          "agentInfo": {"name": "acp-stub", "version": "0"},
                          "agentCapabilities": {"loadSession": False,
                                                "promptCapabilities": {"image": False}}})
        elif method == "session/new":
            respond(rid, {"sessionId": session})
        elif method == "session/prompt":
            text = " ".join(block.get("text", "") for block in params.get("prompt") or []
                            if isinstance(block, dict) and block.get("type") == "text")
            bench(text, lambda chunk: {
                "jsonrpc": "2.0", "method": "session/update", "params": {
                    "sessionId": session, "update": {
                        "sessionUpdate": "agent_message_chunk",
                        "content": {"type": "text", "text": chunk}}}})
            respond(rid, {"stopReason": "end_turn"})
        else:
            respond(rid, None)


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
