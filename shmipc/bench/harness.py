"""Running the benchmark: processes, barriers, timeouts, calibration, stats.

One *measurement* forks the processes a scenario needs (producer and
consumer, pinger and ponger, or N producers and M consumers), lets each one
open its endpoint, starts the clock when all of them have passed a barrier,
and collects one result per process through a pipe.  The parent never waits
without a deadline: a process that has not reported in time is killed and
the measurement is "timed out"; a process that raises reports the error; a
receiver whose sequence check fails reports it and the contestant is FAILED.

Method (fit for noisy, shared machines):

* each (scenario, size, contestant) *cell* is first calibrated: warm-up runs
  with growing message counts until one lasts about a quarter of the target
  time, then the count for the measured runs is set so one run moves about
  ``target`` seconds of traffic;
* the measured runs are interleaved: round r measures every cell once, with
  the contestants of a scenario in an order rotated by r;
* a cell's result is the median over its runs, with the min–max spread, and
  its ratio to the best peer of the same cell, all from the same invocation.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import platform
import signal
import statistics
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import workloads
from .base import Contestant, NotInstalled, Unavailable
from .workloads import SequenceError

__all__ = ["Config", "PRESETS", "Bench", "RunFailed", "machine_info"]

SCENARIOS = ("spsc", "pingpong", "mpmc", "frames")
KiB = 1024
MiB = 1024 * 1024

#: Seconds a child may take to open its endpoint before the start barrier.
SETUP_TIMEOUT = 20.0


@dataclasses.dataclass
class Config:
    """What to measure and how hard.  See PRESETS for the named modes."""

    scenarios: Tuple[str, ...] = SCENARIOS
    sizes: Tuple[int, ...] = (64, 4 * KiB, MiB, 16 * MiB)
    frame_sizes: Tuple[int, ...] = (MiB, 8 * MiB)
    runs: int = 5
    #: Seconds of traffic in one measured run (counts are calibrated to it).
    target: float = 0.4
    pingpong_size: int = 64
    mpmc_writers: int = 4
    mpmc_readers: int = 4
    mpmc_size: int = 64
    #: Use this many messages per run instead of calibrating (tests).
    fixed_count: Optional[int] = None
    #: Hard limit for one measurement, on top of the calibrated time.
    run_timeout: float = 60.0
    limits: bool = True
    limits_seconds: float = 0.3
    #: Batched APIs send batches of about this many bytes (at most max_batch messages).
    batch_bytes: int = 256 * KiB
    max_batch: int = 256
    max_count: int = 50_000_000
    #: Calibration runs at most (each one also warms up).
    max_warmups: int = 4

    def batch_for(self, size: int) -> int:
        return max(1, min(self.max_batch, self.batch_bytes // size))

    def sizes_for(self, scenario: str) -> Tuple[int, ...]:
        if scenario == "spsc":
            return tuple(self.sizes)
        if scenario == "pingpong":
            return (self.pingpong_size,)
        if scenario == "mpmc":
            return (self.mpmc_size,)
        if scenario == "frames":
            return tuple(self.frame_sizes)
        raise ValueError(f"unknown scenario {scenario!r}")

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: Dict[str, Config] = {
    "full": Config(),
    "quick": Config(
        sizes=(64, 4 * KiB, MiB),
        frame_sizes=(MiB, 8 * MiB),
        runs=2,
        target=0.08,
        run_timeout=20.0,
        limits_seconds=0.08,
        max_warmups=2,
    ),
    # A few seconds, for tests and CI: fixed small counts, no calibration.
    "smoke": Config(
        scenarios=("spsc", "pingpong"),
        sizes=(64, 4 * KiB),
        frame_sizes=(64 * KiB,),
        runs=1,
        target=0.02,
        fixed_count=200,
        run_timeout=20.0,
        limits=False,
        limits_seconds=0.02,
    ),
}


class RunFailed(Exception):
    """A measurement did not produce a result.

    ``status`` is "FAILED" (a receiver's sequence check failed), "failed"
    (an error) or "timed out".
    """

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


# ---- child processes ---------------------------------------------------------
def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" (at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}{where}"


def _child(conn: Any, barrier: Any, job: Callable[..., Any], args: Tuple[Any, ...]) -> None:
    """Entry point of every measurement process."""
    if not os.environ.get("SHMIPC_BENCH_DEBUG"):
        # Peers print banners and warnings; keep them off the progress line.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    try:
        result = job(barrier, *args)
        message: Tuple[str, Any] = ("ok", result)
    except threading.BrokenBarrierError:
        message = ("barrier", "start barrier broken (another process failed or timed out)")
    except SequenceError as exc:
        barrier.abort()
        message = ("seq", str(exc))
    except BaseException as exc:  # report everything; the parent decides
        barrier.abort()
        message = ("error", _describe(exc))
    try:
        conn.send(message)
    finally:
        conn.close()


def _wait_start(barrier: Any) -> float:
    barrier.wait(SETUP_TIMEOUT)
    return time.perf_counter()


def _job_produce(barrier, done, c: Contestant, chan, index, mode, size, count, batch):
    ep = c.open_tx(chan, index)
    try:
        t0 = _wait_start(barrier)
        workloads.produce(ep, mode, size, count, batch, c.mutable)
        t1 = time.perf_counter()
        done.wait(SETUP_TIMEOUT)  # keep the sender open until the data is read
        return {"t0": t0, "t1": t1}
    finally:
        ep.close()


def _job_consume(barrier, done, c: Contestant, chan, index, mode, size, count):
    ep = c.open_rx(chan, index)
    try:
        t0 = _wait_start(barrier)
        t_end = workloads.consume(ep, mode, size, count)
        done.set()
        return {"t0": t0, "t_end": t_end}
    finally:
        ep.close()


def _job_ping(barrier, done, c: Contestant, chans, mode, size, duration, max_count):
    out = c.open_tx(chans[0], 0)
    inn = c.open_rx(chans[1], 0)
    try:
        _wait_start(barrier)
        result = workloads.ping(out, inn, mode, size, duration, max_count)
        done.wait(SETUP_TIMEOUT)
        return result
    finally:
        out.close()
        inn.close()


def _job_pong(barrier, done, c: Contestant, chans, mode, size):
    inn = c.open_rx(chans[0], 0)
    out = c.open_tx(chans[1], 0)
    try:
        _wait_start(barrier)
        n = workloads.pong(inn, out, mode, size)
        done.set()
        return {"echoed": n}
    finally:
        inn.close()
        out.close()


def _job_mpmc_produce(barrier, done, c: Contestant, chan, index, mode, size, count, batch):
    ep = c.open_tx(chan, index)
    try:
        t0 = _wait_start(barrier)
        workloads.mpmc_produce(ep, mode, size, count, batch, index, c.mutable)
        # Report now: the parent ends the stream once every producer has.
        return {"t0": t0, "t1": time.perf_counter()}
    finally:
        ep.close()


def _job_mpmc_consume(barrier, done, c: Contestant, chan, index, mode, size, writers):
    ep = c.open_rx(chan, index)
    try:
        t0 = _wait_start(barrier)
        result = workloads.mpmc_consume(ep, mode, size, writers)
        result["t0"] = t0
        return result
    finally:
        ep.close()


def _frames_endpoint(ep: workloads.Endpoint) -> workloads.Endpoint:
    """Default numpy-frame functions for byte-oriented endpoints."""
    if ep.send_array is None and ep.send is not None:
        ep.send_array = ep.send  # every send() here takes any buffer
    if ep.recv_array is None and ep.recv is not None:
        import numpy

        recv = ep.recv
        frombuffer = numpy.frombuffer
        u64 = numpy.uint64

        def recv_array() -> Any:
            return frombuffer(recv(), dtype=u64)

        ep.recv_array = recv_array
    return ep


def _job_frames_produce(barrier, done, c: Contestant, chan, nbytes, count):
    ep = _frames_endpoint(c.open_tx(chan, 0))
    try:
        t0 = _wait_start(barrier)
        workloads.frames_produce(ep, c.frames == "zero-copy", nbytes, count)
        done.wait(SETUP_TIMEOUT)
        return {"t0": t0}
    finally:
        ep.close()


def _job_frames_consume(barrier, done, c: Contestant, chan, nbytes, count):
    ep = _frames_endpoint(c.open_rx(chan, 0))
    try:
        t0 = _wait_start(barrier)
        t_end = workloads.frames_consume(ep, c.frames == "zero-copy", nbytes, count)
        done.set()
        return {"t0": t0, "t_end": t_end}
    finally:
        ep.close()


def _exit_reason(code: Optional[int]) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def run_processes(
    jobs: Sequence[Tuple[str, Callable[..., Any], Tuple[Any, ...]]],
    timeout: float,
    end_stream: Optional[Callable[[], Optional[bool]]] = None,
) -> Dict[str, Any]:
    """Fork one process per job, wait for every result within *timeout* s.

    Each job is (role, function, args); the function is called in the
    child as ``function(barrier, done, *args)``.  Returns {role: result};
    raises RunFailed.

    N×M runs pass *end_stream*: roles starting with "tx" are writers, "rx"
    readers.  Once every writer has reported, the parent owes the readers
    one end-of-stream marker, and one more each time a reader reports
    while others still run.  ``end_stream()`` sends one without blocking:
    it returns None if the channel is full (tried again shortly), False
    when one marker was sent, True when the stream is closed for every
    reader at once.
    """
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(jobs))
    done = ctx.Event()
    procs: List[Tuple[str, Any, Any]] = []
    try:
        for role, fn, args in jobs:
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(writer, barrier, fn, (done,) + tuple(args)), daemon=True)
            proc.start()
            writer.close()
            procs.append((role, proc, reader))
        pending = {reader: (role, proc) for role, proc, reader in procs}
        results: Dict[str, Any] = {}
        barrier_errors: List[str] = []
        writers = {role for role, _, _ in procs if role.startswith("tx")}
        writers_done = end_stream is None
        owed = 0  # end-of-stream markers the readers are waiting for
        closed = False
        deadline = time.monotonic() + timeout
        while pending:
            while owed and not closed:
                sent = end_stream()  # type: ignore[misc]
                if sent is None:
                    break  # channel full: the readers are still draining
                owed -= 1
                closed = bool(sent)
            left = deadline - time.monotonic()
            if left <= 0:
                roles = ", ".join(sorted(role for role, _ in pending.values()))
                reason = f"no result after {timeout:.0f} s from {roles}"
                if barrier_errors:
                    reason += f"; {barrier_errors[0]}"
                raise RunFailed("timed out", reason)
            wait = min(left, 0.005) if owed and not closed else left
            # The Connections given that are ready (typeshed: any waitable).
            ready: List[Any] = multiprocessing.connection.wait(list(pending), timeout=wait)
            for reader in ready:
                role, proc = pending.pop(reader)
                try:
                    status, payload = reader.recv()
                except (EOFError, OSError):
                    proc.join(2)
                    raise RunFailed("failed", f"{role} process died ({_exit_reason(proc.exitcode)})") from None
                if status == "seq":
                    raise RunFailed("FAILED", f"sequence check in {role}: {payload}")
                if status == "error":
                    raise RunFailed("failed", f"{role}: {payload}")
                if status == "barrier":
                    barrier_errors.append(f"{role}: {payload}")
                    continue
                results[role] = payload
                if writers_done and end_stream is not None and role.startswith("rx") and pending:
                    owed += 1
            if barrier_errors and not pending:
                raise RunFailed("failed", barrier_errors[0])
            if not writers_done and writers <= results.keys():
                writers_done = True
                owed += 1
        done.set()
        for _, proc, _ in procs:
            proc.join(max(1.0, deadline - time.monotonic()))
        return results
    finally:
        done.set()
        for _, proc, reader in procs:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
            reader.close()


# ---- one measurement per scenario --------------------------------------------
def measure_spsc(c: Contestant, size: int, count: int, config: Config, timeout: float) -> Dict[str, Any]:
    batch = config.batch_for(size)
    chan = c.setup(size, kind="spsc", batch=batch)
    try:
        res = run_processes(
            [
                ("rx", _job_consume, (c, chan, 0, c.mode, size, count)),
                ("tx", _job_produce, (c, chan, 0, c.mode, size, count, batch)),
            ],
            timeout,
        )
    finally:
        c.teardown(chan)
    elapsed = res["rx"]["t_end"] - min(res["rx"]["t0"], res["tx"]["t0"])
    elapsed = max(elapsed, 1e-9)
    return {
        "messages": count,
        "elapsed": elapsed,
        "msgs_per_s": count / elapsed,
        "mb_per_s": count * size / elapsed / 1e6,
    }


def measure_pingpong(c: Contestant, size: int, duration: float, config: Config, timeout: float) -> Dict[str, Any]:
    ab = c.setup(size, kind="pingpong")
    try:
        ba = c.setup(size, kind="pingpong")
    except BaseException:
        c.teardown(ab)
        raise
    max_count = config.fixed_count or config.max_count
    try:
        res = run_processes(
            [
                ("rx", _job_pong, (c, (ab, ba), c.mode, size)),
                ("tx", _job_ping, (c, (ab, ba), c.mode, size, duration, max_count)),
            ],
            timeout,
        )
    finally:
        c.teardown(ab)
        c.teardown(ba)
    samples = sorted(res["tx"]["samples"])
    if not samples:
        raise RunFailed("failed", "no round trip completed")
    n = len(samples)
    return {
        "round_trips": n,
        "median_us": samples[n // 2],
        "p99_us": samples[min(n - 1, int(n * 0.99))],
        "min_us": samples[0],
        "mean_us": sum(samples) / n,
    }


def measure_mpmc(c: Contestant, size: int, count: int, config: Config, timeout: float) -> Dict[str, Any]:
    writers, readers = config.mpmc_writers, config.mpmc_readers
    batch = config.batch_for(size)
    chan = c.setup(size, kind="mpmc", batch=batch, writers=writers, readers=readers)
    jobs: List[Tuple[str, Callable[..., Any], Tuple[Any, ...]]] = []
    for j in range(readers):
        jobs.append((f"rx{j}", _job_mpmc_consume, (c, chan, j, c.mode, size, writers)))
    for i in range(writers):
        jobs.append((f"tx{i}", _job_mpmc_produce, (c, chan, i, c.mode, size, count, batch)))
    try:
        res = run_processes(jobs, timeout, end_stream=lambda: c.end_stream(chan))
    finally:
        c.teardown(chan)
    counts = [0] * writers
    sums = [0] * writers
    for j in range(readers):
        for i in range(writers):
            counts[i] += res[f"rx{j}"]["counts"][i]
            sums[i] += res[f"rx{j}"]["sums"][i]
    want_sum = count * (count - 1) // 2
    for i in range(writers):
        if counts[i] != count or sums[i] != want_sum:
            raise RunFailed(
                "FAILED",
                f"sequence check: producer {i} sent {count} messages, consumers got {counts[i]} "
                f"(sequence sum {sums[i]}, expected {want_sum})",
            )
    start = min(r["t0"] for r in res.values())
    end = max(res[f"rx{j}"]["t_end"] for j in range(readers))
    elapsed = max(end - start, 1e-9)
    total = count * writers
    return {
        "messages": total,
        "elapsed": elapsed,
        "msgs_per_s": total / elapsed,
        "mb_per_s": total * size / elapsed / 1e6,
        "per_consumer": [sum(res[f"rx{j}"]["counts"]) for j in range(readers)],
    }


def measure_frames(c: Contestant, nbytes: int, count: int, config: Config, timeout: float) -> Dict[str, Any]:
    chan = c.setup(nbytes, kind="frames")
    try:
        res = run_processes(
            [
                ("rx", _job_frames_consume, (c, chan, nbytes, count)),
                ("tx", _job_frames_produce, (c, chan, nbytes, count)),
            ],
            timeout,
        )
    finally:
        c.teardown(chan)
    elapsed = max(res["rx"]["t_end"] - min(res["rx"]["t0"], res["tx"]["t0"]), 1e-9)
    return {
        "frames": count,
        "elapsed": elapsed,
        "us_per_frame": elapsed / count * 1e6,
        "frames_per_s": count / elapsed,
        "gb_per_s": count * nbytes / elapsed / 1e9,
    }


#: scenario -> (primary metric, higher is better)
METRICS = {
    "spsc": ("msgs_per_s", True),
    "pingpong": ("median_us", False),
    "mpmc": ("msgs_per_s", True),
    "frames": ("us_per_frame", False),
}


# ---- cells, calibration, rounds -------------------------------------------------
@dataclasses.dataclass
class Cell:
    scenario: str
    size: int
    contestant: Contestant
    status: str = "pending"  # ok | FAILED | failed | timed out | n/a
    reason: str = ""
    count: int = 0
    runs: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    failures: List[Dict[str, str]] = dataclasses.field(default_factory=list)
    warmups: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    summary: Dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Wall-clock seconds spent on this cell (processes, setup, traffic).
    wall: float = 0.0

    @property
    def active(self) -> bool:
        return self.status in ("pending", "ok")

    def as_dict(self) -> Dict[str, Any]:
        c = self.contestant
        return {
            "scenario": self.scenario,
            "size": self.size,
            "contestant": c.name,
            "group": c.group,
            "status": self.status,
            "reason": self.reason,
            "count": self.count,
            "runs": self.runs,
            "failures": self.failures,
            "warmups": self.warmups,
            "wall_seconds": round(self.wall, 3),
            **self.summary,
        }


def _guess_rate(size: int) -> float:
    """A cautious first guess of messages/s, only to size the first warm-up."""
    return min(50_000.0, 5e8 / size)


class Progress:
    """One status line on stderr, rewritten in place on a terminal."""

    def __init__(self, stream: Any = None, enabled: Optional[bool] = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = tty if enabled is None else enabled
        self.tty = tty
        self.start = time.monotonic()
        self._last_plain = 0.0
        self._width = 0

    def update(self, done: int, total: int, text: str) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        line = f"[{done:>4}/{total}] {elapsed:5.0f}s  {text}"
        if self.tty:
            cols = 120
            try:
                cols = os.get_terminal_size(self.stream.fileno()).columns
            except (OSError, ValueError, AttributeError):
                pass
            if cols < 40:  # unknown or tiny terminal
                cols = 120
            line = line[: cols - 1]
            self.stream.write("\r" + line + " " * max(0, self._width - len(line)))
            self._width = len(line)
        else:
            # Not a terminal: a plain line now and then.
            if elapsed - self._last_plain < 5 and done not in (0, total):
                return
            self._last_plain = elapsed
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled and self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def size_label(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


class Bench:
    """Runs every selected scenario for every available contestant."""

    def __init__(
        self,
        config: Config,
        contestants: Iterable[Contestant],
        progress: Optional[Progress] = None,
    ) -> None:
        self.config = config
        self.contestants = list(contestants)
        self.progress = progress or Progress(enabled=False)
        self.statuses: Dict[str, Dict[str, str]] = {}
        self.cells: List[Cell] = []
        #: scenario -> why it was not run
        self.skipped: Dict[str, str] = {}

    # ---- availability ----------------------------------------------------
    def check_contestants(self) -> List[Contestant]:
        available = []
        for c in self.contestants:
            try:
                c.check()
            except NotInstalled as exc:
                self.statuses[c.name] = {"status": "not installed", "reason": str(exc)}
            except Unavailable as exc:
                self.statuses[c.name] = {"status": "unavailable", "reason": str(exc)}
            except Exception as exc:  # a broken install is a result too
                self.statuses[c.name] = {"status": "unavailable", "reason": _describe(exc)}
            else:
                self.statuses[c.name] = {"status": "available", "reason": ""}
                available.append(c)
        return available

    def build_cells(self, available: Sequence[Contestant]) -> None:
        if "frames" in self.config.scenarios:
            try:
                import numpy  # noqa: F401
            except ImportError:
                self.skipped["frames"] = "numpy is not installed (pip install numpy)"
        for scenario in self.config.scenarios:
            if scenario in self.skipped:
                continue
            for size in self.config.sizes_for(scenario):
                for c in available:
                    if not c.supports(scenario):
                        continue
                    cell = Cell(scenario, size, c)
                    limit = c.max_size()
                    if limit is not None and size > limit:
                        cell.status = "n/a"
                        cell.reason = f"messages above {size_label(limit)}"
                    self.cells.append(cell)

    # ---- measuring ---------------------------------------------------------
    def _measure(self, cell: Cell, count: int, timeout: float) -> Dict[str, Any]:
        c, cfg = cell.contestant, self.config
        if cell.scenario == "spsc":
            return measure_spsc(c, cell.size, count, cfg, timeout)
        if cell.scenario == "pingpong":
            return measure_pingpong(c, cell.size, cfg.target, cfg, timeout)
        if cell.scenario == "mpmc":
            return measure_mpmc(c, cell.size, count, cfg, timeout)
        if cell.scenario == "frames":
            return measure_frames(c, cell.size, count, cfg, timeout)
        raise ValueError(cell.scenario)

    def _timeout(self) -> float:
        return SETUP_TIMEOUT + min(self.config.run_timeout, max(5.0, 25 * self.config.target))

    def _messages_per_run(self, cell: Cell) -> int:
        if cell.scenario == "mpmc":
            return self.config.mpmc_writers
        return 1

    def calibrate(self, cell: Cell) -> None:
        """Warm up and choose the message count for the measured runs."""
        cfg = self.config
        if cell.scenario == "pingpong":
            # Duration-bounded: one short warm-up.
            res = measure_pingpong(cell.contestant, cell.size, cfg.target / 2, cfg, self._timeout())
            cell.warmups.append(res)
            cell.count = 0
            return
        if cfg.fixed_count is not None:
            cell.count = cfg.fixed_count
            cell.warmups.append(self._measure(cell, cfg.fixed_count, self._timeout()))
            return
        target = cfg.target
        share = self._messages_per_run(cell)
        count = max(2, int(_guess_rate(cell.size) * target / 4 / share))
        for _ in range(max(1, cfg.max_warmups)):
            res = self._measure(cell, count, self._timeout())
            cell.warmups.append(res)
            elapsed = res["elapsed"]
            if elapsed >= target / 4 or count >= cfg.max_count:
                break
            count = min(cfg.max_count, max(count * 2, int(count * target / 3 / max(elapsed, 1e-6))))
        cell.count = max(2, min(cfg.max_count, int(count * target / max(elapsed, 1e-6))))

    def run(self) -> Dict[str, Any]:
        t_start = time.monotonic()
        meta = machine_info()
        available = self.check_contestants()
        self.build_cells(available)
        limits: Dict[str, Any] = {"skipped": "not requested"}
        if self.config.limits:
            from .limits import measure_limits

            self.progress.update(0, 1, "physical limits (C helper)")
            limits = measure_limits(self.config.limits_seconds)
        live = [cell for cell in self.cells if cell.active]
        rounds = self.config.runs + 1
        total = len(live) * rounds
        step = 0
        for r in range(rounds):
            for scenario, size, group in _groups(live):
                k = r % len(group)
                for cell in group[k:] + group[:k]:
                    step += 1
                    if not cell.active:
                        continue
                    what = "warm-up" if r == 0 else f"run {r}/{self.config.runs}"
                    self.progress.update(
                        step, total, f"{scenario} {size_label(size)} · {cell.contestant.name} · {what}"
                    )
                    self._step(cell, r)
        self.progress.clear()
        for cell in self.cells:
            self._summarize(cell)
        _ratios(self.cells)
        meta["loadavg_end"] = _loadavg()
        meta["wall_seconds"] = round(time.monotonic() - t_start, 2)
        return {
            "meta": meta,
            "config": self.config.as_dict(),
            "limits": limits,
            "contestants": [
                {
                    "name": c.name,
                    "group": c.group,
                    "mode": c.mode,
                    "scenarios": sorted(c.scenarios),
                    "frames": c.frames,
                    "note": c.note,
                    **self.statuses[c.name],
                }
                for c in self.contestants
            ],
            "skipped_scenarios": self.skipped,
            "results": [cell.as_dict() for cell in self.cells],
        }

    def _step(self, cell: Cell, r: int) -> None:
        t0 = time.monotonic()
        try:
            self._step_inner(cell, r)
        finally:
            cell.wall += time.monotonic() - t0

    def _step_inner(self, cell: Cell, r: int) -> None:
        try:
            if r == 0:
                self.calibrate(cell)
            else:
                res = self._measure(cell, cell.count, self._timeout())
                cell.runs.append(res)
            if cell.status == "pending":
                cell.status = "ok"
        except RunFailed as exc:
            cell.failures.append({"round": str(r), "status": exc.status, "reason": exc.reason})
            if exc.status == "timed out" or r == 0:
                cell.status = exc.status
                cell.reason = exc.reason
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # setup() or teardown() raised in the parent
            cell.failures.append({"round": str(r), "status": "failed", "reason": _describe(exc)})
            cell.status = "failed"
            cell.reason = _describe(exc)

    def _summarize(self, cell: Cell) -> None:
        if cell.status in ("ok", "pending") and cell.failures:
            bad = [f for f in cell.failures if f["status"] == "FAILED"]
            first = (bad or cell.failures)[0]
            cell.status = "FAILED" if bad else first["status"]
            cell.reason = f"{len(cell.failures)} of {len(cell.failures) + len(cell.runs)} runs: {first['reason']}"
        if cell.status == "pending":
            cell.status = "failed"
            cell.reason = "no measured run"
        if not cell.runs:
            return
        metric, _ = METRICS[cell.scenario]
        values = [run[metric] for run in cell.runs]
        cell.summary = {
            "metric": metric,
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }
        if cell.scenario == "spsc" or cell.scenario == "mpmc":
            cell.summary["mb_per_s"] = statistics.median(run["mb_per_s"] for run in cell.runs)
        if cell.scenario == "pingpong":
            cell.summary["p99_us"] = statistics.median(run["p99_us"] for run in cell.runs)
        if cell.scenario == "frames":
            cell.summary["gb_per_s"] = statistics.median(run["gb_per_s"] for run in cell.runs)


def _groups(cells: Sequence[Cell]) -> List[Tuple[str, int, List[Cell]]]:
    out: Dict[Tuple[str, int], List[Cell]] = {}
    for cell in cells:
        out.setdefault((cell.scenario, cell.size), []).append(cell)
    return [(s, n, group) for (s, n), group in out.items()]


def _ratios(cells: Sequence[Cell]) -> None:
    """ratio_to_best_peer: > 1 means better than the best peer of the cell."""
    for scenario, _, group in _groups(cells):
        metric, higher = METRICS[scenario]
        peers = [c for c in group if c.contestant.group == "peer" and c.status == "ok" and c.summary]
        if not peers:
            continue
        pick = max if higher else min
        best = pick(peers, key=lambda c: c.summary["median"])
        for cell in group:
            if cell.status != "ok" or not cell.summary:
                continue
            mine = cell.summary["median"]
            ratio = mine / best.summary["median"] if higher else best.summary["median"] / mine
            cell.summary["best_peer"] = best.contestant.name
            cell.summary["ratio_to_best_peer"] = ratio


# ---- machine description ---------------------------------------------------------
def _loadavg() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _version(dist: str) -> Optional[str]:
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover
        return None
    try:
        return metadata.version(dist)
    except Exception:
        return None


def machine_info() -> Dict[str, Any]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    try:
        import numpy

        numpy_version: Optional[str] = numpy.__version__
    except ImportError:
        numpy_version = None
    shmipc_version: Optional[str]
    try:
        from .. import __version__ as shmipc_version
    except ImportError:
        shmipc_version = None
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory_bytes": _mem_total(),
        "kernel": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "numpy": numpy_version,
        "shmipc": shmipc_version,
        "peers": {
            dist: _version(dist)
            for dist in ("sysv_ipc", "posix_ipc", "faster-fifo", "pyzmq", "iceoryx2", "matplotlib")
        },
        "loadavg_start": _loadavg(),
    }
