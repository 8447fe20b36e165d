"""Agent path, per driver: lines/s through the translation, and agent write to log append.

Issue 5: "Agent path: lines/s through the Claude stream-json translation, and agent-write to
log-append latency"; issue 19: "The agent path for each driver: lines/s through the
translation, and the added latency from the CLI's stdout to a client (p50/p99) against the
CLI's own stdout timing measured in the same run". No HTTP and no client: what happens
between an agent's stdout and its session's log, for each driver of tether/agents/driver.py:
``claude`` (:class:`~tether.agents.claude_driver.ClaudeDriver`: Claude Code's stream-json,
and the ``local`` agent), ``codex`` (:class:`~tether.agents.codex_driver.CodexDriver`:
``codex app-server``) and ``acp`` (:class:`~tether.agents.acp.AcpDriver`: Gemini CLI and
every ``TETHER_AGENT_SERVERS`` agent). Runs on gevent, monkey-patched as gunicorn's gevent
worker runs Tether (``--threads`` runs it on plain threads instead), pinned to core 0 with
the agents it starts.

- **Translation, in process.** Recorded stdout lines go through each layer alone:
  ``json.loads`` (the floor: the baseline), ``+ translate`` (the driver's ``receive``, on a
  driver past its handshake and prompted: the recorded handshake answers are replayed into
  it first), ``+ append`` (every ``Emit`` into a MemoryEventLog: the event built and encoded
  once), and the whole ``Turn`` (tether/runner.py, its agent process replaced by the list of
  lines: the prompt, the driver lock, type dispatch, a yield every 16 lines, the
  ``turn_end``). Two mixes per driver, each ``--lines`` lines ending with the line that ends
  a turn (``result``; ``turn/completed``; the ``session/prompt`` response): ``deltas``, the
  commonest line, a recorded text delta (``content_block_delta`` ``text_delta``,
  tests/fixtures/claude/text.jsonl; ``item/agentMessage/delta``,
  tests/fixtures/codex/text.jsonl; ``session/update`` ``agent_message_chunk``,
  tests/fixtures/gemini/text.jsonl); ``turns``, every stdout line of every recorded scenario
  of that agent in recorded order, repeated, less what is not a turn's output here: control
  messages and ``result`` (Claude Code), responses to the recorder's requests, requests for a
  person and ``turn/completed`` (Codex), responses and the agent's requests (ACP). The ACP
  lines take the driver's session id, and Codex's and ACP's tool call ids get the repeat's
  number, so each repeat's tool calls are new calls. Best of ``--repeats`` runs, the layers
  taking turns.
- **End to end.** A session of a :class:`~tether.sessions.SessionRegistry` (memory store)
  runs a real agent process: for ``claude`` the ``local`` agent, whose ``bench <count> 200
  <rate>`` command writes stamped ``text_delta`` lines (the stamp is ``time.time()`` right
  before the write); for ``codex`` the ``codex`` agent of the catalog with its binary set to
  bench/agents/codex_stub.py (an app-server that streams the same stamped texts as
  ``item/agentMessage/delta``); for ``acp`` a ``TETHER_AGENT_SERVERS`` agent running
  bench/agents/acp_stub.py (``agent_message_chunk``). The runner reads, translates and
  appends them. The store's clock records each append's exact time (the event's ``ts`` is
  rounded to the millisecond), so stamp to append is exact; a watcher thread on the log
  (``wait_for``, then ``read_after``: what a stream does) gives stamp to seen. The baseline,
  in the same sitting: the same agent and prompt read straight from its pipe
  (tether/process.py ``AgentProcess.lines``), with no driver, no runner and no log. Each
  case, and each mix in process, starts collected and frozen (:func:`fresh_heap`).

    .venv/bin/python -m bench.agent_path                  # about 2 minutes
    .venv/bin/python -m bench.agent_path --drivers codex --lines 20000 --cases 0:20000
    .venv/bin/python -m bench.agent_path --threads        # plain threads, not gevent

Prints a translation table, then an end-to-end table per driver, then one JSON line (lines
per second; latency in ms).
"""

# gevent patches before anything else is imported (threading's primitives, subprocess):
# ruff: noqa: E402
from __future__ import annotations

import sys

GEVENT = __name__ == "__main__" and "--threads" not in sys.argv[1:]
if GEVENT:  # as gunicorn's gevent worker runs Tether
    from gevent import monkey

    monkey.patch_all()

