"""Tether's `local` agent: an offline helper that speaks Claude Code's wire protocol.

It has no model, no network and no API key. It understands a few fixed commands and does
real, permission-gated work in its working directory (the session workspace), so that
Tether's Claude adapter can drive it unchanged (DESIGN.md section 5).

Launch (the argv of PROTOCOLS.md 1.1; the claude flags are accepted and ignored):
    python -m tether.agents.local -p --output-format stream-json --input-format stream-json
        --verbose --permission-prompt-tool stdio --include-partial-messages
        (--session-id=<uuid> | --resume=<uuid>) [--command-timeout=60] [--word-delay=0.02]

Protocol facts it reproduces (one JSON object per line on stdin and stdout):
- stdin carries `user` messages (PROTOCOLS.md 1.2; content is a string or a list of blocks),
  and `control_request`s (`initialize`, `interrupt`) and `control_response`s (2.1-2.3).
- One process serves many turns, one at a time, and exits 0 at stdin EOF (1.1).
- Each turn: `system/init`, then `assistant` events, one per content block, wrapped by
  `stream_event`s when `--include-partial-messages` is given; the full `assistant` event comes
  after the last delta and before `content_block_stop` (1.3); then exactly one `result`.
- A tool call is an `assistant` `tool_use` followed by a `can_use_tool` control request with a
  UUID request id (2.3; `requires_user_interaction` for AskUserQuestion, 2.4). `allow` runs
  `updatedInput`; `deny` yields an `is_error` `tool_result` and the turn goes on; `deny` with
  `interrupt:true` ends the turn. There is no timeout here: the host times out (2.3).
- `interrupt` is answered `{"still_queued":[]}`; a pending request is withdrawn with
  `control_cancel_request`; the turn ends `error_during_execution` (2.5, 1.3).
- `--permission-mode` and `set_permission_mode` (answered `{"mode"}`, then `system/status`
  with `permissionMode`), `--model` and `set_model` (answered `{"model"}`) as Claude Code
  2.1.328 does (PROTOCOLS.md 2.5); modes in MODES. In `plan` mode a command is not run: the
  turn presents it as a plan, an `ExitPlanMode` tool call whose `can_use_tool` input is `{}`
  (the plan is in the `tool_use` block, as with Claude Code); approved, the mode goes back to
  `default` (a `system/status`) and the command runs as in `default`.

Commands (the user text, stripped):
- `$ <command>`: run one shell command with `bash -c` after the host allows it.
- `triage`, `disk`, `memory`, `processes`: 2-4 read-only diagnostics, each asking permission,
  then a summary with one parsed figure per command where one can be parsed.
- `ask <question>? <option> | <option> ...`: one AskUserQuestion round trip (2-4 options).
- `plan <markdown>` (in `plan` mode): present the text as a plan (ExitPlanMode).
- `bench <count> <bytes> <rate>`: a load generator for bench/fanout.py, no tool call: one
  assistant text message of <count> `text_delta` deltas (needs `--include-partial-messages`),
  each `"<seq> <send time> "` (seq from 0; `time.time()` in seconds with 6 decimals, taken
  right before the line is written) padded with `x` to <bytes> characters, <rate> deltas per
  second on a fixed schedule (0: as fast as possible). The full `assistant` message carries a
  one-line summary instead of the concatenated deltas, so a big run does not end in one
  multi-megabyte event.
- anything else: a short help text.
- Each command but `$` and `bench` may be typed with a slash too (`/triage`, `/ask …`,
  `/help`): the `initialize` response's `commands` and `system/init`'s `slash_commands` list
  them, as Claude Code lists its own (PROTOCOLS.md 7), so Tether's composer completes them.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

MODEL = "local"
VERSION = "tether-local"
TOOLS = ["Bash", "AskUserQuestion", "ExitPlanMode"]
#: The permission modes it emulates (Claude Code's names, PROTOCOLS.md 1.4): ``plan`` runs
#: nothing and presents what it would run as a plan (ExitPlanMode; approving it goes back to
#: ``default``, as Claude Code 2.1.328 does); ``bypassPermissions`` runs commands unasked;
#: ``acceptEdits`` is ``default`` here (this agent makes no edits but through commands).
MODES = ("default", "acceptEdits", "plan", "bypassPermissions")
PLAN_APPROVED = "User has approved exiting plan mode. You can now proceed."
OUTPUT_LIMIT = 64 * 1024  # bytes of command output kept in a tool_result
INTERRUPTED = "[Request interrupted by user for tool use]"
HELP = (
    "I am Tether's local agent: no model and no network, just this machine. I can: run a shell "
    "command after you approve it, e.g. `$ ls -la`; run read-only checks with `triage`, `disk`, "
    "`memory` or `processes`, each command asking permission, then summarise them; ask you a "
    "question, e.g. `ask Which database? PostgreSQL | SQLite`. Anything else shows this help."
)
ASK_USAGE = (
    "To ask a question write `ask <question>? <option> | <option>` with 2 to 4 options, "
    "e.g. `ask Which database? PostgreSQL | SQLite`."
)

BENCH_USAGE = (
    "To stream a benchmark write `bench <count> <bytes> <rate>`: <count> text deltas "
    "(1 to 1000000) of <bytes> characters (32 to 65536), <rate> per second (0 to 100000; "
    "0: as fast as possible)."
)

Json = dict[str, Any]

#: The slash commands this agent offers, in the shape of Claude Code's ``initialize``
#: response (PROTOCOLS.md 7): ``/triage`` is ``triage`` and so on; ``/help`` is the help text.
COMMANDS: list[Json] = [
    {"name": "triage", "description": "Uptime, disk, memory and the busiest processes, "
                                      "each command approved, then a summary",
     "argumentHint": ""},
    {"name": "disk", "description": "Disk usage and the workspace's size", "argumentHint": ""},
    {"name": "memory", "description": "Memory use and the kernel's counters",
     "argumentHint": ""},
    {"name": "processes", "description": "The busiest processes by CPU and by memory",
     "argumentHint": ""},
    {"name": "ask", "description": "Have the agent ask you a question, with 2 to 4 options",
     "argumentHint": "<question>? <option> | <option>"},
    {"name": "help", "description": "What this agent can do", "argumentHint": ""},
]


def _log(message: str) -> None:
    print(f"tether-local: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- output parsers (presets)


def _load_average(out: str) -> str | None:
    m = re.search(r"load averages?:\s*(.+)", out)
    return f"load average {m.group(1).strip()}" if m else None


def _fullest_filesystem(out: str) -> str | None:
    best: tuple[int, str] | None = None
    for line in out.splitlines()[1:]:
        parts = line.split()
        for i, part in enumerate(parts):
            if re.fullmatch(r"\d{1,3}%", part) and i + 1 < len(parts):
                pct, mount = int(part[:-1]), " ".join(parts[i + 1 :])
                if best is None or pct > best[0]:
                    best = (pct, mount)
                break
    return f"fullest filesystem {best[1]} at {best[0]}%" if best else None


def _workspace_size(out: str) -> str | None:
    parts = out.split()
    return f"workspace size {parts[0]}" if parts and re.match(r"^[\d.,]+\w*$", parts[0]) else None


def _memory_used(out: str) -> str | None:
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "Mem:" and parts[1].isdigit() and parts[2].isdigit():
            return f"memory used {parts[2]} of {parts[1]} MiB"
    return None


def _memory_available(out: str) -> str | None:
    values = dict(re.findall(r"^(\w+):\s+(\d+) kB", out, re.MULTILINE))
    if "MemAvailable" in values and "MemTotal" in values:
        avail, total = int(values["MemAvailable"]) // 1024, int(values["MemTotal"]) // 1024
        return f"{avail} of {total} MiB available"
    return None


def _top_process(column: int, label: str) -> Callable[[str], str | None]:
    def parse(out: str) -> str | None:
        lines = out.splitlines()
        parts = lines[1].split(None, 10) if len(lines) > 1 else []
        if len(parts) == 11 and re.fullmatch(r"[\d.]+", parts[column]):
            name = os.path.basename(parts[10].split()[0])
            return f"top {label} {name} (pid {parts[1]}) at {parts[column]}%"
        return None

    return parse


@dataclass(frozen=True)
class Step:
    """One preset command: what runs, how it is described, and how to read one figure."""

    command: str
    description: str
    figure: Callable[[str], str | None]


_PS_CPU = "ps aux --sort=-%cpu | head -n "
PRESETS: dict[str, list[Step]] = {
    "triage": [
        Step("uptime", "Show uptime and load average", _load_average),
        Step("df -h", "Show disk usage", _fullest_filesystem),
        Step("free -m", "Show memory use in MiB", _memory_used),
        Step(_PS_CPU + "6", "Show the busiest processes", _top_process(2, "CPU")),
    ],
    "disk": [
        Step("df -h", "Show disk usage", _fullest_filesystem),
        Step("du -sh . 2>/dev/null", "Show the workspace size", _workspace_size),
    ],
    "memory": [
        Step("free -m", "Show memory use in MiB", _memory_used),
        Step("head -n 5 /proc/meminfo", "Show kernel memory counters", _memory_available),
    ],
    "processes": [
        Step(_PS_CPU + "10", "Show the busiest processes by CPU", _top_process(2, "CPU")),
        Step("ps aux --sort=-%mem | head -n 6", "Show the largest processes",
             _top_process(3, "memory")),
    ],
}


# ---------------------------------------------------------------- turn state


class Interrupted(Exception):
    """The host interrupted the turn (or stdin closed while we waited for it)."""


@dataclass
class Turn:
    """Bookkeeping for one turn: its interrupt flag and what goes into its `result`."""

    interrupted: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    messages: int = 0
    words: int = 0
    final_text: str = ""
    abort_reason: str = "aborted_tools"
    denials: list[Json] = field(default_factory=list)


@dataclass
class Pending:
    """One of our control requests awaiting the host's `control_response`."""

    done: threading.Event = field(default_factory=threading.Event)
    response: Json | None = None


