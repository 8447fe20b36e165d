"""An agent's slash commands as Tether data: what the composer completes, and what it refuses.

Claude Code lists its commands twice (PROTOCOLS.md 7): the ``initialize`` control response's
``commands`` (``name``, ``description``, ``argumentHint``, ``aliases``) and ``system/init``'s
``slash_commands`` (names only). Neither list says which commands work headless, and the
ones that do not (``/help``, ``/plan``, ``/login`` …) are not listed at all: sent anyway, they
answer "/help isn't available in this environment." So Tether keeps that list itself, as
data with its source (:data:`CLAUDE_HEADLESS_REFUSED`), and :func:`command_list` merges the
three into the ``commands`` event (docs/protocol.md, "Slash commands").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Claude Code commands that do nothing headless, and why, for the person typing them.
#: Source: observed with Claude Code 2.1.328 on 2026-12-07 (PROTOCOLS.md 7,
#: tests/fixtures/claude/slash.jsonl): each answered "/<name> isn't available in this
#: environment." with ``local_command_outcome: {"kind": "unavailable_headless"}``, except
#: ``/focus``, which answered "/focus isn't available here yet". Re-check on a CLI upgrade.
CLAUDE_HEADLESS_REFUSED: Mapping[str, str] = {
    "help": "not available headless: this list is the agent's commands",
    "plan": "plan mode is not available headless yet",
    "login": "cannot log in inside Tether: give Tether's environment a key (README)",
    "logout": "cannot log out inside Tether: the login is Tether's environment (README)",
    "status": "not available headless",
    "permissions": "not available headless: answer the approval cards instead",
    "memory": "not available headless",
    "resume": "not available headless: Tether resumes the conversation by itself",
    "exit": "not available headless: Stop ends a turn, Delete ends the session",
    "focus": "not available headless",
}

_HINT_LIMIT = 200
_DESCRIPTION_LIMIT = 300


def command_list(reported: Any, names: Any,
                 refused: Mapping[str, str]) -> list[dict[str, Any]]:
    """The ``commands`` payload's list: ``[{name, description, argument_hint?, aliases?,
    available, reason?}]``.

    :param reported: the ``initialize`` response's ``commands`` (a list of objects), or None.
    :param names: ``system/init``'s ``slash_commands`` (names only), or None; a name not in
        ``reported`` is added without a description.
    :param refused: names the agent refuses headless, with the reason shown; those not
        listed by the agent are added, marked ``available: false``, so that a person who
        types one learns why before sending it.

    Names are without the slash; the agent's order is kept, refused ones come last. Long
    descriptions are cut (a skill's runs to 1,500 characters).
    """
    out: dict[str, dict[str, Any]] = {}
    for item in reported if isinstance(reported, list) else ():
        if isinstance(item, Mapping) and _name(item.get("name")):
            entry: dict[str, Any] = {"name": item["name"],
                                     "description": _cut(item.get("description"),
                                                         _DESCRIPTION_LIMIT)}
            hint = _cut(item.get("argumentHint"), _HINT_LIMIT)
            if hint:
                entry["argument_hint"] = hint
            aliases = [a for a in item.get("aliases") or () if _name(a)]
            if aliases:
                entry["aliases"] = aliases
            out.setdefault(item["name"], entry)
    for name in names if isinstance(names, list) else ():
        if _name(name):
            out.setdefault(name, {"name": name, "description": ""})
    for name in refused:
        out.setdefault(name, {"name": name, "description": ""})
    listed = []
    for entry in out.values():
        reason = refused.get(entry["name"])
        entry["available"] = reason is None
        if reason is not None:
            entry["reason"] = reason
        listed.append(entry)
    return sorted(listed, key=lambda e: not e["available"])


def _name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100 and not any(
        c.isspace() for c in value)


def _cut(value: Any, limit: int) -> str:
    text = value.strip() if isinstance(value, str) else ""
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"

