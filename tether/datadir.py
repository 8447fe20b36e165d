"""The data dir's permissions: the directory 0700, Tether's files in it 0600.

``TETHER_DATA_DIR`` holds every prompt and tool output (the SQLite store) and the files that
hold secrets (keys, tokens); other users of the machine must not read them. :func:`prepare`
runs once at start (``SessionRegistry``) and tightens what a looser umask or an older Tether
left; :func:`private_file` and :func:`read_or_create` write secret files owner-only from
their first byte.

The process umask is never changed: agents create files in users' folders, which keep their
ordinary modes. Session workspaces (``<data dir>/sessions/<id>/``) keep ordinary modes inside;
the 0700 data dir above them keeps others out.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

#: Mode of the data dir.
DIR_MODE = 0o700
#: Mode of every file Tether owns in it.
FILE_MODE = 0o600

#: The file of the data dir that keeps the token when ``TETHER_TOKEN`` is not set.
TOKEN_FILE = "token"

#: Files of the data dir's top level that are Tether's: the SQLite store, its WAL and
#: shared-memory files and its lock file, and every key or token file.
PRIVATE_PATTERNS = ("tether.sqlite3", "tether.sqlite3-wal", "tether.sqlite3-shm",
                    "tether.sqlite3.lock", "*.key", "*token*", "push-subscriptions.json")


def prepare(data_dir: Path) -> list[str]:
    """Create ``data_dir`` (mode 0700, parents as the umask says) or tighten it to 0700, and
    tighten each of its files named by :data:`PRIVATE_PATTERNS` to 0600 (symbolic links are
    left alone: they may point anywhere).

    :returns: one warning per path whose mode was loosened before, naming the path and both
        modes; the caller logs them.
    :raises OSError: the directory cannot be created, or a mode cannot be changed (another
        user owns it).
    """
    warnings: list[str] = []
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    warning = tighten(data_dir, DIR_MODE)
    if warning:
        warnings.append(warning)
    seen: set[Path] = set()
    for pattern in PRIVATE_PATTERNS:
        for path in sorted(data_dir.glob(pattern)):
            if path in seen or path.is_symlink() or not path.is_file():
                continue
            seen.add(path)
            warning = tighten(path, FILE_MODE)
            if warning:
                warnings.append(warning)
    return warnings


def tighten(path: Path, mode: int) -> str | None:
    """Clear every permission bit of ``path`` that ``mode`` does not have (a 0644 file and
    mode 0600 give 0600; a 0400 file stays 0400).

    :returns: a warning naming the path and its old and new modes, or None if nothing changed.
    :raises OSError: the mode cannot be changed.
    """
    old = stat.S_IMODE(path.stat().st_mode)
    if not old & ~mode:
        return None
    new = old & mode
    path.chmod(new)
    return (f"{path} was open to other users (mode {old:04o}); it holds Tether's private "
            f"data, so it is now {new:04o}")


def private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, owner-only (0600) from its creation: a temporary
    file beside it (``O_CREAT | O_EXCL``, mode 0600: :func:`tempfile.mkstemp`), flushed to
    disk, then renamed over ``path`` (:func:`os.replace`). Readers see the old file or the
    new one, never a part.

    :raises OSError: the directory is not writable, the disk is full.
    """
    temp = _write_temp(path, data)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read_or_create(path: Path, make: Callable[[], str]) -> str:
    """The stripped text of ``path``, a secret kept across restarts (a signing key).

    Missing, it is created owner-only with ``make()``'s value: written as
    :func:`private_file` does, then linked into place only if the name is still free, so two
    processes starting together end up with the same value. A file readable by others is
    tightened to 0600, with a logged warning.

    :raises ValueError: the file is empty (delete it to have a new value made).
    :raises OSError: the file cannot be read or written.
    """
    if not path.exists():
        temp = _write_temp(path, make().strip().encode() + b"\n")
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process made it first: its value wins
        finally:
            temp.unlink()
    warning = tighten(path, FILE_MODE)
    if warning:
        logger.warning(warning)
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"{path} is empty; delete it to have a new one made")
    return text


def _write_temp(path: Path, data: bytes) -> Path:
    """A new 0600 file beside ``path`` holding ``data``, flushed to disk."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def kept_token(data_dir: Path) -> str:
    """The server's token when ``TETHER_TOKEN`` is not set: the one kept in
    ``<data_dir>/token`` (0600), made at the first start (32 random bytes, URL-safe base64,
    43 characters). Kept, so that a restart or an upgrade logs no browser out.

    :raises OSError: the data dir cannot be written.
    :raises ValueError: the file is empty (delete it to have a new token made).
    """
    return read_or_create(data_dir / TOKEN_FILE, lambda: secrets.token_urlsafe(32))
