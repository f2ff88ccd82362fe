"""The benchmark harness on a tiny configuration (no performance assertions).

Real processes, a couple of hundred messages: checks that results are
produced and shaped as documented, that a contestant whose messages are
wrong is reported FAILED (not fast), that errors and hangs are reported and
never hang the run, and that missing contestants are listed.
"""
import argparse
import itertools
import json
import multiprocessing
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest

from shmipc.bench import cli, harness, report
from shmipc.bench.base import Contestant
from shmipc.bench.peers import MpPipe, MpQueue, OsPipe
from shmipc.bench.workloads import Endpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CorruptingPipe(OsPipe):
    """os.pipe whose 6th message carries a wrong sequence number."""

    name = "corrupting os.pipe"

    def open_tx(self, chan, index=0):
        ep = super().open_tx(chan, index)
        inner = ep.send
        calls = itertools.count()

        def send(data):
            if next(calls) == 5:
                data = bytearray(memoryview(data).cast("B"))
                struct.pack_into("<Q", data, 0, 123456)
            inner(data)

        ep.send = send
        return ep


class BrokenReceiver(OsPipe):
    """Its receiving side cannot be opened."""

    name = "broken receiver"

    def open_rx(self, chan, index=0):
        raise RuntimeError("cannot open the receiving side")


class SilentSender(OsPipe):
    """Sends nothing, so its receiver waits forever."""

    name = "silent sender"

    def open_tx(self, chan, index=0):
        return Endpoint(send=lambda data: None)


class NotThere(Contestant):
    name = "missing peer"
    requires = ("shmipc_bench_no_such_module",)


def run_main(tmp_path, args, contestants):
    out = tmp_path / "results.json"
    code = cli.main(["--smoke", "--no-progress", "--json", str(out), *args], contestants=contestants)
    with open(out) as f:
        return code, json.load(f)


def cells(data, name):
    return {(r["scenario"], r["size"]): r for r in data["results"] if r["contestant"] == name}


def test_smoke_run_json_and_failures(tmp_path, capsys):
    contestants = [OsPipe(), MpPipe(), CorruptingPipe(), BrokenReceiver(), NotThere()]
    t0 = time.monotonic()
    code, data = run_main(
        tmp_path, ["--sizes", "64,4k", "--scenarios", "spsc,pingpong"], contestants
    )
    elapsed = time.monotonic() - t0
    assert code == 0  # peers failing is reported, not fatal
    assert elapsed < 60

    assert set(data) == {"meta", "config", "limits", "contestants", "skipped_scenarios", "results"}
    meta = data["meta"]
    for key in ("cpu", "cores", "kernel", "python", "numpy", "loadavg_start", "wall_seconds"):
        assert key in meta
    assert data["config"]["fixed_count"] == 200
    assert data["limits"] == {"skipped": "not requested"}

    status = {c["name"]: c["status"] for c in data["contestants"]}
    assert status["os.pipe"] == "available"
    assert status["missing peer"] == "not installed"

    for name in ("os.pipe", "multiprocessing.Pipe"):
        mine = cells(data, name)
        assert set(mine) == {("spsc", 64), ("spsc", 4096), ("pingpong", 64)}
        for (scenario, size), res in mine.items():
            assert res["status"] == "ok", res
            assert len(res["runs"]) == 1
            assert res["min"] <= res["median"] <= res["max"]
            if scenario == "spsc":
                run = res["runs"][0]
                assert run["messages"] == 200
                assert run["mb_per_s"] == pytest.approx(run["msgs_per_s"] * size / 1e6)
                assert res["metric"] == "msgs_per_s"
            else:
                assert res["metric"] == "median_us"
                assert 1 <= res["runs"][0]["round_trips"] <= 200
                assert res["p99_us"] >= res["median"] or res["p99_us"] == pytest.approx(res["median"])
            assert res["best_peer"] in ("os.pipe", "multiprocessing.Pipe")
            assert res["ratio_to_best_peer"] > 0

    for res in cells(data, "corrupting os.pipe").values():
        assert res["status"] == "FAILED", res
        assert "sequence" in res["reason"] and "123456" in res["reason"]
        assert "ratio_to_best_peer" not in res and not res["runs"]
    for res in cells(data, "broken receiver").values():
        assert res["status"] == "failed", res
        assert "cannot open the receiving side" in res["reason"]
    assert cells(data, "missing peer") == {}

    text = capsys.readouterr().out
    assert "FAILED [" in text
    assert "missing peer: not installed" in text
    assert "os.pipe" in text and "SPSC throughput" in text
    assert multiprocessing.active_children() == []


