"""Conversations an agent CLI saved on its own (issue 18, item 4): Claude Code's transcripts
of a folder, listed for the folder picker and turned into read-only ``history`` events for a
Tether session that continues one (``--resume``).

Layout, observed with Claude Code 2.1.328 (PROTOCOLS.md 1.4; tests/tether/test_conversations.py
holds the observed names):

- ``<config>/projects/<name>/<session id>.jsonl``, where ``<config>`` is ``$CLAUDE_CONFIG_DIR``
  when set, else ``$HOME/.claude``, of the agent's environment (the server's own, less
  Tether's secrets: :func:`tether.agents.base.inherited_env`).
- ``<name>`` is the folder's path with every UTF-16 code unit that is not an ASCII letter or
  digit replaced by ``-`` (``/src/my_app.v2`` is ``-src-my-app-v2``; ``é`` is one ``-``, an
  emoji two); past 200 characters it is cut to 200 and ``-<hash>`` is added, the hash being
  Java's ``String.hashCode`` of the path, made positive, in base 36 (:func:`project_dir_name`).
- One JSON object per line. Only ``type: "user"`` and ``type: "assistant"`` lines are the
  conversation (``message.content``: a string, or blocks ``text``/``tool_use``/``tool_result``/
  ``thinking``/``image``; an assistant message is written one line per block, sharing
  ``message.id``). Everything else is the CLI's bookkeeping (``queue-operation``,
  ``attachment``, ``api-request``, ``api-request-blob`` (a ``message`` with ``role``, yet not
  a message), ``last-prompt``, ``cost-state``, ``custom-title`` …). ``isSidechain`` (a
  subagent's) and ``isMeta`` (the CLI's own notes) lines are not the conversation either.
- A file is about 140 KB after a one-line exchange (skill listings, prompt snapshots of 57 KB
  on one line): files are streamed, lines over :data:`MAX_LINE_BYTES` are skipped unread, a
  listing reads at most :data:`MAX_SCAN_BYTES` of each file, and a history at most the last
  :data:`MAX_HISTORY_BYTES` and :data:`MAX_HISTORY_ENTRIES` entries.

A line that is not a JSON object, not UTF-8, or not of a known shape is skipped, never an
error: these are another program's files, written while it runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from tether.errors import NotFound

logger = logging.getLogger(__name__)

#: Characters of a project folder's name Claude Code keeps before it adds a hash.
CLAUDE_NAME_CHARS = 200
#: Most conversations one listing returns, newest first (``truncated`` past it).
MAX_CONVERSATIONS = 100
#: Bytes of one file a listing reads (title, message count); past it ``partial`` is true.
MAX_SCAN_BYTES = 32 * 1024 * 1024
#: Bytes from the end of a file that history is made from.
MAX_HISTORY_BYTES = 16 * 1024 * 1024
#: A longer line is skipped (without being held in memory whole).
MAX_LINE_BYTES = 4 * 1024 * 1024
#: Most ``history`` events one continued conversation gets: its newest entries.
MAX_HISTORY_ENTRIES = 200
#: Longest text of one history entry, in characters (``clipped`` when cut).
MAX_HISTORY_TEXT_CHARS = 8000
#: Longest title, in characters ("…" included).
TITLE_CHARS = 80
#: Longest one-line summary of a tool call's input, in characters.
TOOL_SUMMARY_CHARS = 200
#: Lines read before letting other greenlets run (the gevent worker patches time.sleep).
YIELD_EVERY_LINES = 2000
#: Listings remembered, by file (path, size, modification time).
CACHE_ENTRIES = 1024

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A cheap look before json.loads: most lines (attachments, snapshots) are not wanted.
_WANTED = re.compile(rb'"type"\s*:\s*"(?:user|assistant|custom-title|cost-state)"')
_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.S)
_COMMAND = re.compile(r"<command-name>(.*?)</command-name>", re.S)
_COMMAND_ARGS = re.compile(r"<command-args>(.*?)</command-args>", re.S)


def is_conversation_id(value: str) -> bool:
    """True for an id Claude Code gives a session: a lowercase UUID (``8-4-4-4-12`` hex)."""
    return bool(_ID.fullmatch(value))


def _java_hash(text: str) -> int:
    """Java's ``String.hashCode`` over UTF-16 code units, as a signed 32-bit integer (what
    ``(h << 5) - h + c | 0`` gives in JavaScript)."""
    h = 0
    data = text.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(data), 2):
        h = (h * 31 + int.from_bytes(data[i:i + 2], "little")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def project_dir_name(folder: str) -> str:
    """The name of ``folder``'s directory under ``<config>/projects`` (Claude Code 2.1.328:
    ``replace(/[^a-zA-Z0-9]/g, "-")`` over the path's UTF-16 code units; past
    :data:`CLAUDE_NAME_CHARS`, cut there and ``-<Math.abs(hash).toString(36)>`` added)."""
    data = folder.encode("utf-16-le", "surrogatepass")
    units = (int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data), 2))
    name = "".join(chr(u) if u < 128 and chr(u).isalnum() else "-" for u in units)
    if len(name) <= CLAUDE_NAME_CHARS:
        return name
    return f"{name[:CLAUDE_NAME_CHARS]}-{_base36(abs(_java_hash(folder)))}"


def claude_config_dir(env: Mapping[str, str]) -> Path:
    """Claude Code's configuration directory for an agent started with ``env``:
    ``$CLAUDE_CONFIG_DIR``, else ``$HOME/.claude`` (observed with 2.1.328: with
    ``CLAUDE_CONFIG_DIR`` set, transcripts go to ``$CLAUDE_CONFIG_DIR/projects``)."""
    configured = env.get("CLAUDE_CONFIG_DIR")
    if configured:
        return Path(configured)
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".claude"


@dataclass(frozen=True, slots=True)
class Conversation:
    """One saved conversation as the picker lists it. ``updated_at``: the file's modification
    time (Unix seconds); ``messages``: prompts plus replies (an assistant message counts once,
    however many blocks it has); ``partial``: the file was longer than a listing reads, so
    ``messages`` counts its first :data:`MAX_SCAN_BYTES` only."""

    id: str
    title: str
    updated_at: float
    messages: int
    partial: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "updated_at": self.updated_at,
                "messages": self.messages, "partial": self.partial}


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``history`` event's payload: ``role`` ``user`` or ``assistant``, ``text``, ``ts``
    (when it was said, Unix seconds, or None; ``at`` in the payload), and for a tool call
    ``tool`` ``{"name", "summary"}``."""

    role: str
    text: str
    ts: float | None = None
    tool: dict[str, str] | None = None
    clipped: bool = False
    message_id: str | None = None

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "text": self.text}
        if self.ts is not None:
            out["at"] = self.ts  # "ts" is the envelope's: when the event was appended
        if self.tool is not None:
            out["tool"] = dict(self.tool)
        if self.clipped:
            out["clipped"] = True
        return out


