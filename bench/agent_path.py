"""Agent path: lines/s through the stream-json translation, and agent write to log append.

Issue 5: "Agent path: lines/s through the Claude stream-json translation, and agent-write to
log-append latency." No HTTP and no client: what happens between an agent's stdout and its
session's log. Runs on gevent, monkey-patched as gunicorn's gevent worker runs Tether
(``--threads`` runs it on plain threads instead), pinned to core 0 with the agents it starts.

- **Translation, in process.** Claude Code stdout lines go through the turn runner
  (tether/runner.py ``Turn``, its agent process replaced by a list of lines) into a
  memory-store log, and through each layer of it alone, on the same lines: ``json.loads``
  (the floor: the baseline), ``+ translate`` (tether/agents/claude.py), ``+ append``
  (MemoryEventLog: the event built and encoded once), and the whole ``Turn`` (the runner's
  pump: type dispatch, a yield every 16 lines, and the ``turn_end``). Two mixes, each
  ``--lines`` lines ending with one ``result``: ``deltas``, the ``content_block_delta``
  ``text_delta`` line recorded from Claude Code 2.1.328 (tests/fixtures/claude/text.jsonl),
  the commonest line; ``turns``, every stdout line of every recorded scenario
  (tests/fixtures/claude/*.jsonl) in recorded order, less the control messages and
  ``result``s, repeated. Best of ``--repeats`` runs.
- **End to end.** A session of a :class:`~tether.sessions.SessionRegistry` (memory store)
  runs the real ``local`` agent subprocess; its ``bench <count> 200 <rate>`` command writes
  stamped ``text_delta`` lines (the stamp is ``time.time()`` right before the write), and
  the runner reads, translates and appends them. The store's clock records each append's
  exact time (the event's ``ts`` is rounded to the millisecond), so stamp to append is exact;
  a watcher thread on the log (``wait_for``, then ``read_after``: what a stream does) gives
  stamp to seen. The baseline, in the same sitting: the same agent command read straight
  from its pipe (tether/process.py ``AgentProcess.lines``), with no runner and no log.

    .venv/bin/python -m bench.agent_path                  # about 40 s
    .venv/bin/python -m bench.agent_path --lines 20000 --cases 100:300,0:20000
    .venv/bin/python -m bench.agent_path --threads        # plain threads, not gevent

Prints two tables, then one JSON line (lines per second; latency in ms).
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
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.fanout import cores, machine, pinned, stop_on_signals
from bench.loadclient import STAMP, spread_ms
from tests.e2e.live import ROOT
from tether.agents.catalog import LocalAgent
from tether.agents.claude import control_request, translate, user_message
from tether.config import Settings
from tether.process import AgentProcess
from tether.prompts import PromptRegistry
from tether.runner import Turn
from tether.sessions import SessionRegistry
from tether.stores.memory import MemoryEventLog, MemoryStore

FIXTURES = ROOT / "tests" / "fixtures" / "claude"
CONTROL = {"control_request", "control_response", "control_cancel_request"}
#: End-to-end cases: (events/s, 0 for a burst; events).
CASES = [(100.0, 300), (1000.0, 2000), (0.0, 20000)]


# -- the lines ------------------------------------------------------------------------------

def recorded(scenario: str) -> list[dict[str, Any]]:
    """The stdout messages (``dir: out``) of one recorded scenario, in order."""
    out = []
    for line in (FIXTURES / f"{scenario}.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["dir"] == "out":
            out.append(entry["msg"])
    return out


def wire(message: dict[str, Any]) -> bytes:
    """A message as the CLI prints it: compact JSON, UTF-8 (the runner strips the newline)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def mixes(lines: int) -> dict[str, list[bytes]]:
    """``deltas`` and ``turns`` (the module docstring), ``lines`` lines each, ``result`` last."""
    text = recorded("text")
    result = wire(next(m for m in text if m["type"] == "result"))
    delta = wire(next(m for m in text if m["type"] == "stream_event"
                      and m["event"]["type"] == "content_block_delta"))
    every = [wire(m) for path in sorted(FIXTURES.glob("*.jsonl"))
             for m in recorded(path.stem) if m["type"] not in CONTROL | {"result"}]
    return {"deltas": [delta] * (lines - 1) + [result],
            "turns": (every * (lines // len(every) + 1))[:lines - 1] + [result]}


# -- translation, layer by layer --------------------------------------------------------------

def layer_loads(lines: list[bytes]) -> int:
    for raw in lines:
        json.loads(raw)
    return 0


def layer_translate(lines: list[bytes]) -> int:
    events = 0
    for raw in lines:
        events += len(translate(json.loads(raw), "claude"))
    return events


def layer_append(lines: list[bytes]) -> int:
    log = MemoryEventLog("bench")
    for raw in lines:
        for kind, payload in translate(json.loads(raw), "claude"):
            log.append(kind, payload)
    return log.last_id


class ScriptedProcess:
    """Stands in for :class:`tether.process.AgentProcess`: stdout is a list of lines."""

    alive = True
    returncode = 0

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


class ScriptedHost:
    """Stands in for :class:`tether.runner.AgentHost`: hands out a :class:`ScriptedProcess`."""

    def __init__(self, lines: list[bytes]) -> None:
        self.spec = SimpleNamespace(name="claude")  # the runner reads only its name
        self.started = False
        self._lines = lines

    def acquire(self) -> ScriptedProcess:
        return ScriptedProcess(self._lines)

    def idle(self) -> None:
        pass

    def stop(self) -> None:
        pass


def layer_turn(settings: Settings) -> Callable[[list[bytes]], int]:
    def run(lines: list[bytes]) -> int:
        log = MemoryEventLog("bench")
        turn = Turn(1, "bench", ScriptedHost(lines), log,  # type: ignore[arg-type]
                    PromptRegistry(log, 0), settings,
                    lambda turn, reason: log.append("turn_end", {"turn": 1, "reason": reason}))
        turn.start()
        if not turn.join(600):
            raise RuntimeError("the turn did not end in 600 s")
        return log.last_id
    return run


def translation(settings: Settings, lines: int, repeats: int) -> list[dict[str, Any]]:
    """Every mix through every layer; the best of ``repeats`` runs each."""
    layers: list[tuple[str, Callable[[list[bytes]], int]]] = [
        ("json.loads", layer_loads), ("+ translate", layer_translate),
        ("+ append", layer_append), ("Turn (runner)", layer_turn(settings))]
    rows = []
    for mix, data in mixes(lines).items():
        size = sum(len(raw) + 1 for raw in data) / len(data)
        floor = None
        for name, layer in layers:
            best, events = float("inf"), 0
            for _ in range(repeats):
                started = time.perf_counter()
                events = layer(data)
                best = min(best, time.perf_counter() - started)
            rate = len(data) / best
            floor = floor or rate
            rows.append({"mix": mix, "layer": name, "lines": len(data),
                         "bytes_per_line": round(size), "events": events,
                         "seconds": round(best, 4), "lines_per_s": round(rate),
                         "events_per_s": round(events / best) if events else None,
                         "us_per_line": round(best / len(data) * 1e6, 2),
                         "x_floor": round(floor / rate, 2)})
    return rows


# -- end to end -------------------------------------------------------------------------------

def pipe_floor(settings: Settings, workdir: Path, rate: float, count: int) -> dict[str, Any]:
    """The agent's ``bench`` lines read straight from its stdout: stamp to read."""
    spec = LocalAgent(settings)
    process = AgentProcess(spec.argv("00000000-0000-4000-8000-000000000000", False), workdir,
                           spec.env())
    lags, first, last_read = [], None, 0.0
    try:
        process.send(control_request("initialize", hooks=None))
        process.send(user_message(f"bench {count} 200 {rate:g}"))
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
            elif b'"type":"result"' in raw:
                break
    finally:
        process.stop(1)
    return {"events": len(lags), "latency_ms": spread_ms(lags),
            "lines_per_s": round(len(lags) / (last_read - first)) if lags and first
            and last_read > first else None}


def runner_path(settings: Settings, rate: float, count: int) -> dict[str, Any]:
    """One session, one ``bench`` turn through the runner; stamp to append and to seen."""
    appended: list[float] = []  # appended[k]: the time of the store's (k + 1)-th append

    def clock() -> float:
        now = time.time()
        appended.append(now)
        return now

    core = SessionRegistry(settings, store=MemoryStore(clock=clock))
    try:
        session = core.create("local")
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
        session.submit(f"bench {count} 200 {rate:g}")
        if not session.wait_idle(300):
            raise RuntimeError("the bench turn did not end in 300 s")
        watcher.join(30)
    finally:
        core.shutdown()
    to_append = [appended[i - 1] - stamp for i, stamp, _ in seen]
    to_seen = [at - stamp for _, stamp, at in seen]
    window = appended[seen[-1][0] - 1] - seen[0][1] if seen else 0
    return {"events": len(seen), "append_ms": spread_ms(to_append),
            "seen_ms": spread_ms(to_seen),
            "lines_per_s": round(len(seen) / window) if window > 0 else None}


def end_to_end(settings: Settings, workdir: Path,
               cases: list[tuple[float, int]]) -> list[dict[str, Any]]:
    rows = []
    for rate, count in cases:
        label = "burst" if not rate else f"{rate:g}/s"
        print(f"[end to end] {label} x {count}: pipe, then runner", file=sys.stderr, flush=True)
        floor = pipe_floor(settings, workdir, rate, count)
        path = runner_path(settings, rate, count)
        rows.append({"rate": rate, "count": count, "pipe": floor, "runner": path})
    return rows


# -- output ---------------------------------------------------------------------------------

def print_translation(rows: list[dict[str, Any]]) -> None:
    head = (f"{'mix':<8}{'layer':<15}{'lines':>8}{'B/line':>8}{'events':>8}{'lines/s':>11}"
            f"{'events/s':>11}{'us/line':>9}{'x floor':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['mix']:<8}{r['layer']:<15}{r['lines']:>8}{r['bytes_per_line']:>8}"
              f"{r['events']:>8}{r['lines_per_s']:>11,}{r['events_per_s'] or 0:>11,}"
              f"{r['us_per_line']:>9.2f}{r['x_floor']:>9.2f}")


def print_end_to_end(rows: list[dict[str, Any]]) -> None:
    head = (f"{'rate':<8}{'events':>7}  {'path':<18}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}"
            f"{'lines/s':>10}{'n':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        label = "burst" if not r["rate"] else f"{r['rate']:g}/s"
        for name, n, lat, rate in (
                ("pipe (baseline)", r["pipe"]["events"], r["pipe"]["latency_ms"],
                 r["pipe"]["lines_per_s"]),
                ("stamp -> append", r["runner"]["events"], r["runner"]["append_ms"],
                 r["runner"]["lines_per_s"]),
                ("stamp -> seen", r["runner"]["events"], r["runner"]["seen_ms"], None)):
            print(f"{label:<8}{r['count']:>7}  {name:<18}{lat['p50']:>8.2f}{lat['p90']:>8.2f}"
                  f"{lat['p99']:>8.2f}{lat['max']:>8.2f}"
                  f"{(f'{rate:,}' if rate else '-'):>10}{n:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def cases(text: str) -> list[tuple[float, int]]:
        out = []
        for item in filter(None, text.split(",")):
            rate, _, count = item.partition(":")
            out.append((float(rate), int(count)))
        return out

    parser.add_argument("--lines", type=int, default=100_000, help="lines per mix, in process")
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
    stop_on_signals()
    server_cpu, _ = cores(args.no_pin)
    info = machine(server_cpu is not None) | {"gevent": GEVENT}
    print(f"machine: {info['cpus']} CPUs, load average {info['load'][0]:.2f} at start, "
          f"pinned to core {server_cpu}, {'gevent' if GEVENT else 'plain threads'}")
    with tempfile.TemporaryDirectory(prefix="tether-bench-agent-path-") as tmp, \
            pinned(server_cpu):
        settings = Settings.from_env({"data_dir": tmp, "store": "memory", "agent": "local",
                                      "local_word_delay_seconds": 0,
                                      "cancel_grace_seconds": 1})
        print("[in process] translation layers", file=sys.stderr, flush=True)
        layers = translation(settings, args.lines, args.repeats)
        paths = end_to_end(settings, Path(tmp), args.cases)

    print(f"\nTranslation, in process: Claude Code stdout lines to Tether events "
          f"(best of {args.repeats}; x floor: time over json.loads's)")
    print_translation(layers)
    if paths:
        print("\nEnd to end, the local agent's bench lines (200 B deltas): ms from the agent's "
              "write to the pipe read (baseline), to the append, and to a watcher of the log")
        print_end_to_end(paths)
    print(json.dumps({"bench": "agent_path", "machine": info, "translation": layers,
                      "end_to_end": paths}))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: every agent this run started is stopped", file=sys.stderr)
        sys.exit(130)