import argparse
import gc
import json
import re
import shlex
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.fanout import cores, machine, pinned, stop_on_signals
from bench.loadclient import spread_ms
from tests.e2e.live import ROOT
from tether.agents.acp import AcpDriver
from tether.agents.catalog import default_catalog
from tether.agents.claude import control_request, user_message
from tether.agents.claude_driver import ClaudeDriver
from tether.agents.codex_driver import CodexDriver
from tether.agents.driver import Driver, DriverContext, Emit, Prompt, Send
from tether.config import Settings
from tether.process import AgentProcess
from tether.prompts import PromptRegistry
from tether.runner import AgentHost, Turn
from tether.sessions import SessionRegistry
from tether.stores.memory import MemoryEventLog, MemoryStore

FIXTURES = ROOT / "tests" / "fixtures"
STUBS = ROOT / "bench" / "agents"
#: End-to-end cases: (events/s, 0 for a burst; events).
CASES = [(100.0, 300), (1000.0, 2000), (0.0, 20000)]
#: The text of each stamped delta, in characters (the local agent's ``bench`` <bytes>).
DELTA_CHARS = 200
#: A stamped delta on an agent's stdout: ``"<seq> <time.time()> "`` at the start of the
#: text (``"text"``: Claude Code's ``text_delta`` and ACP's chunk; ``"delta"``: Codex's).
STAMP = re.compile(rb'"(?:text|delta)":"(\d+) (\d+\.\d+) ')
#: The ACP agent of the end-to-end run, as TETHER_AGENT_SERVERS names it.
ACP_AGENT = "acp-stub"
#: Where the drivers of the in-process run say their workspace is (never touched).
WORKSPACE = Path(tempfile.gettempdir())
Message = dict[str, Any]


# -- the recordings ---------------------------------------------------------------------------

