"""What the three recorders (``record_claude``, ``record_codex``, ``record_gemini``) share.

- :class:`RecordedProcess`: one agent CLI process speaking JSON lines. A reader thread records
  each stdout line as ``{"dir": "out", "msg": ...}`` (``{"dir": "out", "raw": ...}`` when it is
  not JSON) and queues it for :meth:`~RecordedProcess.wait_for`; ``send`` records
  ``{"dir": "in", "msg": ...}``; a ``proc`` tag adds ``"proc": N`` to each record. ``finish``
  closes stdin, waits (killing after a timeout) and returns the exit facts for ``meta.json``.
  A subclass names what ``first_seen_seconds`` keys a line by (:meth:`first_seen_key`).
- :class:`JsonRpcProcess`: the same speaking JSON-RPC 2.0 (``request`` numbers 1, 2, …,
  ``call`` waits for the response, ``notify``, ``respond``): Codex's ``app-server``, Gemini
  CLI's ACP.
- :func:`closed_port`: a loopback port nothing listens on (for ``HTTPS_PROXY``).
- :func:`record_main`: the recorders' command line: ``SCENARIO… | all``, ``--<cli> PATH``,
  ``--out DIR``; each scenario writes ``<out>/<scenario>.jsonl`` and its entry of
  ``<out>/meta.json`` (a failing scenario keeps what it recorded and ``{"failed": ...}``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import queue
import socket
import subprocess
import sys
import threading
import time
import typing as t
from collections.abc import Callable, Sequence
from pathlib import Path

Body = dict[str, t.Any]
WAIT_SECONDS = 30.0


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RecordedProcess:
    """One CLI process: a reader thread records stdout, ``send`` records stdin."""

    #: How long ``finish`` waits for the exit before it kills.
    finish_seconds = 10.0

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, records: list[Body],
                 proc: int | None = None) -> None:
        self.records, self.proc_tag, self.lines = records, proc, queue.Queue[Body]()
        self.started = time.monotonic()
        self.first_seen: dict[str, float] = {}
        self.lock = threading.Lock()  # the reader thread may send too (an answer)
        self.p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr = b""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def first_seen_key(self, msg: Body) -> str:
        """The ``first_seen_seconds`` key of an stdout message."""
        raise NotImplementedError

    def received(self, msg: Body) -> None:
        """Called on the reader thread for each stdout message, after it is recorded and
        before it is queued."""

    def stderr_text(self) -> str:
        """What ``meta.json`` keeps of stderr."""
        return self.stderr.decode("utf-8", "replace")[:2000]

    def _record(self, rec: Body) -> None:
        self.records.append(rec if self.proc_tag is None else {**rec, "proc": self.proc_tag})

    def _read(self) -> None:
        assert self.p.stdout is not None
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                msg = json.loads(line)
            except ValueError:
                self._record({"dir": "out", "raw": line})
                continue
            self.first_seen.setdefault(self.first_seen_key(msg),
                                       round(time.monotonic() - self.started, 3))
            self._record({"dir": "out", "msg": msg})
            self.received(msg)
            self.lines.put(msg)

    def _read_stderr(self) -> None:
        assert self.p.stderr is not None
        self.stderr = self.p.stderr.read(64_000)

    def send(self, msg: Body) -> None:
        assert self.p.stdin is not None
        with self.lock:
            self._record({"dir": "in", "msg": msg})
            self.p.stdin.write((json.dumps(msg) + "\n").encode())
            self.p.stdin.flush()

    def wait_for(self, pred: Callable[[Body], bool], timeout: float = WAIT_SECONDS) -> Body:
        """The next stdout message that matches ``pred`` (the others are passed over)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.p.poll() is not None and self.lines.empty():
                    break
                continue
            if pred(msg):
                return msg
        raise TimeoutError(f"no matching line within {timeout}s (rc={self.p.poll()})")

    def close_stdin(self) -> None:
        if self.p.stdin and not self.p.stdin.closed:
            self.p.stdin.close()

    def finish(self, timeout: float | None = None) -> Body:
        """Close stdin, wait for exit (kill after ``timeout``, default ``finish_seconds``),
        return exit facts."""
        t0 = time.monotonic()
        self.close_stdin()
        try:
            rc: int | str = self.p.wait(timeout=self.finish_seconds if timeout is None
                                        else timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=5)
            rc = "killed"
        time.sleep(0.1)  # let the readers drain
        return {"exit_code": rc, "exit_seconds_after_stdin_close": round(time.monotonic() - t0, 3),
                "stderr": self.stderr_text(), "first_seen_seconds": self.first_seen}


class JsonRpcProcess(RecordedProcess):
    """A :class:`RecordedProcess` that speaks JSON-RPC 2.0; ``request`` numbers 1, 2, …"""

    def __init__(self, *args: t.Any, **kw: t.Any) -> None:
        self.ids = itertools.count(1)
        super().__init__(*args, **kw)

    def request(self, method: str, params: Body) -> int:
        rid = next(self.ids)
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        return rid

    def call(self, method: str, params: Body, timeout: float = WAIT_SECONDS) -> Body:
        """Send a request and wait for its response (``result`` or ``error``)."""
        rid = self.request(method, params)
        return self.wait_for(lambda m: m.get("id") == rid and "method" not in m, timeout)

    def notify(self, method: str, params: Body) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def respond(self, rid: t.Any, result: t.Any = None, error: Body | None = None) -> None:
        """Answer the agent's request ``rid`` with ``result``, or with ``error`` if given."""
        msg: Body = {"jsonrpc": "2.0", "id": rid}
        if error is not None:
            msg["error"] = error
        else:
            msg["result"] = result
        self.send(msg)


def record_main(
    argv: list[str] | None, *, doc: str | None, names: Sequence[str],
    run: Callable[[str, str, list[Body]], Body], cli: str, default_bin: str, out: str,
    versions: Callable[[str], Body] | None = None, summary_chars: int = 400,
) -> int:
    """Parse ``argv`` (``SCENARIO… | all``, ``--<cli> PATH``, ``--out DIR``) and record each
    scenario with ``run(name, binary, records)``: ``<out>/<name>.jsonl`` and its entry of
    ``<out>/meta.json`` (the other entries are kept; ``versions(binary)`` is merged in
    first), with a one-line summary on stderr."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    ap.add_argument("scenarios", nargs="+", choices=[*names, "all"])
    ap.add_argument(f"--{cli}", dest="binary", metavar=cli.upper(), default=default_bin,
                    help=f"path to the {cli} binary")
    ap.add_argument("--out", type=Path, default=Path(out))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    meta_path = args.out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if versions is not None:
        meta.update(versions(args.binary))
    for name in names if "all" in args.scenarios else args.scenarios:
        records: list[Body] = []
        try:
            meta[name] = run(name, args.binary, records)
        except Exception as e:  # keep what was recorded; the summary shows the failure
            meta[name] = {"failed": repr(e)}
        with open(args.out / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        print(name, json.dumps(meta[name])[:summary_chars], file=sys.stderr)
    meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return 0
