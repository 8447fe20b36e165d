"""What an Agent Client Protocol agent offers: its session's modes and models (the answer to
``session/new`` / ``session/load``) and its slash commands (``available_commands_update``).

Shapes (ACP schema, agentclientprotocol/agent-client-protocol ``src/v1/agent.rs``):
``{sessionId, modes?: {availableModes: [{id, name, description?}], currentModeId},
models?: {availableModels: [{modelId, name, description?}], currentModelId},
configOptions?: [{id, name, category?, type: "select", currentValue, options: [{value,
name}]}]}``. Gemini CLI 0.61.0 sends ``modes`` and ``models`` and no ``configOptions``, and
changes the model with the unstable ``session/set_model`` [obs, tests/fixtures/gemini/].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.agents.modes import DEFAULT_MODEL

#: Tether's "the agent's own default" model: no model asked for.
DEFAULT_ENTRY = {"id": DEFAULT_MODEL, "name": "Default (the agent's own)", "default": True}


@dataclass(frozen=True, slots=True)
class SessionOffer:
    """One session's modes and models.

    :ivar modes: ``[{"id", "name", "description"?}]``, or None when the agent lists none.
    :ivar models: ``[{"id", "name", "description"?}]`` after :data:`DEFAULT_ENTRY`, or None.
    :ivar model_method: how to change the model: ``session/set_config_option`` (with
        ``model_config_id``), ``session/set_model``, or None (it cannot be changed live).
    """

    modes: list[dict[str, Any]] | None = None
    current_mode: str | None = None
    models: list[dict[str, Any]] | None = None
    current_model: str | None = None
    model_method: str | None = None
    model_config_id: str | None = None
    mode_ids: list[str] = field(default_factory=list)


def _entry(ident: Any, name: Any, description: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": str(ident), "name": str(name or ident)}
    if isinstance(description, str) and description:
        out["description"] = description
    return out


def read_session(result: Mapping[str, Any]) -> SessionOffer:
    """The :class:`SessionOffer` of a ``session/new`` or ``session/load`` answer."""
    modes, current_mode = None, None
    given = result.get("modes")
    if isinstance(given, Mapping):
        modes = [_entry(m["id"], m.get("name"), m.get("description"))
                 for m in given.get("availableModes") or []
                 if isinstance(m, Mapping) and m.get("id")] or None
        current = given.get("currentModeId")
        current_mode = current if isinstance(current, str) else None
    models: list[dict[str, Any]] = []
    current_model: Any = None
    method, config_id = None, None
    listed = result.get("models")
    if isinstance(listed, Mapping):
        method = "session/set_model"
        current_model = listed.get("currentModelId")
        models = [_entry(m["modelId"], m.get("name"), m.get("description"))
                  for m in listed.get("availableModels") or []
                  if isinstance(m, Mapping) and m.get("modelId")]
    for option in result.get("configOptions") or []:
        if isinstance(option, Mapping) and option.get("category") == "model":
            method, config_id = "session/set_config_option", str(option.get("id"))
            current_model = option.get("currentValue", current_model)
            models = models or [_entry(o["value"], o.get("name"), o.get("description"))
                                for o in option.get("options") or []
                                if isinstance(o, Mapping) and o.get("value")]
    return SessionOffer(modes, current_mode, [dict(DEFAULT_ENTRY), *models] if models else None,
                        current_model if isinstance(current_model, str) else None,
                        method, config_id, [m["id"] for m in modes or []])


def commands(listed: Any) -> list[dict[str, Any]]:
    """``available_commands_update``'s ``availableCommands`` (``[{name, description,
    input?: {hint}}]``, ACP schema) as ``[{"name", "description", "argument_hint"?}]``."""
    out = []
    for c in listed if isinstance(listed, list) else []:
        if not isinstance(c, Mapping) or not c.get("name"):
            continue
        entry = {"name": str(c["name"]), "description": str(c.get("description") or "")}
        hint = (c.get("input") or {}).get("hint") if isinstance(c.get("input"), Mapping) else None
        if isinstance(hint, str) and hint:
            entry["argument_hint"] = hint
        out.append(entry)
    return out