@dataclass
class Decision:
    """The host's answer to `can_use_tool`."""

    allow: bool
    updated_input: Json
    message: str = ""
    interrupt: bool = False
    #: (tool name, rule content) pairs the host allowed for the rest of the agent session
    #: ("Allow for this session": an ``addRules`` permission update, behavior allow).
    session_rules: tuple[tuple[str, str], ...] = ()


@dataclass
class Outcome:
    """What became of one Bash tool call (`exit_code` None: it did not run)."""

    command: str
    exit_code: int | None = None
    output: str = ""
    timed_out: bool = False
    denied: str = ""


def _decision(response: Json) -> Decision:
    if response.get("subtype") != "success":
        return Decision(False, {}, str(response.get("error") or "Permission request failed."))
    body = response.get("response")
    body = body if isinstance(body, dict) else {}
    updated = body.get("updatedInput")
    if body.get("behavior") == "allow" and isinstance(updated, dict):
        return Decision(True, updated, session_rules=_session_rules(body.get("updatedPermissions")))
    if body.get("behavior") == "allow":  # PROTOCOLS.md 6.4: the CLI treats this as a deny
        return Decision(False, {}, "Permission was granted without updatedInput.")
    message = str(body.get("message") or "Permission denied.")
    return Decision(False, {}, message, bool(body.get("interrupt")))


