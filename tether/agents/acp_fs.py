"""The client side of the Agent Client Protocol's ``fs/*`` methods, confined to one folder.

An agent that was told ``clientCapabilities.fs`` asks the client to read and write files
(ACP schema, ``ReadTextFileRequest {sessionId, path, line?, limit?}`` → ``{content}``;
``WriteTextFileRequest {sessionId, path, content}`` → ``null``). Tether answers only for
paths that resolve inside the session's workspace: symlinks and ``..`` are resolved first, so
a link that points out, or ``../x``, is refused with ``-32602`` and nothing is read or
written. A relative path is taken relative to the workspace (the schema asks for absolute
paths).

A missing file inside the workspace reads as empty text, not an error. Do not "fix" this to
``-32002`` (resource not found): Gemini CLI 0.61.0's ``write_file`` reads the file first and
fails on any error there, so it could never create a file (observed with gemini 0.61.0,
tests/fixtures/gemini/write_file.jsonl; google-gemini/gemini-cli#17588), and Zed, the
reference client, answers a missing path with an empty buffer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: JSON-RPC error codes (JSON-RPC 2.0; ACP's ``ErrorCode``).
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

#: Largest file served by ``fs/read_text_file``, in bytes.
MAX_READ_BYTES = 10 * 1024 * 1024


class FsError(Exception):
    """A refused ``fs/*`` request: ``code`` and ``message`` for the JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def confined(workspace: Path, path: Any) -> Path:
    """``path`` resolved (symlinks, ``..``), when it lies inside ``workspace`` (resolved too).

    :raises FsError: ``-32602`` for a path that is not a non-empty string, or that resolves
        outside the workspace.
    """
    if not isinstance(path, str) or not path or "\0" in path:
        raise FsError(INVALID_PARAMS, "path must be a non-empty string")
    root = workspace.resolve()
    resolved = (root / path).resolve()  # an absolute path replaces root
    if not resolved.is_relative_to(root):
        raise FsError(INVALID_PARAMS, f"{path} is outside the session's folder ({root}); "
                                      "Tether reads and writes only inside it")
    return resolved


def read_text_file(workspace: Path, params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"content": text}``: the file, or ``limit`` lines from line ``line`` (1-based).

    :raises FsError: outside the workspace, not a regular file (a folder, a FIFO, a device:
        ``-32602``), too big, or unreadable.
    """
    path = confined(workspace, params.get("path"))
    if not path.exists():
        return {"content": ""}  # see the module docstring
    if not path.is_file():  # a folder, or a FIFO or device that would block the reader
        raise FsError(INVALID_PARAMS, f"{path} is not a regular file")
    try:
        if path.stat().st_size > MAX_READ_BYTES:
            raise FsError(INTERNAL_ERROR, f"{path} is larger than {MAX_READ_BYTES} bytes")
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise FsError(INTERNAL_ERROR, f"cannot read {path}: {e.strerror or e}") from None
    line, limit = params.get("line"), params.get("limit")
    if isinstance(line, int) or isinstance(limit, int):
        lines = text.splitlines(keepends=True)
        start = max(line - 1, 0) if isinstance(line, int) else 0
        end = start + max(limit, 0) if isinstance(limit, int) else None
        text = "".join(lines[start:end])
    return {"content": text}


def write_text_file(workspace: Path, params: Mapping[str, Any]) -> None:
    """Write ``content`` to ``path`` (its missing folders made, inside the workspace).

    :raises FsError: outside the workspace, content not a string, or unwritable.
    """
    path = confined(workspace, params.get("path"))
    content = params.get("content")
    if not isinstance(content, str):
        raise FsError(INVALID_PARAMS, "content must be a string")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    except OSError as e:
        raise FsError(INTERNAL_ERROR, f"cannot write {path}: {e.strerror or e}") from None
