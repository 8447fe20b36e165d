"""Codex's app-server shapes in Tether's: modes, prompt input, items, questions, errors.

Pure functions used by :class:`~tether.agents.codex_driver.CodexDriver`. Sources: the schema
``codex app-server generate-json-schema --out DIR`` writes (codex 0.171.0: ``ThreadItem``,
``UserInput``, ``SandboxPolicy``, ``ToolRequestUserInputQuestion``, the approval decisions),
PROTOCOLS.md 3.2 and 3.3, and the recordings in ``tests/fixtures/codex/``.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from typing import Any

from tether.agents.driver import Answer, Prompt

#: Tether's permission modes for Codex: ``(approvalPolicy, sandbox mode)`` (schema
#: ``AskForApproval`` and ``SandboxMode``; PROTOCOLS.md 3.3). ``default`` asks before every
#: command and file change (``untrusted``); ``on-request`` runs commands in the workspace
#: sandbox and asks only when the model asks to leave it; ``read-only`` asks before every
#: command, which then cannot write; ``full-access`` never asks and has no sandbox.
CODEX_MODES: dict[str, tuple[str, str]] = {
    "default": ("untrusted", "workspace-write"),
    "on-request": ("on-request", "workspace-write"),
    "read-only": ("untrusted", "read-only"),
    "full-access": ("never", "danger-full-access"),
}
#: ``thread/start``'s ``sandbox`` (a string) → ``turn/start``'s ``sandboxPolicy`` (an object).
SANDBOX_POLICIES = {"workspace-write": {"type": "workspaceWrite"},
                    "read-only": {"type": "readOnly"},
                    "danger-full-access": {"type": "dangerFullAccess"}}
#: Agent-side choices an approval card offers (ACP's option kinds, tether.agents.driver.Ask);
#: ``acceptForSession`` works although 0.171.0's ``availableDecisions`` does not list it.
APPROVAL_OPTIONS = [
    {"option_id": "accept", "label": "Allow", "kind": "allow_once"},
    {"option_id": "acceptForSession", "label": "Allow for this session", "kind": "allow_always"},
    {"option_id": "decline", "label": "Deny", "kind": "reject_once"},
]


def mode_settings(permission_mode: str) -> tuple[str, str]:
    """``(approvalPolicy, sandbox)`` for a Tether mode; an unknown one is ``default``."""
    return CODEX_MODES.get(permission_mode, CODEX_MODES["default"])


def prompt_input(prompt: Prompt) -> list[dict[str, Any]]:
    """``turn/start``'s ``input``: images first as ``{"type": "image", "url": "data:…"}``
    (schema ``UserInput`` ``ImageUserInput``), then ``{"type": "text", "text"}``."""
    images = [{"type": "image", "url": f"data:{i['media_type']};base64,{i['data']}"}
              for i in prompt.images]
    return [*images, {"type": "text", "text": prompt.text}]


def error_text(error: Any) -> str:
    """A readable message from a ``TurnError`` or JSON-RPC ``error``: codex 0.171.0 passes an
    HTTP error's body as the message (``'{"error": {"message": …}}'``, observed), so that
    body's own message is taken when it has one."""
    message = error.get("message") if isinstance(error, Mapping) else error
    text = str(message or "the agent reported an error")
    try:
        body = json.loads(text)
        inner = body["error"]["message"] if isinstance(body.get("error"), Mapping) else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return text
    return str(inner) if inner else text


def approval_decision(answer: Answer) -> str:
    """The approval response's ``decision`` (schema ``CommandExecutionApprovalDecision``,
    ``FileChangeApprovalDecision``): ``decline`` for a deny, ``acceptForSession`` for a
    session-wide allow (scope or option), else ``accept``. ``cancel`` is never sent: it would
    also interrupt the turn (PROTOCOLS.md 3.2), which is Stop's job."""
    if answer.decision == "deny" or answer.option_id == "decline":
        return "decline"
    if answer.scope == "session" or answer.option_id == "acceptForSession":
        return "acceptForSession"
    return "accept"


#: A declined item's tool result (the card's "Denied by …" says it already: static/js).
DECLINED = "declined by the user"
#: Shells whose ``-c`` / ``-lc`` wrapper :func:`shell_script` takes off.
SHELLS = frozenset({"bash", "sh", "zsh", "dash"})


def shell_script(command: Any) -> Any:
    """The script a person would recognise: codex 0.171.0 reports a command as the shell call
    that runs it (``/bin/bash -lc 'touch x && echo y'``, observed), the model's own words
    being the last argument; that argument, exactly as the shell runs it. Anything else (not
    three words, another program, not a string) is returned as it is."""
    if not isinstance(command, str):
        return command
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    if len(words) == 3 and os.path.basename(words[0]) in SHELLS and words[1] in ("-c", "-lc"):
        return words[2]
    return command


