"""bench/fanout.py's issue-5 verdicts, on rows made up here (no server is started)."""

from __future__ import annotations

from typing import Any

from bench.fanout import verdicts


def row(target: str = "tether", transport: str = "sse", clients: int = 3, rate: int = 100,
        label: str = "fan-out", p50: float = 1.0, p99: float = 5.0, us: float | None = 2.0,
        delivered: float = 1000.0, kb: float = 10.0, lost: int = 0,
        server_ok: bool = True) -> dict[str, Any]:
    return {"target": target, "transport": transport, "total_clients": clients, "rate": rate,
            "label": label, "latency_ms": {"p50": p50, "p99": p99},
            "cpu_us_per_delivery": us, "delivered": delivered, "rss_kb_per_conn": kb,
            "lost": lost, "duplicated": 0, "out_of_order": 0, "id_errors": 0,
            "server": None if target != "tether" else {"ok": server_ok}}


def judged(rows: list[dict[str, Any]], replays: list[dict[str, Any]] | None = None
           ) -> dict[tuple[str, str], dict[str, Any]]:
    return {(v["target"], v["case"].split(" (")[0]): v for v in verdicts(rows, replays or [])}


def test_typical_use_is_judged_on_p50_and_p99_per_transport():
    got = judged([row(transport="sse", p50=1.5, p99=9.0), row(transport="ws", p50=2.5, p99=3)])
    assert got[("typical p50 <= 2 ms", "3 x 100/s sse")]["met"]
    assert got[("typical p99 <= 10 ms", "3 x 100/s sse")]["met"]
    assert not got[("typical p50 <= 2 ms", "3 x 100/s ws")]["met"]
    assert got[("typical p99 <= 10 ms", "3 x 100/s ws")]["value"] == 3


def test_rounds_are_judged_on_their_median():
    rows = [row(clients=1000, rate=10, p99=p99) for p99 in (50, 150, 90)]
    verdict = judged(rows)[("wide p99 <= 100 ms", "1000 x 10/s sse")]
    assert verdict["value"] == 90 and verdict["met"]


def test_burst_is_judged_per_cpu_second_against_each_peer():
    rows = [row(clients=1000, rate=0, us=1.0, delivered=400_000),
            row("naive_flask", clients=1000, rate=0, us=2.5, delivered=350_000),
            row("starlette", clients=1000, rate=0, us=0.9, delivered=50_000)]
    got = judged(rows)
    assert got[(">= 50,000 deliveries/CPU-s", "burst 1000 sse")]["value"] == 1_000_000
    naive = got[(">= 2x naive_flask per core", "burst 1000 sse")]
    assert naive["value"] == 2.5 and naive["met"]
    starlette = got[(">= 1x starlette per core", "burst 1000 sse")]
    assert round(starlette["value"], 2) == 0.9 and not starlette["met"]
    # The wall-clock ratio is shown beside the per-core one.
    assert "wall 1.14x" in next(v["case"] for v in verdicts(rows, [])
                                if v["target"] == ">= 2x naive_flask per core")


def test_a_burst_without_peers_is_judged_on_capacity_alone():
    got = judged([row(clients=1000, rate=0, us=25.0)])
    assert not got[(">= 50,000 deliveries/CPU-s", "burst 1000 sse")]["met"]
    assert not any("per core" in target for target, _ in got)


def test_idle_memory_mix_and_replay_targets():
    rows = [row(clients=10000, rate=10, kb=19.9), row(clients=10000, rate=10, transport="ws",
                                                     kb=43), row(label="mix", clients=300,
                                                                 rate=20, p99=51)]
    replays = [{"store": "memory", "transport": "sse", "caught_up_s": 0.9, "id_errors": 0,
                "duplicated": 0},
               {"store": "sqlite", "transport": "sse", "caught_up_s": 1.5, "id_errors": 1,
                "duplicated": 0},
               {"store": "sqlite", "todo": "TODO: did not start"}]
    got = judged(rows, replays)
    assert got[("idle SSE < 20 KB/conn", "10000 sse")]["met"]
    assert not any(case == "10000 ws" for _, case in got)  # the target is SSE's
    assert not got[("mix p99 <= 50 ms", "100 x 3 x 20/s sse")]["met"]
    assert got[("replay memory < 1 s", "100k sse")]["met"]
    assert not got[("replay sqlite < 2 s", "100k sse")]["met"]  # an id error fails it


def test_any_loss_or_server_mismatch_fails_zero_loss():
    assert judged([row()])[("zero loss, dup, reorder", "1 Tether rows")]["met"]
    assert not judged([row(), row(lost=1)])[("zero loss, dup, reorder", "2 Tether rows")]["met"]
    mismatch = judged([row(server_ok=False)])[("zero loss, dup, reorder", "1 Tether rows")]
    assert not mismatch["met"] and mismatch["value"] == 1
    # Peers' rows do not count against Tether.
    assert judged([row(), row("node", lost=3)])[("zero loss, dup, reorder", "1 Tether rows")][
        "met"]


def test_loads_not_in_the_run_are_left_out():
    assert verdicts([], []) == []
    assert [v["target"] for v in verdicts([row(clients=100, rate=0)], [])] == [
        "zero loss, dup, reorder"]


def test_long_poll_fan_out_rows_are_listed_for_reference_only():
    rows = [row(transport="poll", clients=1000, rate=10, p99=680),
            row(transport="poll", label="mix", clients=300, rate=20, p99=315),
            row(transport="poll", clients=1000, rate=0, us=25.0),
            row(transport="poll", p50=0.9, p99=1.5)]
    got = judged(rows)
    assert got[("wide p99 <= 100 ms", "1000 x 10/s poll")]["met"] is None
    assert got[("mix p99 <= 50 ms", "100 x 3 x 20/s poll")]["met"] is None
    assert got[(">= 50,000 deliveries/CPU-s", "burst 1000 poll")]["met"] is None
    # Typical use is judged on long-poll too.
    assert got[("typical p99 <= 10 ms", "3 x 100/s poll")]["met"] is True