def test_frames_and_mpmc(tmp_path):
    contestants = [OsPipe(), MpQueue(), CorruptingPipe()]
    code, data = run_main(tmp_path, ["--scenarios", "frames,mpmc"], contestants)
    assert code == 0
    frames = cells(data, "os.pipe")[("frames", 64 * 1024)]
    assert frames["status"] == "ok", frames
    assert frames["runs"][0]["frames"] == 200
    assert frames["runs"][0]["gb_per_s"] > 0
    assert cells(data, "corrupting os.pipe")[("frames", 64 * 1024)]["status"] == "FAILED"
    mpmc = cells(data, "multiprocessing.Queue")[("mpmc", 64)]
    assert mpmc["status"] == "ok", mpmc
    run = mpmc["runs"][0]
    assert run["messages"] == 4 * 200
    assert sum(run["per_consumer"]) == 4 * 200
    assert ("mpmc", 64) not in cells(data, "os.pipe")  # a pipe is not a multi-consumer queue
    assert multiprocessing.active_children() == []


def test_hung_run_is_killed_and_reported():
    cfg = harness.PRESETS["smoke"]
    t0 = time.monotonic()
    with pytest.raises(harness.RunFailed) as info:
        harness.measure_spsc(SilentSender(), 64, 10, cfg, timeout=1.0)
    assert info.value.status == "timed out"
    assert "rx" in info.value.reason
    assert time.monotonic() - t0 < 15
    assert multiprocessing.active_children() == []


def test_select_and_sizes():
    pool = [OsPipe(), MpPipe(), MpQueue(), CorruptingPipe()]
    assert [c.name for c in cli.select(pool, "os.pipe")] == ["os.pipe", "corrupting os.pipe"]
    assert [c.name for c in cli.select(pool, "multiprocessing.*")] == ["multiprocessing.Pipe", "multiprocessing.Queue"]
    assert [c.name for c in cli.select(pool, "QUEUE,corr*")] == ["multiprocessing.Queue", "corrupting os.pipe"]
    assert cli.select(pool, None) == pool
    assert cli._sizes("64,4k,1MiB,16m") == (64, 4096, 1 << 20, 16 << 20)
    with pytest.raises(argparse.ArgumentTypeError):
        cli._sizes("63")
    with pytest.raises(SystemExit):
        cli.main(["--only", "no-such-contestant"], contestants=pool)


def test_list(capsys):
    assert cli.main(["--list"], contestants=[OsPipe(), NotThere()]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("os.pipe") and line.endswith("available") for line in out)
    assert any(line.startswith("missing peer") and "not installed" in line for line in out)


def test_builtin_contestants_have_unique_names():
    names = [c.name for c in cli.all_contestants()]
    assert len(names) == len(set(names))
    assert {c.group for c in cli.all_contestants()} == {"shmipc", "peer"}


def test_report_formats_statuses():
    data = {
        "meta": {"cpu": "x", "cores": 2, "cores_usable": 2, "loadavg_start": [0.0], "wall_seconds": 1},
        "config": {"runs": 1, "target": 0.1, "mpmc_writers": 4, "mpmc_readers": 4},
        "limits": {"skipped": "no C compiler"},
        "contestants": [
            {"name": "a", "group": "peer", "status": "available", "reason": "", "note": ""},
            {"name": "b", "group": "shmipc", "status": "available", "reason": "", "note": ""},
        ],
        "results": [
            {"scenario": "spsc", "size": 64, "contestant": "a", "group": "peer", "status": "ok", "reason": "",
             "median": 1000.0, "min": 900.0, "max": 1100.0, "ratio_to_best_peer": 1.0},
            {"scenario": "spsc", "size": 64, "contestant": "b", "group": "shmipc", "status": "timed out",
             "reason": "no result after 25 s from rx"},
        ],
    }
    text = report.format_report(data)
    assert "1k [900–1.1k] 1.00×" in text
    assert "timed out [1]" in text and "[1] b: timed out: no result after 25 s from rx" in text
    assert "skipped (no C compiler)" in text


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_limits_program_runs():
    from shmipc.bench.limits import measure_limits

    data = measure_limits(0.005)
    assert "skipped" not in data, data
    for key in ("memcpy_1mib_gbs", "memcpy_256mib_gbs", "ring_64_msgs", "ring_1mib_gbs", "ring_16mib_gbs"):
        assert data[key] > 0
    for key in ("spin_rtt_us", "futex_rtt_us"):
        median, p99 = data[key]
        assert 0 < median <= p99