def _session_rules(updates: Any) -> tuple[tuple[str, str], ...]:
    """The allow rules in a response's ``updatedPermissions`` (Claude Code's permission
    updates: ``{"type": "addRules", "rules": [{"toolName", "ruleContent"}], "behavior":
    "allow", "destination": "session"}``); anything else in it is ignored."""
    rules = []
    for update in updates if isinstance(updates, list) else ():
        if not (isinstance(update, dict) and update.get("type") == "addRules"
                and update.get("behavior") == "allow"):
            continue
        for rule in update.get("rules") or ():
            if isinstance(rule, dict) and isinstance(rule.get("toolName"), str) \
                    and isinstance(rule.get("ruleContent"), str):
                rules.append((rule["toolName"], rule["ruleContent"]))
    return tuple(rules)


def rule_allows(rule: tuple[str, str], name: str, tool_input: Json) -> bool:
    """Whether an allow rule covers a tool call, as Claude Code matches Bash rules: the exact
    command, or with a ``:*`` suffix, any command that starts with what precedes it."""
    tool, content = rule
    command = tool_input.get("command")
    if tool != name or not isinstance(command, str):
        return False
    if content.endswith(":*"):
        return command.startswith(content[:-2])
    return command == content


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Collector(threading.Thread):
    """Drains a command's combined output, keeping the first `limit` bytes."""

    def __init__(self, fd: int, limit: int) -> None:
        super().__init__(daemon=True)
        self.fd, self.limit, self.total, self.kept = fd, limit, 0, bytearray()

    def run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            if not data:
                return
            self.total += len(data)
            self.kept += data[: max(0, self.limit - len(self.kept))]


# ---------------------------------------------------------------- the agent


