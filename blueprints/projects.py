"""Project folders (issue 18): the folder picker's listing and the recent folders.

The path checks are :mod:`tether.projects`'; a view parses the query and encodes the answer.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from blueprints import current_core
from tether.cursor import parse_flag

bp = Blueprint("projects", __name__)


@bp.get("/api/projects")
def list_folders() -> Response:
    """The folders in ``?path=`` (inside a project root), or without it the roots:
    ``{"path", "parent", "entries": [{"name", "path", "git", "branch"?}], "truncated"}``."""
    listing = current_core().projects.list(request.args.get("path") or None,
                                           hidden=parse_flag(request.args.get("hidden"), "hidden"))
    return jsonify(listing)


@bp.get("/api/projects/conversations")
def conversations() -> Response:
    """The conversations ``?agent=`` (default ``claude``) saved on its own for the folder
    ``?path=``, newest first: ``{"path", "agent", "conversations": [{"id", "title",
    "updated_at", "messages", "partial"}], "truncated"}``. ``POST /api/sessions`` with
    ``resume`` continues one."""
    path = request.args.get("path", "")
    agent = request.args.get("agent") or "claude"
    return jsonify(current_core().conversations(path, agent))


@bp.get("/api/projects/recent")
def recent_folders() -> Response:
    """The folders of the sessions, newest first, each once, while still allowed:
    ``{"entries": [{"name", "path", "git", "branch"?}]}``."""
    core = current_core()
    folders = (s.workspace for s in core.list() if s.project)
    return jsonify(entries=[f.to_dict() for f in core.projects.recent(folders)])
