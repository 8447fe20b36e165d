"""bench/agent_path.py still runs, for every driver: a tiny run of the script itself (under
gevent, as `make bench` runs it). Only what it counted is checked, never a figure: figures
are the benchmark's to print."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.live import ROOT

DRIVERS = ("claude", "codex", "acp")
LAYERS = ["json.loads", "+ translate", "+ append", "Turn (runner)"]


def test_a_tiny_run_measures_every_driver_layer_and_path():
    done = subprocess.run(
        [sys.executable, "-m", "bench.agent_path", "--lines", "300", "--repeats", "1",
         "--cases", "0:20", "--no-pin"],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["bench"] == "agent_path"

    rows = report["translation"]
    for driver in DRIVERS:
        for mix in ("deltas", "turns"):
            mine = [r for r in rows if r["driver"] == driver and r["mix"] == mix]
            assert [r["layer"] for r in mine] == LAYERS
            assert all(r["lines"] == 300 and r["lines_per_s"] > 0 for r in mine)
            loads, translate, append, turn = (r["events"] for r in mine)
            assert loads == 0 and translate > 0 and append == translate
            assert turn > append  # and the turn_end
        deltas = next(r for r in rows if r["driver"] == driver and r["mix"] == "deltas"
                      and r["layer"] == "+ translate")
        assert deltas["events"] >= 299  # every delta is a text_delta

    paths = {r["driver"]: r for r in report["end_to_end"]}
    assert sorted(paths) == sorted(DRIVERS)
    for row in paths.values():
        assert row["pipe"]["events"] == 20
        assert row["runner"]["events"] == 20
        assert row["runner"]["append_ms"]["n"] == 20 and row["runner"]["seen_ms"]["n"] == 20
        assert set(row["added_seen"]) == {"p50_ms", "p99_ms", "x_p50", "x_p99"}