def recorded(agent: str, scenario: str, direction: str = "out") -> list[Message]:
    """The messages of one recorded scenario written one way (``out``: the agent's stdout;
    ``in``: what the recorder sent it), in order."""
    out = []
    for line in (FIXTURES / agent / f"{scenario}.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["dir"] == direction:
            out.append(entry["msg"])
    return out


def every_recorded(agent: str) -> list[Message]:
    """The stdout messages of every recorded scenario of ``agent``, scenario by scenario."""
    return [m for path in sorted((FIXTURES / agent).glob("*.jsonl"))
            for m in recorded(agent, path.stem)]


def answers(agent: str, scenario: str) -> dict[str, Message]:
    """``{method: the agent's response}`` for the recorder's JSON-RPC requests (the first of
    each method)."""
    asked = {m["id"]: m["method"] for m in recorded(agent, scenario, "in")
             if "id" in m and "method" in m}
    out: dict[str, Message] = {}
    for m in recorded(agent, scenario):
        if "method" not in m and m.get("id") in asked:
            out.setdefault(asked[m["id"]], m)
    return out


def wire(message: Message) -> bytes:
    """A message as the CLI prints it: compact JSON, UTF-8 (the runner strips the newline)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def is_response(m: Message) -> bool:
    return "id" in m and "method" not in m


def is_request(m: Message) -> bool:
    return "id" in m and "method" in m


# -- the drivers, each past its handshake -----------------------------------------------------

def context(agent: str) -> DriverContext:
    return DriverContext(agent=agent, workspace=WORKSPACE)


def sent_id(actions: list[Any]) -> int:
    """The id of the one JSON-RPC request among a driver's actions."""
    return next(a.message["id"] for a in actions if isinstance(a, Send) and "id" in a.message)


def claude_driver() -> Driver:
    """Ready at once: the session id is on Claude Code's command line."""
    driver = ClaudeDriver(context("claude"))
    driver.start(None, False)
    return driver


def codex_driver() -> Driver:
    """``initialize`` and ``thread/start`` answered as codex 0.171.0 answered them."""
    driver = CodexDriver(context("codex"))
    recorded_answers = answers("codex", "text")
    rid = sent_id(driver.start(None, False))
    rid = sent_id(driver.receive({**recorded_answers["initialize"], "id": rid}))
    driver.receive({**recorded_answers["thread/start"], "id": rid})
    if not driver.ready:
        raise RuntimeError("the codex driver is not past its handshake")
    return driver


#: The session id the ACP driver is given, and every recorded ``session/update`` names.
ACP_SESSION = "bench-acp-session"


def acp_driver() -> Driver:
    """``initialize`` and ``session/new`` answered as gemini 0.61.0 answered them."""
    driver = AcpDriver(context("acp"))
    recorded_answers = answers("gemini", "text")
    rid = sent_id(driver.start(None, False))
    rid = sent_id(driver.receive({**recorded_answers["initialize"], "id": rid}))
    new = recorded_answers["session/new"]
    driver.receive({**new, "id": rid, "result": {**new["result"], "sessionId": ACP_SESSION}})
    if not driver.ready:
        raise RuntimeError("the ACP driver is not past its handshake")
    return driver


def prompted(make: Callable[[], Driver]) -> Callable[[], tuple[Driver, list[Any]]]:
    """A driver past its handshake and sent a prompt (as the runner's turn does), with what
    its prompt sent."""
    def build() -> tuple[Driver, list[Any]]:
        driver = make()
        return driver, driver.prompt(Prompt("bench"))
    return build


# -- the mixes --------------------------------------------------------------------------------

def repeated(every: list[Message], lines: int,
             tag: Callable[[Message, int], Message] | None) -> list[bytes]:
    """``lines`` lines of ``every`` repeated; ``tag(message, repeat)`` makes a repeat's
    copy (its own tool call ids)."""
    out: list[bytes] = []
    for repeat in range(lines // len(every) + 1):
        out.extend(wire(tag(json.loads(wire(m)), repeat)) if tag else wire(m) for m in every)
        if len(out) >= lines:
            break
    return out[:lines]


def claude_mixes(lines: int) -> dict[str, list[bytes]]:
    text = recorded("claude", "text")
    result = wire(next(m for m in text if m["type"] == "result"))
    delta = wire(next(m for m in text if m["type"] == "stream_event"
                      and m["event"]["type"] == "content_block_delta"))
    control = {"control_request", "control_response", "control_cancel_request", "result"}
    every = [m for m in every_recorded("claude") if m["type"] not in control]
    return {"deltas": [delta] * (lines - 1) + [result],
            "turns": repeated(every, lines - 1, None) + [result]}


def codex_tag(message: Message, repeat: int) -> Message:
    item = (message.get("params") or {}).get("item")
    if isinstance(item, dict) and "id" in item:
        item["id"] = f"{item['id']}-{repeat}"
    return message


def codex_mixes(lines: int) -> dict[str, list[bytes]]:
    text = recorded("codex", "text")
    end = wire(next(m for m in text if m.get("method") == "turn/completed"))
    delta = wire(next(m for m in text if m.get("method") == "item/agentMessage/delta"))
    every = [m for m in every_recorded("codex") if not is_response(m) and not is_request(m)
             and m.get("method") != "turn/completed"]
    return {"deltas": [delta] * (lines - 1) + [end],
            "turns": repeated(every, lines - 1, codex_tag) + [end]}


def acp_tag(message: Message, repeat: int) -> Message:
    params = message.get("params")
    if isinstance(params, dict):
        if "sessionId" in params:
            params["sessionId"] = ACP_SESSION
        update = params.get("update")
        if isinstance(update, dict) and "toolCallId" in update:
            update["toolCallId"] = f"{update['toolCallId']}-{repeat}"
    return message


def acp_mixes(lines: int) -> dict[str, list[bytes]]:
    text = recorded("gemini", "text")
    _, sent = prompted(acp_driver)()
    end = wire({**answers("gemini", "text")["session/prompt"], "id": sent_id(sent)})
    delta = wire(acp_tag(next(m for m in text if m.get("method") == "session/update"
                              and m["params"]["update"]["sessionUpdate"]
                              == "agent_message_chunk"), 0))
    every = [m for m in every_recorded("gemini") if not is_response(m) and not is_request(m)]
    return {"deltas": [delta] * (lines - 1) + [end],
            "turns": repeated(every, lines - 1, acp_tag) + [end]}


@dataclass(frozen=True)
class Case:
    """One driver: its recorded mixes, a driver past its handshake, and its end-to-end
    agent (``agent``, the catalog's name; ``opening``: what the pipe baseline writes to it,
    the handshake and ``prompt``; ``end``: the bytes of the line that ends its turn)."""

    name: str
    make: Callable[[], Driver]
    mixes: Callable[[int], dict[str, list[bytes]]]
    agent: str
    opening: Callable[[str], list[Message]]
    end: bytes


def rpc(rid: int, method: str, params: Message) -> Message:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


CASES_BY_DRIVER = {
    "claude": Case("claude", claude_driver, claude_mixes, "local",
                   lambda text: [control_request("initialize", hooks=None),
                                 user_message(text)], b'"type":"result"'),
    "codex": Case("codex", codex_driver, codex_mixes, "codex",
                  lambda text: [rpc(1, "initialize", {"clientInfo": {"name": "bench"}}),
                                {"jsonrpc": "2.0", "method": "initialized"},
                                rpc(2, "thread/start", {"cwd": str(WORKSPACE)}),
                                rpc(3, "turn/start", {"threadId": "t", "input": [
                                    {"type": "text", "text": text}]})],
                  b'"method":"turn/completed"'),
    "acp": Case("acp", acp_driver, acp_mixes, ACP_AGENT,
                lambda text: [rpc(1, "initialize", {"protocolVersion": 1}),
                              rpc(2, "session/new", {"cwd": str(WORKSPACE), "mcpServers": []}),
                              rpc(3, "session/prompt", {"sessionId": "s", "prompt": [
                                  {"type": "text", "text": text}]})],
                b'"stopReason"'),
}


# -- translation, layer by layer --------------------------------------------------------------

Layer = Callable[[Case, list[bytes]], int]


def layer_loads(case: Case, lines: list[bytes]) -> int:
    for raw in lines:
        json.loads(raw)
    return 0


def layer_translate(case: Case, lines: list[bytes]) -> int:
    driver, _ = prompted(case.make)()
    events, receive = 0, driver.receive
    for raw in lines:
        for action in receive(json.loads(raw)):
            if isinstance(action, Emit):
                events += 1
    return events


def layer_append(case: Case, lines: list[bytes]) -> int:
    driver, _ = prompted(case.make)()
    log, receive = MemoryEventLog("bench"), driver.receive
    for raw in lines:
        for action in receive(json.loads(raw)):
            if isinstance(action, Emit):
                log.append(action.kind, action.payload)
    return log.last_id


class ScriptedProcess:
    """Stands in for :class:`tether.process.AgentProcess`: stdout is a list of lines."""

    alive = True
    returncode = 0
    pid = 0

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines

    def send(self, message: Any) -> bool:
        return True

    def lines(self) -> Any:
        return iter(self._lines)

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def stderr_tail(self, wait_seconds: float = 0) -> str:
        return ""

    def stop(self, grace_seconds: float) -> int:
        return 0


class ScriptedHost(AgentHost):
    """A real :class:`tether.runner.AgentHost` (the driver lock, the offers, the meters) whose
    :meth:`acquire` hands out a :class:`ScriptedProcess` and a driver past its handshake."""

    def __init__(self, case: Case, lines: list[bytes], settings: Settings) -> None:
        # The runner reads the spec's name; an Offer sets the agent's models and modes on it.
        super().__init__(SimpleNamespace(name=case.name), WORKSPACE,  # type: ignore[arg-type]
                         settings)
        self._case, self._lines = case, lines

    def acquire(self) -> tuple[Any, Driver]:
        with self._lock:
            self._in_turn = True
        return ScriptedProcess(self._lines), self._case.make()


def layer_turn(settings: Settings) -> Layer:
    def run(case: Case, lines: list[bytes]) -> int:
        log = MemoryEventLog("bench")
        turn = Turn(1, "bench", ScriptedHost(case, lines, settings), log,
                    PromptRegistry(log, 0), settings,
                    lambda turn, reason: log.append("turn_end", {"turn": 1, "reason": reason}))
        turn.start()
        if not turn.join(600):
            raise RuntimeError("the turn did not end in 600 s")
        ends = [e for e in log.read_after(0) if e.kind == "turn_end"]
        if [e.payload["reason"] for e in ends] != ["completed"]:
            raise RuntimeError(f"the {case.name} turn ended {ends}, not completed")
        return log.last_id
    return run


def translation(cases: list[Case], settings: Settings, lines: int,
                repeats: int) -> list[dict[str, Any]]:
    """Every driver's mixes through every layer; the best of ``repeats`` runs each, the
    layers taking turns (a neighbour's burst of CPU then spoils one run of each layer rather
    than every run of one)."""
    layers: list[tuple[str, Layer]] = [
        ("json.loads", layer_loads), ("+ translate", layer_translate),
        ("+ append", layer_append), ("Turn (runner)", layer_turn(settings))]
    rows = []
    for case in cases:
        print(f"[in process] {case.name}", file=sys.stderr, flush=True)
        for mix, data in case.mixes(lines).items():
            fresh_heap()
            size = sum(len(raw) + 1 for raw in data) / len(data)
            best = {name: float("inf") for name, _ in layers}
            counted = dict.fromkeys(best, 0)
            for _ in range(repeats):
                for name, layer in layers:
                    started = time.perf_counter()
                    counted[name] = layer(case, data)
                    best[name] = min(best[name], time.perf_counter() - started)
            floor = None
            for name, _ in layers:
                events, rate = counted[name], len(data) / best[name]
                floor = floor or rate
                rows.append({"driver": case.name, "mix": mix, "layer": name,
                             "lines": len(data), "bytes_per_line": round(size),
                             "events": events, "seconds": round(best[name], 4),
                             "lines_per_s": round(rate),
                             "events_per_s": round(events / best[name]) if events else None,
                             "us_per_line": round(best[name] / len(data) * 1e6, 2),
                             "x_floor": round(floor / rate, 2)})
    return rows


# -- end to end -------------------------------------------------------------------------------

def stub_settings(overrides: dict[str, Any], tmp: Path) -> Settings:
    """``overrides``, with the ``codex`` agent's binary set to bench/agents/codex_stub.py
    (through a shell script: the binary is one path) and ``acp-stub`` declared in a
    ``TETHER_AGENT_SERVERS`` file running bench/agents/acp_stub.py."""
    codex = tmp / "codex-stub"
    codex.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
                     f"{shlex.quote(str(STUBS / 'codex_stub.py'))} \"$@\"\n")
    codex.chmod(0o755)
    servers = tmp / "agent_servers.json"
    servers.write_text(json.dumps({ACP_AGENT: {"command": sys.executable,
                                               "args": [str(STUBS / "acp_stub.py")]}}))
    return Settings.from_env({**overrides, "codex_bin": str(codex),
                              "agent_servers": str(servers)})


def fresh_heap() -> None:
    """Collect, then freeze what is left (as gunicorn.conf.py freezes the worker once the app
    is loaded): every case starts with the collector's full passes scanning only what the
    case makes. Else what earlier cases left behind (their registries' cyclic garbage, and the
    last one's log of 20,000 events: gevent's fork hooks keep a snapshot of the threads alive
    at the last fork, a turn's timer among them) makes a full pass take 100 ms and more in the
    middle of a later driver's burst, and the order of the drivers decides their maxima."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def bench_prompt(rate: float, count: int) -> str:
    return f"bench {count} {DELTA_CHARS} {rate:g}"


def pipe_floor(case: Case, settings: Settings, workdir: Path, rate: float,
               count: int) -> dict[str, Any]:
    """The agent's stamped lines read straight from its stdout: stamp to read."""
    spec = default_catalog(settings).get(case.agent)
    process = AgentProcess(spec.argv(str(uuid.uuid4()), False), workdir, spec.env())
    lags, first, last_read = [], None, 0.0
    try:
        for message in case.opening(bench_prompt(rate, count)):
            process.send(message)
        for raw in process.lines():
            now = time.time()
            if raw is None:
                continue
            match = STAMP.search(raw)
            if match:
                stamp = float(match.group(2))
                first = stamp if first is None else first
                lags.append(now - stamp)
                last_read = now
            elif case.end in raw:
                break
    finally:
        process.stop(1)
    return {"events": len(lags), "latency_ms": spread_ms(lags),
            "lines_per_s": round(len(lags) / (last_read - first)) if lags and first
            and last_read > first else None}


def runner_path(case: Case, settings: Settings, rate: float, count: int) -> dict[str, Any]:
    """One session, one ``bench`` turn through the runner; stamp to append and to seen."""
    appended: list[float] = []  # appended[k]: the time of the store's (k + 1)-th append

    def clock() -> float:
        now = time.time()
        appended.append(now)
        return now

    core = SessionRegistry(settings, store=MemoryStore(clock=clock))
    try:
        session = core.create(case.agent)
        session.submit("hello")  # the agent process is up before the measured turn
        if not session.wait_idle(60):
            raise RuntimeError("the first turn did not end in 60 s")
        log, start = session.log, session.log.last_id
        seen: list[tuple[int, float, float]] = []  # (event id, stamp, seen at)

        def watch() -> None:
            cursor, deadline = start, time.monotonic() + 300
            while time.monotonic() < deadline:
                log.wait_for(cursor, 30)
                batch = log.read_after(cursor)
                now = time.time()
                for event in batch:
                    if event.kind == "text_delta":
                        head = event.payload["text"].split(" ", 2)
                        seen.append((event.id, float(head[1]), now))
                    elif event.kind == "turn_end" or log.closed:
                        return
                if batch:
                    cursor = batch[-1].id

        watcher = threading.Thread(target=watch, daemon=True, name="watcher")
        watcher.start()
        session.submit(bench_prompt(rate, count))
        if not session.wait_idle(300):
            raise RuntimeError("the bench turn did not end in 300 s")
        watcher.join(30)
        ends = [e.payload.get("reason") for e in log.read_after(start) if e.kind == "turn_end"]
        if ends != ["completed"]:
            raise RuntimeError(f"the {case.name} bench turn ended {ends}, not completed")
    finally:
        core.shutdown()
    to_append = [appended[i - 1] - stamp for i, stamp, _ in seen]
    to_seen = [at - stamp for _, stamp, at in seen]
    window = appended[seen[-1][0] - 1] - seen[0][1] if seen else 0
    return {"events": len(seen), "append_ms": spread_ms(to_append),
            "seen_ms": spread_ms(to_seen),
            "lines_per_s": round(len(seen) / window) if window > 0 else None}


def added(path: dict[str, float], floor: dict[str, float]) -> dict[str, Any]:
    """What a path adds to the pipe's own timing: ms at p50 and p99, and the ratios."""
    return {"p50_ms": round(path["p50"] - floor["p50"], 2),
            "p99_ms": round(path["p99"] - floor["p99"], 2),
            "x_p50": round(path["p50"] / floor["p50"], 1) if floor["p50"] else None,
            "x_p99": round(path["p99"] / floor["p99"], 1) if floor["p99"] else None}


def end_to_end(cases: list[Case], settings: Settings, workdir: Path,
               rates: list[tuple[float, int]]) -> list[dict[str, Any]]:
    rows = []
    for case in cases:
        for rate, count in rates:
            label = "burst" if not rate else f"{rate:g}/s"
            print(f"[end to end] {case.name} ({case.agent}) {label} x {count}: pipe, then "
                  "runner", file=sys.stderr, flush=True)
            fresh_heap()
            floor = pipe_floor(case, settings, workdir, rate, count)
            fresh_heap()
            path = runner_path(case, settings, rate, count)
            rows.append({"driver": case.name, "agent": case.agent, "rate": rate,
                         "count": count, "pipe": floor, "runner": path,
                         "added_append": added(path["append_ms"], floor["latency_ms"]),
                         "added_seen": added(path["seen_ms"], floor["latency_ms"])})
    return rows


# -- output ---------------------------------------------------------------------------------

def print_translation(rows: list[dict[str, Any]]) -> None:
    head = (f"{'driver':<8}{'mix':<8}{'layer':<15}{'lines':>8}{'B/line':>8}{'events':>8}"
            f"{'lines/s':>11}{'events/s':>11}{'us/line':>9}{'x floor':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['driver']:<8}{r['mix']:<8}{r['layer']:<15}{r['lines']:>8}"
              f"{r['bytes_per_line']:>8}{r['events']:>8}{r['lines_per_s']:>11,}"
              f"{r['events_per_s'] or 0:>11,}{r['us_per_line']:>9.2f}{r['x_floor']:>9.2f}")


def print_end_to_end(rows: list[dict[str, Any]]) -> None:
    head = (f"{'rate':<8}{'events':>7}  {'path':<18}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}"
            f"{'lines/s':>10}{'n':>7}{'+p50':>8}{'+p99':>8}{'x p99':>7}")
    for driver in dict.fromkeys(r["driver"] for r in rows):
        mine = [r for r in rows if r["driver"] == driver]
        print(f"\n{driver} ({mine[0]['agent']} agent)")
        print(head)
        print("-" * len(head))
        for r in mine:
            label = "burst" if not r["rate"] else f"{r['rate']:g}/s"
            for name, n, lat, rate, more in (
                    ("pipe (baseline)", r["pipe"]["events"], r["pipe"]["latency_ms"],
                     r["pipe"]["lines_per_s"], None),
                    ("stamp -> append", r["runner"]["events"], r["runner"]["append_ms"],
                     r["runner"]["lines_per_s"], r["added_append"]),
                    ("stamp -> seen", r["runner"]["events"], r["runner"]["seen_ms"], None,
                     r["added_seen"])):
                extra = (f"{more['p50_ms']:>8.2f}{more['p99_ms']:>8.2f}"
                         f"{more['x_p99'] if more['x_p99'] is not None else '-':>7}"
                         if more else f"{'':>8}{'':>8}{'':>7}")
                print(f"{label:<8}{r['count']:>7}  {name:<18}{lat['p50']:>8.2f}"
                      f"{lat['p90']:>8.2f}{lat['p99']:>8.2f}{lat['max']:>8.2f}"
                      f"{(f'{rate:,}' if rate else '-'):>10}{n:>7}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def cases(text: str) -> list[tuple[float, int]]:
        out = []
        for item in filter(None, text.split(",")):
            rate, _, count = item.partition(":")
            out.append((float(rate), int(count)))
        return out

    def drivers(text: str) -> list[str]:
        names = [name for name in text.split(",") if name]
        unknown = set(names) - set(CASES_BY_DRIVER)
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"drivers are {', '.join(CASES_BY_DRIVER)}")
        return names

    parser.add_argument("--drivers", type=drivers, default=list(CASES_BY_DRIVER),
                        help="comma-separated, of claude, codex, acp (default: all)")
    parser.add_argument("--lines", type=int, default=20_000, help="lines per mix, in process")
    parser.add_argument("--repeats", type=int, default=3, help="in-process runs; best kept")
    parser.add_argument("--cases", type=cases, default=CASES,
                        help="end-to-end cases, rate:count (rate 0: a burst), e.g. "
                             "100:300,1000:2000,0:20000 ('' for none)")
    parser.add_argument("--threads", action="store_true",
                        help="plain threads, not gevent (read before anything is imported)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to core 0")
    args = parser.parse_args()
    if not (100 <= args.lines <= 10_000_000 and 0 < args.repeats <= 20
            and all(0 <= r <= 100_000 and 1 <= n <= 1_000_000 for r, n in args.cases)):
        parser.error("lines 100..10000000, repeats 1..20, case rates 0..100000 and counts "
                     "1..1000000")
    chosen = [CASES_BY_DRIVER[name] for name in args.drivers]
    stop_on_signals()
    server_cpu, _ = cores(args.no_pin)
    info = machine(server_cpu is not None) | {"gevent": GEVENT}
    print(f"machine: {info['cpus']} CPUs, load average {info['load'][0]:.2f} at start, "
          f"pinned to core {server_cpu}, {'gevent' if GEVENT else 'plain threads'}")
    with tempfile.TemporaryDirectory(prefix="tether-bench-agent-path-") as tmp, \
            pinned(server_cpu):
        settings = stub_settings({"data_dir": tmp, "store": "memory", "agent": "local",
                                  "local_word_delay_seconds": 0, "cancel_grace_seconds": 1},
                                 Path(tmp))
        layers = translation(chosen, settings, args.lines, args.repeats)
        paths = end_to_end(chosen, settings, Path(tmp), args.cases)

    print(f"\nTranslation, in process: each driver's recorded stdout lines to Tether events "
          f"(best of {args.repeats}; x floor: time over json.loads's)")
    print_translation(layers)
    if paths:
        print(f"\nEnd to end, {DELTA_CHARS}-character stamped text deltas: ms from the agent's "
              "write to the pipe read (baseline), to the append, and to a watcher of the log; "
              "+p50, +p99: ms over the pipe's; x p99: over the pipe's p99")
        print_end_to_end(paths)
    print(json.dumps({"bench": "agent_path", "machine": info, "translation": layers,
                      "end_to_end": paths}))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: every agent this run started is stopped", file=sys.stderr)
        sys.exit(130)