def clarify_questions(raw: Any) -> list[dict[str, Any]]:
    """Codex's ``[{id, header, question, options?, isOther, isSecret}]`` (schema
    ``ToolRequestUserInputQuestion``) in Claude Code's AskUserQuestion shape."""
    out = []
    for q in raw if isinstance(raw, list) else []:
        if not isinstance(q, Mapping):
            continue
        options = [{"label": str(o.get("label", "")), "description": str(o.get("description", ""))}
                   for o in q.get("options") or [] if isinstance(o, Mapping)]
        out.append({"question": str(q.get("question", "")), "header": str(q.get("header", "")),
                    "options": options, "multiSelect": False})
    return out


def file_changes(raw: Any) -> list[dict[str, Any]]:
    """``[{path, kind, diff}]`` from a ``fileChange`` item (``kind`` ``add``/``delete``/
    ``update``, from the schema's ``PatchChangeKind`` object)."""
    out = []
    for change in raw if isinstance(raw, list) else []:
        if isinstance(change, Mapping):
            kind = change.get("kind")
            out.append({"path": str(change.get("path", "")), "diff": str(change.get("diff", "")),
                        "kind": kind.get("type") if isinstance(kind, Mapping) else kind})
    return out


def diff_text(changes: list[dict[str, Any]], root: str | None = None) -> str:
    """The changes as one unified diff (docs/protocol.md: ``diff``), for the approval card
    and the tool result; paths under ``root`` (the workspace) relative to it.

    codex 0.171.0 gives an added file's whole content as its ``diff`` (observed: ``"hello\n"``),
    a deleted one's likewise, and an update as unified-diff hunks: the first two become
    ``+``/``-`` lines under a ``@@`` header, and each file gets ``---``/``+++`` lines."""
    out = []
    for change in changes:
        path, kind, body = change["path"], change["kind"], change["diff"]
        if root and path.startswith(root.rstrip(os.sep) + os.sep):
            path = os.path.relpath(path, root)
        lines = body.splitlines()
        if kind in ("add", "delete"):
            sign, count = ("+", f"-0,0 +1,{len(lines)}") if kind == "add" else \
                ("-", f"-1,{len(lines)} +0,0")
            old, new = ("/dev/null", path) if kind == "add" else (path, "/dev/null")
            lines = [f"@@ {count} @@", *(sign + line for line in lines)]
        else:
            old = new = path
        if not body.startswith("--- "):
            lines = [f"--- {old}", f"+++ {new}", *lines]
        out.extend(lines)
    return "\n".join(out)


def tool_use_payload(item: Mapping[str, Any]) -> dict[str, Any]:
    """A ``tool_use`` event (DESIGN.md 3) for a ``commandExecution`` item (``Bash``,
    ``{command, cwd}``, the command without its shell wrapper (:func:`shell_script`): the UI
    shows it as a shell command) or a ``fileChange`` item
    (``apply_patch``, ``{changes}``); ``tool_use_id`` is the item id, which the approval
    request names as ``itemId``."""
    if item.get("type") == "fileChange":
        return {"tool_use_id": item.get("id"), "name": "apply_patch",
                "input": {"changes": file_changes(item.get("changes"))}}
    return {"tool_use_id": item.get("id"), "name": "Bash",
            "input": {"command": shell_script(item.get("command")), "cwd": item.get("cwd")}}


def tool_result_payload(item: Mapping[str, Any], root: str | None = None) -> dict[str, Any]:
    """A ``tool_result`` event for a completed item: a command's ``aggregatedOutput`` plus
    ``(exit code N)`` when not 0, a change's diffs; ``is_error`` when the status is
    ``failed``/``declined`` (schema ``CommandExecutionStatus``) or the exit code is not 0."""
    status = item.get("status")
    if item.get("type") == "fileChange":
        content = diff_text(file_changes(item.get("changes")), root)
        is_error = status != "completed"
    else:
        exit_code = item.get("exitCode")
        content = str(item.get("aggregatedOutput") or "")
        if isinstance(exit_code, int) and exit_code != 0:
            content += f"\n(exit code {exit_code})"
        is_error = status in ("failed", "declined") or (isinstance(exit_code, int)
                                                         and exit_code != 0)
    if status == "declined":
        # The change itself is in the tool call and its approval: not again as output.
        content = DECLINED if item.get("type") == "fileChange" else \
            f"{DECLINED}\n{content}".rstrip()
    return {"tool_use_id": item.get("id"), "content": content, "is_error": is_error}


def text_parts(raw: Any) -> list[str]:
    """Reasoning ``summary``/``content``: strings, or ``{"text"}`` parts."""
    out = []
    for part in raw if isinstance(raw, list) else []:
        text = part.get("text") if isinstance(part, Mapping) else part
        if isinstance(text, str) and text:
            out.append(text)
    return out
