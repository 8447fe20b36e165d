"""How the fakes' own tests call a fake model API: ``post`` a JSON body and read it all,
``stream`` one held open, and ``sse`` to parse an answer's ``event:``/``data:`` frames."""

from __future__ import annotations

import json
import typing as t

import requests

from .sse_server import Body, FakeModelApi

TIMEOUT = 10


def post(api: FakeModelApi[t.Any], path: str, payload: Body) -> requests.Response:
    with requests.post(api.base_url + path, json=payload, timeout=TIMEOUT) as resp:
        _ = resp.content  # read it all before the connection closes
        return resp


def stream(api: FakeModelApi[t.Any], path: str, payload: Body) -> requests.Response:
    """An open streamed response (use it in ``with``)."""
    return requests.post(api.base_url + path, json=payload, stream=True, timeout=TIMEOUT)


def sse(resp: requests.Response) -> list[tuple[str, Body]]:
    """Parse ``event:``/``data:`` frames separated by blank lines."""
    frames = []
    for chunk in resp.text.split("\n\n"):
        if chunk.strip():
            lines = dict(line.split(": ", 1) for line in chunk.splitlines())
            frames.append((lines["event"], json.loads(lines["data"])))
    return frames
