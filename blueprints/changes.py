"""The agent's changes, reviewable (issue 18, item 3): a session's changed files, one
file's diff, and a read-only view of any file in its folder.

- ``GET /api/sessions/<id>/changes``: ``{"base", "git", "files": [{"path", "status",
  "additions", "deletions", "old_path"?}], "truncated"}``.
- ``GET /api/sessions/<id>/changes/<path>``: ``{"path", "diff", "truncated", "binary"}``.
- ``GET /api/sessions/<id>/files/<path>``: ``{"path", "size", "binary", "truncated",
  "text"}``.

Everything is :mod:`tether.changes`; a view picks git or the tool calls and encodes the
answer. A path that leaves the folder is a 400 ``path_not_allowed``, never a read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify

from blueprints import current_core
from tether import changes

bp = Blueprint("changes", __name__)

#: Sessions whose tool writes are kept between requests (the least recently used go).
TRACKED_SESSIONS = 256

_writes: OrderedDict[tuple[str, str], changes.ToolWrites] = OrderedDict()
_writes_lock = threading.Lock()


def _session(session_id: str) -> tuple[Any, Path, str]:
    session = current_core().get(session_id)
    folder = changes.check_folder(Path(session.workspace))
    return session, folder, session.base_commit


def _tool_writes(session: Any, folder: Path) -> dict[str, Any]:
    key = (current_core().epoch, session.id)
    with _writes_lock:
        tracker = _writes.get(key)
        if tracker is None:
            tracker = _writes[key] = changes.ToolWrites(folder)
            while len(_writes) > TRACKED_SESSIONS:
                _writes.popitem(last=False)
        _writes.move_to_end(key)
    return tracker.update(session.log)


@bp.get("/api/sessions/<session_id>/changes")
def list_changes(session_id: str) -> Response:
    session, folder, base = _session(session_id)
    if base:
        result = changes.git_changes(folder, base)
    else:
        result = changes.tool_changes(folder, _tool_writes(session, folder))
    return jsonify(result.as_dict())


@bp.get("/api/sessions/<session_id>/changes/<path:path>")
def file_diff(session_id: str, path: str) -> Response:
    session, folder, base = _session(session_id)
    if base:
        diff = changes.git_diff(folder, base, path)
    else:
        diff = changes.tool_diff(folder, _tool_writes(session, folder), path)
    return jsonify(diff.as_dict())


@bp.get("/api/sessions/<session_id>/files/<path:path>")
def read_file(session_id: str, path: str) -> Response:
    _, folder, _ = _session(session_id)
    return jsonify(changes.read_file(folder, path).as_dict())
