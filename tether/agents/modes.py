"""Permission modes and models: what a session may run under, per agent.

Claude Code 2.1.328 [obs, with the CLI against the fake Messages API]:

- ``--permission-mode`` lists ``acceptEdits|auto|bypassPermissions|manual|dontAsk|plan`` in
  ``--help`` and accepts ``default`` too; the control request ``set_permission_mode`` takes
  ``acceptEdits, auto, bypassPermissions, default, dontAsk, plan`` (anything else is an
  ``invalid_mode`` error naming those six). ``manual`` is reported as ``default``, so Tether
  offers the six ``set_permission_mode`` takes.
- ``bypassPermissions`` and ``auto`` run commands without asking a person (``auto`` lets a
  classifier decide): :data:`UNATTENDED_MODES`, refused unless ``TETHER_ALLOW_BYPASS=1``.
  ``dontAsk`` denies whatever would ask, so it is safe.
- The ``initialize`` response's ``models`` is a list of ``{value, resolvedModel,
  displayName, description, …}``; its ``value: "default"`` entry is the CLI's own default.
  ``set_model`` answers ``{"model": <resolved name>}``; without a ``model`` it goes back to
  the default.

:data:`CLAUDE_MODELS` is the list 2.1.328 answered, the static one a session sees before any
process of that agent ran (``models_source: "static"`` in ``GET /api/agents``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Claude Code's permission modes (``set_permission_mode``, 2.1.328), ``default`` first.
CLAUDE_PERMISSION_MODES = ("default", "acceptEdits", "plan", "auto", "dontAsk",
                           "bypassPermissions")
#: Gemini CLI's modes (``session/new``'s ``availableModes``, observed with gemini 0.61.0),
#: ``default`` first: ``autoEdit`` approves edits by itself, ``plan`` is read-only, ``yolo``
#: approves every tool call.
GEMINI_PERMISSION_MODES = ("default", "autoEdit", "plan", "yolo")
#: Modes in which tools run without asking a person: refused unless TETHER_ALLOW_BYPASS=1
#: (Claude Code's ``bypassPermissions`` and ``auto``; Codex's ``full-access``, approval policy
#: ``never`` with no sandbox, tether.agents.codex; Gemini CLI's ``yolo``).
UNATTENDED_MODES = frozenset({"bypassPermissions", "auto", "full-access", "yolo"})
#: The model id meaning "the agent's own default" (no ``--model`` flag).
DEFAULT_MODEL = "default"

#: What Claude Code 2.1.328's ``initialize`` listed (its ``value`` and ``displayName``).
CLAUDE_MODELS: tuple[dict[str, Any], ...] = (
    {"id": "default", "name": "Default (recommended)", "default": True},
    {"id": "opus", "name": "Opus"},
    {"id": "fable", "name": "Fable"},
    {"id": "sonnet", "name": "Sonnet"},
    {"id": "haiku", "name": "Haiku"},
)

#: What Gemini CLI 0.61.0's ``session/new`` listed (``availableModels``), after Tether's
#: ``default`` (no ``--model``: the CLI's own choice, ``auto``).
GEMINI_MODELS: tuple[dict[str, Any], ...] = (
    {"id": "default", "name": "Default (the agent's own)", "default": True},
    {"id": "auto", "name": "Auto"},
    {"id": "gemini-3.1-pro-preview-customtools", "name": "gemini-3.1-pro-preview"},
    {"id": "gemini-3-flash-preview", "name": "gemini-3-flash-preview"},
    {"id": "gemini-2.5-pro", "name": "gemini-2.5-pro"},
    {"id": "gemini-3.8-flash", "name": "gemini-3.8-flash"},
    {"id": "gemini-3.5-flash-lite", "name": "gemini-3.5-flash-lite"},
)


def models_from_initialize(models: Any) -> list[dict[str, Any]] | None:
    """``[{"id", "name", "default"?}]`` from an ``initialize`` response's ``models``; None
    when it holds none usable. The ``default`` entry is marked; when there is none the first
    is."""
    found: list[dict[str, Any]] = []
    for item in models if isinstance(models, list) else []:
        if not isinstance(item, Mapping) or not isinstance(item.get("value"), str):
            continue
        value = item["value"]
        if not value or any(m["id"] == value for m in found):
            continue
        name = item.get("displayName")
        entry: dict[str, Any] = {"id": value, "name": name if isinstance(name, str) and name
                                 else value}
        description = item.get("description")
        if isinstance(description, str) and description:
            entry["description"] = description
        found.append(entry)
    if not found:
        return None
    marked = next((m for m in found if m["id"] == DEFAULT_MODEL), found[0])
    marked["default"] = True
    return found


def default_model(models: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> str:
    """The id marked ``default`` (the first when none is)."""
    return next((m["id"] for m in models if m.get("default")), models[0]["id"] if models
                else DEFAULT_MODEL)