@dataclass(slots=True)
class History:
    """What a continued conversation shows before its first turn: its newest ``entries``,
    and how many earlier ones were left out (``omitted``; when ``unread`` the file's start
    was not read, so more were). ``total_cost_usd``: the CLI's running total it last saved
    (its ``cost-state``), None when none was found."""

    conversation: Conversation
    entries: list[Entry] = field(default_factory=list)
    omitted: int = 0
    unread: bool = False
    total_cost_usd: float | None = None

    @property
    def truncated(self) -> bool:
        return self.omitted > 0 or self.unread

    def payloads(self) -> list[dict[str, Any]]:
        """The ``history`` events' payloads, oldest first; the first says ``truncated`` and
        ``omitted`` when earlier entries are not shown."""
        out = [entry.payload() for entry in self.entries]
        if self.truncated:
            note = {"truncated": True, "omitted": self.omitted}
            if out:
                out[0].update(note)
            else:
                out.append({"role": "assistant", "text": "", **note})
        return out


# -- lines -----------------------------------------------------------------------------


def _lines(f: BinaryIO, limit: int) -> Iterator[bytes]:
    """The lines of ``f`` up to ``limit`` bytes read; a line over :data:`MAX_LINE_BYTES` is
    skipped (read through in pieces, never held whole); the last, unfinished, line too (the
    CLI may be writing it)."""
    read = 0
    n = 0
    while read < limit:
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        read += len(line)
        if len(line) > MAX_LINE_BYTES:
            while line and not line.endswith(b"\n"):  # the rest of the long line
                line = f.readline(MAX_LINE_BYTES + 1)
                read += len(line)
            continue
        if not line.endswith(b"\n"):
            return
        n += 1
        if n % YIELD_EVERY_LINES == 0:
            time.sleep(0)  # a greenlet switch under gevent; nothing on plain threads
        yield line


def parse_line(line: bytes) -> dict[str, Any] | None:
    """One JSONL line as an object, or None (not JSON, not UTF-8, not an object, or not a
    kind any listing or history reads)."""
    if not _WANTED.search(line):
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _ts(record: Mapping[str, Any]) -> float | None:
    value = record.get("timestamp")
    if not isinstance(value, str):
        return None
    try:
        return round(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp(), 3)
    except ValueError:
        return None


