"""The Agent Client Protocol's tool calls and permission requests as Tether's events.

Pure functions over the ACP schema's shapes (agentclientprotocol/agent-client-protocol,
``schema/schema.json``; the Rust sources ``src/v1/tool_call.rs`` and ``client.rs``):

- ``ToolCall`` / ``ToolCallUpdate``: ``toolCallId``, ``title``, ``kind`` (``read``, ``edit``,
  ``delete``, ``move``, ``search``, ``execute``, ``think``, ``fetch``, ``switch_mode``,
  ``other``), ``status`` (``pending``, ``in_progress``, ``completed``, ``failed``),
  ``content``, ``locations`` (``[{path, line?}]``), ``rawInput``, ``rawOutput``.
- ``ToolCallContent``: ``{"type": "content", "content": ContentBlock}``, ``{"type": "diff",
  "path", "oldText"?, "newText"}`` (no ``oldText``: a new file) or ``{"type": "terminal",
  "terminalId"}``.
- ``PermissionOption``: ``{optionId, name, kind}``, ``kind`` one of ``allow_once``,
  ``allow_always``, ``reject_once``, ``reject_always``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from tether.agents.driver import Answer

#: ``ToolCallStatus`` values after which no more updates come (ACP schema).
FINISHED = frozenset({"completed", "failed"})


def render_diff(item: Mapping[str, Any], root: Path | str | None = None) -> str:
    """A ``diff`` item as unified diff text (``--- a/<path>`` / ``+++ b/<path>``), its path
    relative to ``root`` (the workspace) when it lies inside it. A new file (no ``oldText``,
    or Gemini CLI's ``_meta.kind: "add"`` with ``oldText: ""``, observed with 0.61.0) is
    ``--- /dev/null``."""
    path = display_path(str(item.get("path") or "file"), root)
    old, new = item.get("oldText"), item.get("newText")
    old_text = old if isinstance(old, str) else ""
    new_text = new if isinstance(new, str) else ""
    meta = item.get("_meta")
    added = not isinstance(old, str) or (
        not old and isinstance(meta, Mapping) and meta.get("kind") == "add")
    before = "/dev/null" if added else f"a/{path}"
    lines = difflib.unified_diff(old_text.splitlines(keepends=True),
                                 new_text.splitlines(keepends=True),
                                 before, f"b/{path}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)


def display_path(path: str, root: Path | str | None) -> str:
    """``path`` relative to ``root`` when inside it, else without its leading ``/``."""
    if root is not None:
        try:
            return PurePosixPath(path).relative_to(PurePosixPath(str(root))).as_posix()
        except ValueError:
            pass
    return path.lstrip("/")


def block_text(block: Any) -> str:
    """The text of one ``ContentBlock``: ``text``; a ``resource_link``'s ``uri``; an embedded
    ``resource``'s ``text`` (else its ``uri``); ``[image]`` / ``[audio]`` for media."""
    if not isinstance(block, Mapping):
        return ""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text") or "")
    if kind == "resource_link":
        return str(block.get("uri") or "")
    if kind == "resource":
        resource = block.get("resource") or {}
        return str(resource.get("text") or resource.get("uri") or "")
    return f"[{kind}]" if isinstance(kind, str) else ""


def content_text(content: Any, diffs: bool = True, root: Path | str | None = None) -> str:
    """The text of a ``ToolCallContent`` list, items joined by a blank line: ``content`` items
    by :func:`block_text`, ``diff`` items rendered by :func:`render_diff` (left out when not
    ``diffs``), ``terminal`` items as ``[terminal <id>]``."""
    parts = []
    for item in content if isinstance(content, list) else []:
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "content":
            parts.append(block_text(item.get("content")))
        elif item.get("type") == "diff" and diffs:
            parts.append(render_diff(item, root))
        elif item.get("type") == "terminal":
            parts.append(f"[terminal {item.get('terminalId')}]")
    return "\n\n".join(p for p in parts if p)


def diff_text(content: Any, root: Path | str | None = None) -> str | None:
    """The ``diff`` items of a ``ToolCallContent`` list as one unified diff, or None."""
    diffs = [render_diff(item, root) for item in content if isinstance(item, Mapping)
             and item.get("type") == "diff"] if isinstance(content, list) else []
    return "".join(diffs) or None


def tool_name(call: Mapping[str, Any]) -> str:
    """What a tool call is called in Tether's events: its ``kind`` (``execute``, ``edit``
    …), else its ``title``, else ``tool``."""
    for key in ("kind", "title"):
        value = call.get(key)
        if isinstance(value, str) and value:
            return value
    return "tool"


def tool_input(call: Mapping[str, Any]) -> dict[str, Any]:
    """``tool_use``'s ``input``: ``title``, ``kind``, ``locations`` and ``rawInput`` (when
    the agent sent it)."""
    out: dict[str, Any] = {"title": call.get("title"), "kind": call.get("kind"),
                           "locations": call.get("locations") or []}
    if "rawInput" in call:
        out["rawInput"] = call["rawInput"]
    return out


def tool_use(call: Mapping[str, Any]) -> dict[str, Any]:
    """The ``tool_use`` payload (DESIGN.md section 3) of a ``tool_call``."""
    return {"tool_use_id": str(call.get("toolCallId")), "name": tool_name(call),
            "input": tool_input(call)}


def tool_result(call: Mapping[str, Any], root: Path | str | None = None) -> dict[str, Any]:
    """The ``tool_result`` payload of a finished ``tool_call`` / ``tool_call_update``:
    ``content`` its content's text (diffs rendered), ``is_error`` for ``failed``. Gemini CLI
    0.61.0 sends a completed shell call with empty ``content`` (PROTOCOLS.md 4.3): then its
    ``rawOutput``, if any, is the text."""
    text = content_text(call.get("content"), root=root)
    raw = call.get("rawOutput")
    if not text and raw is not None:
        text = raw if isinstance(raw, str) else str(raw)
    return {"tool_use_id": str(call.get("toolCallId")), "content": text,
            "is_error": call.get("status") == "failed"}


def permission_fields(params: Mapping[str, Any],
                      root: Path | str | None = None) -> dict[str, Any]:
    """``Ask`` fields of a ``session/request_permission``'s params (``{sessionId, toolCall,
    options}``): ``tool_name``, ``input`` (the call's ``title``, ``kind``, ``content`` text,
    ``locations``, ``rawInput``), ``tool_use_id``, ``options`` (``[{option_id, label,
    kind}]``), and ``diff`` when the content holds one."""
    call = params.get("toolCall") or {}
    if not isinstance(call, Mapping):
        call = {}
    title = call.get("title")
    content = call.get("content")
    fields: dict[str, Any] = {
        "tool_name": title if isinstance(title, str) and title else tool_name(call),
        "input": {**tool_input(call), "content": content_text(content, diffs=False)},
        "tool_use_id": str(call["toolCallId"]) if call.get("toolCallId") else None,
        "options": [{"option_id": str(o.get("optionId")), "label": str(o.get("name") or ""),
                     "kind": str(o.get("kind") or "")}
                    for o in params.get("options") or [] if isinstance(o, Mapping)],
    }
    description = content_text(content, diffs=False)
    if description:
        fields["description"] = description
    diff = diff_text(content, root)
    if diff:
        fields["diff"] = diff
    return fields


def choose_option(options: list[Mapping[str, Any]], answer: Answer) -> dict[str, Any]:
    """The ``RequestPermissionResponse`` for ``answer``: the person's own ``option_id`` when
    it is one of ``options``; else by kind: allow for the session → ``allow_always``, allow →
    ``allow_once``, deny → ``reject_once`` (each falling back to the other of its side); a
    ``cancelled`` answer, or no option of the wanted side, → ``{"outcome": "cancelled"}``."""
    ids = {str(o.get("optionId")): o for o in options}
    if answer.decision != "cancelled" and answer.option_id in ids:
        return selected(str(answer.option_id))
    if answer.decision == "allow":
        kinds = (("allow_always", "allow_once") if answer.scope == "session"
                 else ("allow_once", "allow_always"))
    elif answer.decision == "deny":
        kinds = ("reject_once", "reject_always")
    else:
        kinds = ()
    for kind in kinds:
        for option_id, option in ids.items():
            if option.get("kind") == kind:
                return selected(option_id)
    return {"outcome": {"outcome": "cancelled"}}


def selected(option_id: str) -> dict[str, Any]:
    return {"outcome": {"outcome": "selected", "optionId": option_id}}


def plan_entries(entries: Any) -> list[dict[str, Any]]:
    """A ``plan`` update's ``entries`` (``[{content, priority, status}]``, ACP ``PlanEntry``:
    priority ``high|medium|low``, status ``pending|in_progress|completed``), keys kept."""
    return [{"content": str(e.get("content") or ""), "priority": e.get("priority"),
             "status": e.get("status")}
            for e in entries if isinstance(e, Mapping)] if isinstance(entries, list) else []


def usage(result: Mapping[str, Any]) -> dict[str, Any]:
    """Token counts of a prompt response: the schema's ``usage`` (``inputTokens``,
    ``outputTokens`` …), else Gemini CLI's ``_meta.quota.token_count`` (``input_tokens``,
    ``output_tokens``; observed with gemini 0.61.0), as ``{"input_tokens", "output_tokens"}``."""
    given = result.get("usage")
    if isinstance(given, Mapping):
        return {"input_tokens": given.get("inputTokens"),
                "output_tokens": given.get("outputTokens")}
    meta = result.get("_meta")
    quota = meta.get("quota") if isinstance(meta, Mapping) else None
    counts = quota.get("token_count") if isinstance(quota, Mapping) else None
    if isinstance(counts, Mapping):
        return {"input_tokens": counts.get("input_tokens"),
                "output_tokens": counts.get("output_tokens")}
    return {}