def test_python_m_shmipc_bench_list():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "shmipc.bench", "--list", "--only", "os.pipe"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("os.pipe")


def test_report_targets():
    def ok(scenario, size, name, group, median):
        return {"scenario": scenario, "size": size, "contestant": name, "group": group, "status": "ok",
                "reason": "", "median": median, "min": median, "max": median}

    data = {
        "meta": {"loadavg_start": [0.0]},
        "config": {"runs": 1, "target": 0.1, "mpmc_writers": 4, "mpmc_readers": 4},
        "limits": {"futex_rtt_us": [10.0, 20.0], "ring_1mib_gbs": 10.0},
        "contestants": [
            {"name": "os.pipe", "group": "peer", "mode": "single", "status": "available", "reason": ""},
            {"name": "faster-fifo put_many/get_many", "group": "peer", "mode": "batch", "status": "available",
             "reason": ""},
            {"name": "shmipc.Ring put/get", "group": "shmipc", "mode": "single", "status": "available",
             "reason": ""},
        ],
        "results": [
            ok("spsc", 64, "os.pipe", "peer", 500e3),
            ok("spsc", 64, "faster-fifo put_many/get_many", "peer", 900e3),  # batched: not the reference
            ok("spsc", 64, "shmipc.Ring put/get", "shmipc", 1.25e6),
            ok("pingpong", 64, "shmipc.Ring put/get", "shmipc", 13.0),
        ],
    }
    text = report.format_report(data)
    lines = {line.split("  ")[0]: line for line in text.splitlines()}
    assert "2.50× best single-message peer (os.pipe)" in lines["Ring put/get, 64 B"]
    assert "met (need 2×)" in lines["Ring put/get, 64 B"]
    assert "MISSED" in lines["shmipc.Ring put/get round trip, 64 B"]  # 13 µs > 10 µs + 20%
    assert "not measured" in lines["Ring put/get, 1 MiB"]


def _message(seq, size=64, tail=None):
    return struct.pack("<Q", seq) + bytes(size - 16) + struct.pack("<Q", seq if tail is None else tail)


def _feed(batches):
    it = iter(batches)
    return Endpoint(recv_many=lambda: next(it))


def test_batch_consumer_checks_every_message():
    from shmipc.bench import workloads

    good = [[_message(s) for s in range(0, 5)], [_message(s) for s in range(5, 12)]]
    assert workloads.consume(_feed(good), "batch", 64, 12) > 0

    def fails(batches, count, match):
        with pytest.raises(workloads.SequenceError, match=match):
            workloads.consume(_feed(batches), "batch", 64, count)

    swapped = [[_message(0), _message(2), _message(1)]]
    fails(swapped, 3, "message 1: got sequence numbers 2/2")
    torn = [[_message(0), _message(1, tail=7), _message(2)]]
    fails(torn, 3, "message 1: got sequence numbers 1/7")
    short = [[_message(0), _message(1)[:-8] + b"", _message(2)]]
    fails(short, 3, "message 1: got 56 bytes")
    # Lengths that add up although one is wrong.
    uneven = [[_message(0)[:-8], _message(1) + bytes(8)]]
    fails(uneven, 2, "message 0: got 56 bytes")
    late = [[_message(0)], [_message(2)]]
    fails(late, 2, "message 1: got sequence numbers 2/2")