def _clean(text: str) -> str:
    """Valid Unicode (a lone surrogate from a ``\\ud800`` escape becomes ``?``)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _clip(text: str, limit: int = MAX_HISTORY_TEXT_CHARS) -> tuple[str, bool]:
    text = _clean(text)
    return (text, False) if len(text) <= limit else (text[:limit - 1] + "…", True)


def _user_text(text: str) -> str:
    """A prompt as a person typed it: without the CLI's ``<system-reminder>`` blocks; a slash
    command (``<command-name>/x</command-name>`` …) as ``/x args``; the CLI's own command
    output and caveats (``<local-command-…>``) as nothing."""
    text = _REMINDER.sub("", text).strip()
    command = _COMMAND.search(text)
    if command:
        args = _COMMAND_ARGS.search(text)
        return " ".join(p for p in (command.group(1).strip(),
                                    args.group(1).strip() if args else "") if p)
    if text.startswith("<local-command-"):
        return ""
    return text


def _tool_summary(name: str, tool_input: Any) -> str:
    """One line saying what a tool call does: its command, file, pattern or description."""
    if isinstance(tool_input, Mapping):
        for key in ("command", "file_path", "notebook_path", "path", "pattern", "url",
                    "description", "prompt"):
            value = tool_input.get(key)
            if isinstance(value, str) and value.strip():
                line = " ".join(value.split())
                return _clip(line, TOOL_SUMMARY_CHARS)[0]
    return ""


def entries_of(record: Mapping[str, Any]) -> list[Entry]:
    """The history entries one line gives: a prompt (``user``), reply text and tool calls
    (``assistant``); nothing for tool results, thinking, sidechains, meta lines and
    anything unknown."""
    kind = record.get("type")
    if kind not in ("user", "assistant") or record.get("isSidechain") is True \
            or record.get("isMeta") is True:
        return []
    message = record.get("message")
    if not isinstance(message, Mapping):
        return []
    content = message.get("content")
    ts = _ts(record)
    message_id = message.get("id") if isinstance(message.get("id"), str) else None
    if kind == "user":
        if isinstance(content, str):
            texts = [content]
        elif isinstance(content, list):
            texts = [str(b.get("text", "")) for b in content
                     if isinstance(b, Mapping) and b.get("type") == "text"]
            if any(isinstance(b, Mapping) and b.get("type") == "image" for b in content):
                texts.append("[image]")
        else:
            return []
        text = _user_text("\n\n".join(t for t in texts if t))
        if not text:
            return []
        clipped, cut = _clip(text)
        return [Entry("user", clipped, ts, clipped=cut)]
    out: list[Entry] = []
    for block in content if isinstance(content, list) else [{"type": "text", "text": content}]:
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str) \
                and block["text"].strip():
            clipped, cut = _clip(block["text"])
            out.append(Entry("assistant", clipped, ts, clipped=cut, message_id=message_id))
        elif block.get("type") == "tool_use":
            name = _clip(str(block.get("name") or "tool"), 100)[0]
            out.append(Entry("assistant", "", ts, message_id=message_id,
                             tool={"name": name,
                                   "summary": _tool_summary(name, block.get("input"))}))
    return out


def shorten(text: str, limit: int = TITLE_CHARS) -> str:
    """A title from a prompt: its first line that is not blank, whitespace collapsed, cut at
    a word boundary when it can be and ended with "…" when cut."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    title = " ".join(line.split())
    if len(title) <= limit:
        return title
    cut = title[:limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


class _Counter:
    """Prompts and replies of a file, its first prompt and any title a person gave it."""

    def __init__(self) -> None:
        self.messages = 0
        self.first_prompt = ""
        self.custom_title = ""
        self.total_cost_usd: float | None = None
        self._last_reply: str | None = None

    def add(self, record: Mapping[str, Any], entries: list[Entry]) -> None:
        kind = record.get("type")
        if kind == "custom-title" and isinstance(record.get("customTitle"), str):
            self.custom_title = record["customTitle"]
        elif kind == "cost-state":
            total = record.get("totalCostUSD")
            if isinstance(total, int | float) and not isinstance(total, bool) \
                    and 0 <= total < float("inf"):
                self.total_cost_usd = float(total)
        for entry in entries:
            if entry.role == "user":
                self.messages += 1
                self._last_reply = None
                if not self.first_prompt:
                    self.first_prompt = entry.text
            elif entry.message_id is None or entry.message_id != self._last_reply:
                self.messages += 1
                self._last_reply = entry.message_id

    def title(self) -> str:
        return shorten(self.custom_title) or shorten(self.first_prompt) or "(no prompt)"


# -- one agent's saved conversations -----------------------------------------------------


class SavedConversations(Protocol):
    """An agent's own saved conversations (an agent spec's optional ``conversations()``)."""

    def list(self, folder: Path, limit: int = MAX_CONVERSATIONS
             ) -> tuple[list[Conversation], bool]: ...

    def history(self, folder: Path, conversation_id: str,
                limit: int = MAX_HISTORY_ENTRIES) -> History: ...


class ClaudeConversations:
    """Claude Code's saved conversations under one configuration directory.

    :param config_dir: ``$CLAUDE_CONFIG_DIR`` or ``$HOME/.claude`` of the agent
        (:func:`claude_config_dir`).
    """

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        # Listing entries by file (path, size, modification time): a picker opened again
        # reads only the files that changed.
        self._cache: OrderedDict[tuple[str, int, int], Conversation | None] = OrderedDict()
        self._cache_lock = threading.Lock()

    def folder_dir(self, folder: Path) -> Path:
        """Where the conversations of ``folder`` (resolved) are kept."""
        return self.config_dir / "projects" / project_dir_name(str(folder))

    def list(self, folder: Path, limit: int = MAX_CONVERSATIONS
             ) -> tuple[list[Conversation], bool]:
        """The conversations saved for ``folder``, newest first (by modification time), at
        most ``limit`` files read; those with no prompt and no reply are left out.

        :returns: ``(conversations, truncated)``; truncated: more than ``limit`` files.
        """
        files: list[tuple[float, str, Path]] = []
        try:
            with os.scandir(self.folder_dir(folder)) as it:
                for entry in it:
                    stem = entry.name.removesuffix(".jsonl")
                    if stem == entry.name or not is_conversation_id(stem):
                        continue
                    try:
                        if entry.is_file():
                            files.append((entry.stat().st_mtime, stem, Path(entry.path)))
                    except OSError:
                        continue
        except (FileNotFoundError, NotADirectoryError):
            return [], False
        except OSError as exc:
            logger.warning("conversations of %s not listed: %r", folder, exc)
            return [], False
        files.sort(key=lambda item: (item[0], item[1]), reverse=True)
        found = []
        for _, stem, path in files[:limit]:
            conversation = self._summary(path, stem)
            if conversation is not None and conversation.messages:
                found.append(conversation)
        return found, len(files) > limit

    def _summary(self, path: Path, stem: str) -> Conversation | None:
        """One file's listing entry, read once per (path, size, modification time)."""
        try:
            st = path.stat()
        except OSError:
            return None
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        counter = _Counter()
        try:
            with path.open("rb") as f:
                for line in _lines(f, MAX_SCAN_BYTES):
                    record = parse_line(line)
                    if record is not None:
                        counter.add(record, entries_of(record))
        except OSError as exc:
            logger.info("conversation %s not read: %r", path, exc)
            return None
        found = Conversation(stem, counter.title(), st.st_mtime, counter.messages,
                             st.st_size > MAX_SCAN_BYTES)
        with self._cache_lock:
            self._cache[key] = found
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return found

    def path_of(self, folder: Path, conversation_id: str) -> Path:
        """The file of one conversation of ``folder``.

        :raises NotFound: ``conversation_id`` is not a Claude Code session id, or no such
            conversation was saved for this folder.
        """
        shown = conversation_id[:80]
        if not is_conversation_id(conversation_id):
            raise NotFound(f"{shown!r} is not a conversation id (a UUID)")
        path = self.folder_dir(folder) / f"{conversation_id}.jsonl"
        if not path.is_file():
            raise NotFound(f"no conversation {shown!r} was saved for {str(folder)[:200]!r}")
        return path

    def history(self, folder: Path, conversation_id: str,
                limit: int = MAX_HISTORY_ENTRIES) -> History:
        """The newest ``limit`` entries of a conversation (see :meth:`path_of`).

        :raises NotFound: as :meth:`path_of`, or the file cannot be read.
        """
        path = self.path_of(folder, conversation_id)
        counter = _Counter()
        kept: deque[Entry] = deque(maxlen=limit)
        seen = 0
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                unread = size > MAX_HISTORY_BYTES
                if unread:
                    f.seek(size - MAX_HISTORY_BYTES)
                    f.readline()  # the rest of a line begun before: not a whole line
                for line in _lines(f, MAX_HISTORY_BYTES):
                    record = parse_line(line)
                    if record is None:
                        continue
                    entries = entries_of(record)
                    counter.add(record, entries)
                    seen += len(entries)
                    kept.extend(entries)
                mtime = os.fstat(f.fileno()).st_mtime
        except OSError as exc:
            raise NotFound(f"conversation {conversation_id!r} cannot be read: "
                           f"{exc.strerror or exc}") from None
        conversation = Conversation(conversation_id, counter.title(), mtime,
                                    counter.messages, unread)
        return History(conversation, list(kept), seen - len(kept), unread,
                       counter.total_cost_usd)