class LocalAgent:
    """Serves turns from `read_input`'s queue; writes every event to `out` under one lock."""

    def __init__(
        self, session_id: str, command_timeout: float, word_delay: float, partial: bool,
        out: IO[bytes], mode: str = "default", model: str = MODEL,
    ) -> None:
        self.session_id, self.cwd = session_id, os.getcwd()
        self.mode, self.model = mode, model
        self.command_timeout, self.word_delay, self.partial = command_timeout, word_delay, partial
        self._out, self._out_lock, self._state = out, threading.Lock(), threading.Lock()
        self._pending: dict[str, Pending] = {}
        # Rules the host allowed for this agent session ("Allow for this session"): a call
        # they cover runs without asking again, as Claude Code does.
        self._session_rules: set[tuple[str, str]] = set()
        self._turn: Turn | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._eof = False
        self._inbox: queue.Queue[Json | None] = queue.Queue()

    # ---- wire

    def emit(self, event: Json) -> None:
        """Write one JSON line to stdout and flush; a closed stdout is ignored."""
        data = (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._out_lock:
            try:
                self._out.write(data)
                self._out.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass

    def _base(self, kind: str, **fields: Any) -> Json:
        return {"type": kind, **fields, "parent_tool_use_id": None,
                "session_id": self.session_id, "uuid": str(uuid.uuid4())}

    def read_input(self, stream: IO[bytes]) -> None:
        """Reader thread: route every stdin line; at EOF abort waits and end the serve loop."""
        for raw in stream:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                _log(f"skipping a line that is not JSON: {line[:200]!r}")
                continue
            try:
                self._route(message if isinstance(message, dict) else {"type": None})
            except (AttributeError, TypeError) as exc:  # a malformed field: skip, keep reading
                _log(f"skipping a malformed {message.get('type')!r} line: {exc}")
        with self._state:
            self._eof = True
            for pending in self._pending.values():
                pending.done.set()
        self._inbox.put(None)

    def _route(self, message: Json) -> None:
        kind = message.get("type")
        if kind == "user":
            self._inbox.put(message)
        elif kind == "control_request":
            self._control_request(message)
        elif kind == "control_response":
            response = message.get("response") or {}
            with self._state:
                pending = self._pending.get(str(response.get("request_id")))
            if pending is None:
                _log(f"ignoring a control_response for an unknown request: {response!r:.200}")
                return
            pending.response = response
            pending.done.set()
        else:
            _log(f"skipping a line of unknown type {kind!r}")

    def _control_request(self, message: Json) -> None:
        request_id = message.get("request_id")
        subtype = (message.get("request") or {}).get("subtype")
        request = message.get("request") or {}
        status = None
        if subtype == "initialize":
            body = {"commands": COMMANDS, "pid": os.getpid(), "claude_code_version": VERSION,
                    "models": [{"value": MODEL, "resolvedModel": MODEL,
                                "displayName": "Local (no model)"}],
                    "current_permission_mode": self.mode}
        elif subtype == "interrupt":
            body = {"still_queued": []}
        elif subtype == "set_permission_mode" and request.get("mode") in MODES:
            with self._state:
                self.mode = str(request["mode"])
            body, status = {"mode": self.mode}, self.mode
        elif subtype == "set_permission_mode":
            self.emit({"type": "control_response", "response": {
                "subtype": "error", "request_id": request_id, "error_code": "invalid_mode",
                "error": "Cannot set permission mode: must be one of " + ", ".join(MODES)}})
            return
        elif subtype == "set_model":
            model = request.get("model")
            self.model = model if isinstance(model, str) and model else MODEL
            body = {"model": self.model}
        else:
            self.emit({"type": "control_response", "response": {
                "subtype": "error", "request_id": request_id, "error_code": "unsupported_request",
                "error": f"Unsupported control request subtype: {subtype}"}})
            return
        self.emit({"type": "control_response", "response": {
            "subtype": "success", "request_id": request_id, "response": body}})
        if status is not None:
            self._status(status)
        if subtype == "interrupt":
            self._interrupt()

    def _status(self, mode: str) -> None:
        """``system/status`` after a mode change, as Claude Code sends it (PROTOCOLS.md 2.5)."""
        self.emit(self._base("system", subtype="status", status=None, permissionMode=mode))

    def _interrupt(self) -> None:
        with self._state:
            if self._turn is None:
                return
            self._turn.interrupted.set()
            for pending in self._pending.values():
                pending.done.set()
            if self._proc is not None:
                _kill_group(self._proc)

    def kill_running(self) -> None:
        """Kill and reap the running command's process group, if any (for a signal handler)."""
        proc = self._proc
        if proc is not None:
            _kill_group(proc)
            try:
                os.waitpid(proc.pid, 0)
            except ChildProcessError:
                pass

    # ---- turns

    def serve(self) -> None:
        """Run queued turns in order until stdin reaches EOF."""
        while (message := self._inbox.get()) is not None:
            body = message.get("message")
            content = body.get("content", "") if isinstance(body, dict) else ""
            if isinstance(content, list):
                content = "\n".join(str(b.get("text", "")) for b in content
                                    if isinstance(b, dict) and b.get("type") == "text")
            self.run_turn(str(content).strip())

    def run_turn(self, text: str) -> None:
        """Run one turn for the user's `text`: system/init, the work, one result."""
        turn = Turn()
        with self._state:
            self._turn = turn
        self.emit(self._base("system", subtype="init", cwd=self.cwd, tools=TOOLS, mcp_servers=[],
                             model=self.model, permissionMode=self.mode,
                             slash_commands=[c["name"] for c in COMMANDS],
                             apiKeySource="none", claude_code_version=VERSION))
        subtype, reason = "success", "completed"
        try:
            self._dispatch(turn, text)
        except Interrupted:
            subtype, reason = "error_during_execution", turn.abort_reason
        finally:
            with self._state:
                self._turn = None
        self.emit({"type": "result", "subtype": subtype, "is_error": subtype != "success",
                   "duration_ms": int((time.monotonic() - turn.started) * 1000),
                   "duration_api_ms": 0, "num_turns": turn.messages, "result": turn.final_text,
                   "session_id": self.session_id,  # no model, no cost: no total_cost_usd
                   "usage": {"input_tokens": 0, "output_tokens": turn.words},
                   "permission_denials": turn.denials, "terminal_reason": reason,
                   "uuid": str(uuid.uuid4())})

    def _dispatch(self, turn: Turn, text: str) -> None:
        name = text[1:].split(None, 1)[0].lower() if text.startswith("/") and text[1:2].strip() \
            else ""
        if name in {c["name"] for c in COMMANDS}:
            text = text[1:]  # `/triage` is `triage`, `/ask …` is `ask …`, `/help` the help
        word = text.lower()
        if self.mode == "plan" and (text.startswith("$") and text[1:].strip()
                                    or word in PRESETS or word.startswith("plan ")):
            self._plan(turn, text)
        elif text.startswith("$") and text[1:].strip():
            self._shell(turn, text[1:].strip())
        elif word in PRESETS:
            self._preset(turn, word)
        elif word == "ask" or word.startswith(("ask ", "ask\t", "ask\n")):
            self._ask(turn, text[3:].strip())
        elif word == "bench" or word.startswith(("bench ", "bench\t")):
            self._bench(turn, text[5:].split())
        else:
            self._say(turn, HELP)

    # ---- assistant messages

    def _stream(self, msg_id: str, event: Json) -> None:
        if self.partial:
            self.emit(self._base("stream_event", event=event) | {"api_message_id": msg_id})

    def _message(self, turn: Turn, block: Json, chunks: list[str], stop_reason: str) -> None:
        """Emit one single-block assistant message (index 0), streaming `chunks` as deltas."""
        msg_id, turn.messages = f"msg_{uuid.uuid4().hex[:24]}", turn.messages + 1
        self._stream(msg_id, {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": MODEL, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}})
        start = {**block, "text": ""} if block["type"] == "text" else {**block, "input": {}}
        self._stream(msg_id, {"type": "content_block_start", "index": 0, "content_block": start})
        sent: list[str] = []
        is_text = block["type"] == "text"  # a tool_use block is always emitted whole
        for chunk in chunks:
            if is_text and (turn.interrupted.is_set() or (
                    sent and self.partial and turn.interrupted.wait(self.word_delay))):
                break
            delta = ({"type": "text_delta", "text": chunk} if is_text
                     else {"type": "input_json_delta", "partial_json": chunk})
            self._stream(msg_id, {"type": "content_block_delta", "index": 0, "delta": delta})
            sent.append(chunk)
        if is_text:
            block = {**block, "text": "".join(sent)}
            turn.words += len(sent)
        self.emit(self._base("assistant", message={
            "id": msg_id, "type": "message", "role": "assistant", "model": MODEL,
            "content": [block], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": len(sent)}}))
        self._stream(msg_id, {"type": "content_block_stop", "index": 0})
        self._stream(msg_id, {"type": "message_delta", "usage": {"output_tokens": len(sent)},
                              "delta": {"stop_reason": stop_reason, "stop_sequence": None}})
        self._stream(msg_id, {"type": "message_stop"})
        if len(sent) < len(chunks):
            turn.abort_reason = "aborted_streaming"
            raise Interrupted

    def _bench(self, turn: Turn, args: list[str]) -> None:
        """The `bench` command (module docstring): stamped deltas, paced or in a burst."""
        try:
            count, size, rate = int(args[0]), int(args[1]), float(args[2])
        except (IndexError, ValueError):
            count = 0
        if len(args) != 3 or not (1 <= count <= 1_000_000 and 32 <= size <= 65536
                                  and 0 <= rate <= 100_000):
            self._say(turn, BENCH_USAGE)
            return
        msg_id, turn.messages = f"msg_{uuid.uuid4().hex[:24]}", turn.messages + 1
        self._stream(msg_id, {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": MODEL, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}})
        self._stream(msg_id, {"type": "content_block_start", "index": 0,
                              "content_block": {"type": "text", "text": ""}})
        started, sent = time.monotonic(), 0
        for seq in range(count):
            delay = started + seq / rate - time.monotonic() if rate else 0
            if turn.interrupted.wait(delay) if delay > 0 else turn.interrupted.is_set():
                break
            head = f"{seq} {time.time():.6f} "
            self._stream(msg_id, {"type": "content_block_delta", "index": 0, "delta": {
                "type": "text_delta", "text": head + "x" * (size - len(head))}})
            sent += 1
        turn.words += sent
        summary = f"bench: sent {sent} of {count} text deltas of {size} characters."
        self.emit(self._base("assistant", message={
            "id": msg_id, "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": summary}], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": sent}}))
        self._stream(msg_id, {"type": "content_block_stop", "index": 0})
        self._stream(msg_id, {"type": "message_delta", "usage": {"output_tokens": sent},
                              "delta": {"stop_reason": "end_turn", "stop_sequence": None}})
        self._stream(msg_id, {"type": "message_stop"})
        turn.final_text = summary
        if sent < count:
            turn.abort_reason = "aborted_streaming"
            raise Interrupted

    def _say(self, turn: Turn, text: str) -> None:
        """Stream `text` word by word (`--word-delay` seconds apart) as one assistant message."""
        self._message(turn, {"type": "text", "text": text}, re.findall(r"\S+\s*", text), "end_turn")
        turn.final_text = text

    def _tool_result(self, tool_use_id: str, content: str, is_error: bool) -> None:
        self.emit(self._base("user", message={"role": "user", "content": [{
            "tool_use_id": tool_use_id, "type": "tool_result", "content": content,
            "is_error": is_error}]}))

    def _abort_tool(self, turn: Turn, tool_use_id: str, content: str = INTERRUPTED) -> None:
        self._tool_result(tool_use_id, content, True)
        turn.abort_reason = "aborted_tools"
        raise Interrupted

    # ---- tools

    def _request_tool(
        self, turn: Turn, name: str, tool_input: Json, extra: Json,
        request_input: Json | None = None,
    ) -> tuple[str, Decision]:
        """Emit the tool_use, ask the host, and settle interrupts and denials.

        :param request_input: the ``input`` of the ``can_use_tool`` request when it is not
            the tool's (ExitPlanMode's is ``{}``).
        """
        tool_use_id = f"toolu_{uuid.uuid4().hex[:24]}"
        block = {"type": "tool_use", "id": tool_use_id, "name": name, "input": tool_input}
        self._message(turn, block, [json.dumps(tool_input)], "tool_use")
        with self._state:
            allowed = any(rule_allows(r, name, tool_input) for r in self._session_rules) or (
                self.mode == "bypassPermissions" and name == "Bash")
        if allowed:
            return tool_use_id, Decision(True, tool_input)
        request_id, pending = str(uuid.uuid4()), Pending()
        with self._state:
            stopped = turn.interrupted.is_set() or self._eof
            if not stopped:
                self._pending[request_id] = pending
        if stopped:
            self._abort_tool(turn, tool_use_id)
        self.emit({"type": "control_request", "request_id": request_id, "request": {
            "subtype": "can_use_tool", "tool_name": name, "display_name": name,
            "input": tool_input if request_input is None else request_input, **extra,
            "tool_use_id": tool_use_id}})
        pending.done.wait()
        with self._state:
            self._pending.pop(request_id, None)
        if pending.response is None:
            self.emit({"type": "control_cancel_request", "request_id": request_id})
            self._abort_tool(turn, tool_use_id)
        decision = _decision(pending.response or {})
        if decision.session_rules:
            with self._state:
                self._session_rules.update(decision.session_rules)
        if not decision.allow:
            turn.denials.append({"tool_name": name, "tool_use_id": tool_use_id,
                                 "tool_input": tool_input})
            if decision.interrupt:
                self._abort_tool(turn, tool_use_id, decision.message)
            self._tool_result(tool_use_id, decision.message, True)
        return tool_use_id, decision

    def _bash(self, turn: Turn, command: str, description: str) -> Outcome:
        """One permission-gated Bash tool call; returns what ran and how it ended."""
        suggestion = {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": command}],
                      "behavior": "allow", "destination": "session"}
        tool_use_id, decision = self._request_tool(
            turn, "Bash", {"command": command, "description": description},
            {"description": description, "permission_suggestions": [suggestion]})
        if not decision.allow:
            return Outcome(command, denied=decision.message)
        edited = decision.updated_input.get("command")
        outcome = Outcome(edited if isinstance(edited, str) and edited.strip() else command)
        try:
            self._execute(turn, outcome)
        except Interrupted:
            self._abort_tool(turn, tool_use_id)
        notes = [outcome.output.rstrip("\n")]
        if outcome.timed_out:
            notes.append(f"[timed out after {self.command_timeout:g} s; process group killed]")
        notes.append(f"[exit code {outcome.exit_code}]")
        self._tool_result(tool_use_id, "\n".join(n for n in notes if n), outcome.exit_code != 0)
        return outcome

    def _execute(self, turn: Turn, outcome: Outcome) -> None:
        """Run `outcome.command` in its own process group, bounded by `--command-timeout` s."""
        with self._state:
            if turn.interrupted.is_set():
                raise Interrupted
            proc = subprocess.Popen(
                ["bash", "-c", outcome.command], cwd=self.cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0, start_new_session=True)
            self._proc = proc
        assert proc.stdout is not None
        collector = _Collector(proc.stdout.fileno(), OUTPUT_LIMIT)
        collector.start()
        try:
            proc.wait(timeout=self.command_timeout)
        except subprocess.TimeoutExpired:
            outcome.timed_out = True
            _kill_group(proc)
            proc.wait()
        finally:
            with self._state:
                self._proc = None
        collector.join(timeout=2)  # a detached grandchild may keep the pipe open
        if not collector.is_alive():
            proc.stdout.close()
        if turn.interrupted.is_set():
            raise Interrupted
        code = proc.returncode
        outcome.exit_code = 128 - code if code < 0 else code  # killed by signal N: 128 + N
        outcome.output = bytes(collector.kept).decode("utf-8", "replace")
        if collector.total > OUTPUT_LIMIT:
            outcome.output += (f"\n[output truncated: first {OUTPUT_LIMIT} of "
                               f"{collector.total} bytes shown]")

    # ---- commands

    def _shell(self, turn: Turn, command: str) -> None:
        outcome = self._bash(turn, command, "Run a shell command")
        if outcome.exit_code is None:
            # The denial and its message are on the approval card already: not repeated.
            self._say(turn, f"I did not run `{command}`: it was denied.")
        elif outcome.timed_out:
            self._say(turn, f"`{outcome.command}` timed out after {self.command_timeout:g} s "
                            f"and was killed (exit code {outcome.exit_code}).")
        else:
            self._say(turn, f"`{outcome.command}` finished with exit code {outcome.exit_code}.")

    def _preset(self, turn: Turn, name: str) -> None:
        steps = PRESETS[name]
        outcomes = [self._bash(turn, step.command, step.description) for step in steps]
        ran = [o for o in outcomes if o.exit_code is not None]
        parts = [f"{name.capitalize()}: ran {len(ran)} of {len(steps)} commands."]
        for step, outcome in zip(steps, outcomes, strict=True):
            if outcome.exit_code is None:
                continue
            try:
                figure = step.figure(outcome.output)
            except Exception:  # defensive: an unparsable figure is omitted
                figure = None
            status = "timed out" if outcome.timed_out else (
                f"exit code {outcome.exit_code}" if outcome.exit_code else "")
            detail = "; ".join(x for x in (figure, status) if x) or "done"
            parts.append(f"`{outcome.command}`: {detail}.")
        denied = [f"`{o.command}`" for o in outcomes if o.exit_code is None]
        if denied:
            parts.append(f"Denied: {', '.join(denied)}.")
        self._say(turn, " ".join(parts))

    def _plan(self, turn: Turn, text: str) -> None:
        """Plan mode: present what would run (or the ``plan`` text) through ExitPlanMode;
        approved, leave plan mode and do it."""
        word = text.lower()
        if word.startswith("plan "):
            plan, work = text[5:].strip(), None
        else:
            commands = ([text[1:].strip()] if text.startswith("$")
                        else [step.command for step in PRESETS[word]])
            plan = "## Plan\n\nRun, each after your approval:\n\n" + "\n".join(
                f"{n}. `{c}`" for n, c in enumerate(commands, 1))
            work = text
        tool_use_id, decision = self._request_tool(
            turn, "ExitPlanMode", {"plan": plan}, {"requires_user_interaction": True},
            request_input={})
        if not decision.allow:
            self._say(turn, "I kept planning: nothing was run.")
            return
        with self._state:
            self.mode = "default"
        self._status("default")
        self._tool_result(tool_use_id, PLAN_APPROVED, False)
        if work is None:
            self._say(turn, "The plan is approved.")
        else:
            self._dispatch(turn, work)

    def _ask(self, turn: Turn, spec: str) -> None:
        question, _, rest = spec.partition("?")
        options = list(dict.fromkeys(o.strip() for o in rest.split("|") if o.strip()))
        if not question.strip() or not 2 <= len(options) <= 4:
            self._say(turn, ASK_USAGE)
            return
        question = question.strip() + "?"
        tool_input = {"questions": [{
            "question": question, "header": question[:12],
            "options": [{"label": o, "description": ""} for o in options], "multiSelect": False}]}
        tool_use_id, decision = self._request_tool(
            turn, "AskUserQuestion", tool_input, {"requires_user_interaction": True})
        if not decision.allow:
            self._say(turn, f"The question was dismissed: {decision.message}")
            return
        answers = decision.updated_input.get("answers")
        answer = str(answers.get(question, "")) if isinstance(answers, dict) else ""
        self._tool_result(tool_use_id, f'User has answered your questions: "{question}"='
                          f'"{answer}". You can now continue with these answers in mind.', False)
        self._say(turn, f"You answered: {answer}" if answer else "You gave no answer.")


# ---------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the claude-compatible argv; `--command-timeout` and `--word-delay` are seconds."""
    p = argparse.ArgumentParser(prog="python -m tether.agents.local", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-p", "--print", action="store_true", help="accepted for claude compatibility")
    for flag in ("--output-format", "--input-format", "--permission-prompt-tool",
                 "--allowedTools", "--disallowedTools"):
        p.add_argument(flag, help="accepted and ignored")
    p.add_argument("--permission-mode", help=f"one of {', '.join(MODES)} (default: default)")
    p.add_argument("--model", help=f"reported as the model (default: {MODEL})")
    p.add_argument("--verbose", action="store_true", help="accepted and ignored")
    p.add_argument("--include-partial-messages", action="store_true",
                   help="wrap assistant output in stream_event deltas")
    session = p.add_mutually_exclusive_group()
    session.add_argument("--session-id", help="the new session's id (default: a fresh UUID)")
    session.add_argument("--resume", help="the resumed session's id")
    p.add_argument("--command-timeout", type=float, default=60.0,
                   help="seconds a shell command may run before its group is killed (default 60)")
    p.add_argument("--word-delay", type=float, default=0.02,
                   help="seconds between streamed words (default 0.02)")
    args, unknown = p.parse_known_args(argv)
    if unknown:
        _log(f"ignoring arguments: {unknown}")
    if args.command_timeout <= 0 or args.word_delay < 0:
        p.error("--command-timeout must be > 0 and --word-delay >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Serve turns on stdin/stdout until stdin EOF; returns the exit code (0)."""
    args = parse_args(argv)
    mode = args.permission_mode if args.permission_mode in MODES else "default"
    agent = LocalAgent(args.session_id or args.resume or str(uuid.uuid4()), args.command_timeout,
                       args.word_delay, args.include_partial_messages, sys.stdout.buffer,
                       mode=mode, model=args.model or MODEL)

    def on_signal(signum: int, _frame: object) -> None:
        agent.kill_running()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=agent.read_input, args=(sys.stdin.buffer,), name="stdin",
                     daemon=True).start()
    agent.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
