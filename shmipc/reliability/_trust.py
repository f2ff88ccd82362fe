"""Figures 15 to 19: trust and faults.

15 a hostile writer (another uid with write access) against a Ring and a
   Mailbox in use; 16 objects squatted by another uid under our keys and
   names; 17 exceptions raised by a signal handler at any bytecode of the
   Ring's calls; 18 threads sharing a Ring, and fork from a threaded
   process; 19 SIGKILL and signal-handler exceptions inside create/remove.

The attacker and the squatter are forked children that drop to uid/gid
65534 (the suite runs as root); the victims stay root.  Everything a figure
creates is recorded (or made by a recorded child) and removed.
"""
from __future__ import annotations

import array
import bisect
import json
import os
import random
import signal
import struct
import threading
import time
import traceback
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

from . import _harness as h
from ._harness import Row, Tier, row

NOBODY = 65534
_mono = time.monotonic


def _drop_privileges() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _documented() -> Tuple[Type[BaseException], ...]:
    from ..errors import CorruptedError, EndOfStream, RemovedError

    return (CorruptedError, TimeoutError, EndOfStream, RemovedError, ValueError, BufferError)


def _wait_path(path: str, timeout: float) -> bool:
    deadline = _mono() + timeout
    while _mono() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.002)
    return False


def _touch(path: str) -> None:
    with open(path, "w"):
        pass


# ---- 15: a hostile writer ---------------------------------------------------------


class _Tally:
    """What one victim saw: calls, documented exceptions, the rest."""

    def __init__(self) -> None:
        self.calls = 0
        self.ok = 0
        self.documented: Counter = Counter()
        self.samples: Counter = Counter()  # op: exception: message, a few distinct ones
        self.unexpected: Counter = Counter()
        self.overruns = 0
        self.worst = 0.0  # elapsed - allowed, seconds
        self.worst_call = ""

    def call(self, name: str, allowed: float, fn: Callable[..., Any], *args: Any) -> Any:
        self.calls += 1
        t0 = _mono()
        result = None
        try:
            result = fn(*args)
            self.ok += 1
        except _documented() as e:
            self.documented[type(e).__name__] += 1
            key = f"{name}: {type(e).__name__}: {str(e)[:70]}"
            if key in self.samples or len(self.samples) < 40:
                self.samples[key] += 1
        except Exception as e:  # everything else is a finding
            self.unexpected[f"{name}: {type(e).__name__}: {str(e)[:120]}"] += 1
        over = _mono() - t0 - allowed
        if over > self.worst:
            self.worst, self.worst_call = over, name
        if over > 1.0:
            self.overruns += 1
        return result

    def dump(self, path: str, done: bool) -> None:
        h.write_json(path, {
            "calls": self.calls, "ok": self.ok, "documented": dict(self.documented),
            "unexpected": dict(self.unexpected), "samples": dict(self.samples), "overruns": self.overruns,
            "worst": self.worst, "worst_call": self.worst_call, "done": done,
        })


def _ring_ops(r: Any, rnd: random.Random, t: float) -> List[Tuple[str, float, Callable[[], Any]]]:
    def msg() -> bytes:
        return os.urandom(rnd.choice((0, 1, 8, 24, 100, 300)))

    def reserve() -> None:
        n = rnd.choice((0, 8, 40, 200))
        with r.reserve(n, t) as buf:
            buf[:] = bytes(n)

    def view() -> None:
        with r.get_view(t) as v:
            bytes(v)

    return [
        ("put", t, lambda: r.put(msg(), t)),
        ("get", t, lambda: r.get(t)),
        ("put_many", t, lambda: r.put_many([msg() for _ in range(rnd.randint(1, 5))], t)),
        ("get_many", t, lambda: r.get_many(rnd.randint(1, 6), t)),
        ("reserve block", t, reserve),
        ("get_view block", t, view),
        ("put_nowait", 0, lambda: r.put_nowait(msg())),
        ("get_nowait", 0, lambda: r.get_nowait()),
        ("len", 0, lambda: len(r)),
        ("empty", 0, lambda: r.empty()),
        ("full", 0, lambda: r.full()),
        ("repr", 0, lambda: repr(r)),
        ("closed", 0, lambda: r.closed),
    ]


def _mailbox_ops(b: Any, rnd: random.Random, t: float) -> List[Tuple[str, float, Callable[[], Any]]]:
    def msg() -> bytes:
        return os.urandom(rnd.choice((0, 1, 8, 40, 64)))

    ops = [
        ("send", t, lambda: b.send(msg(), t)),
        ("recv", t, lambda: b.recv(t)),
        ("repr", 0, lambda: repr(b)),
        ("closed", 0, lambda: b.closed),
    ]
    if b.overwrite:
        ops.append(("latest", 0, lambda: b.latest()))
    else:
        def send_view() -> None:
            n = rnd.choice((0, 8, 64))
            with b.send_view(n, t) as buf:
                buf[:] = bytes(n)

        def recv_view() -> None:
            with b.recv_view(t) as v:
                bytes(v)

        ops += [("send_view block", t, send_view), ("recv_view block", t, recv_view)]
    return ops


def _victim(kind: str, shmid: int, phase: str, seconds: float, ready: str, out: str, seed: int) -> int:
    """Root: run every public call with timeouts while the attacker writes."""
    from ..mailbox import Mailbox
    from ..ring import Ring

    rnd = random.Random(seed)
    obj: Any = Ring.attach(shmid=shmid) if kind == "ring" else Mailbox.attach(shmid=shmid)
    tally = _Tally()
    t = 0.02
    ops = _ring_ops(obj, rnd, t) if kind == "ring" else _mailbox_ops(obj, rnd, t)
    _touch(ready)
    end = _mono() + seconds
    next_dump = _mono() + 0.25
    while _mono() < end:
        if phase == "locks":
            # Hold a lock in a block while the attacker writes around it.
            if kind == "ring":
                def held(r: Any = obj) -> None:
                    if rnd.random() < 0.5:
                        with r.reserve(16, 0.2) as buf:
                            buf[:] = bytes(16)
                            time.sleep(0.001)
                    else:
                        r.put(b"x" * 8, 0.01)
                        with r.get_view(0.2) as v:
                            bytes(v)
                            time.sleep(0.001)
                tally.call("block held", 0.2, held)
            elif obj.overwrite:
                tally.call("send", 0.2, obj.send, b"y" * 32, 0.2)
                tally.call("recv", 0.02, obj.recv, 0.02)
            else:
                def held_box(b: Any = obj) -> None:
                    if rnd.random() < 0.5:
                        with b.send_view(16, 0.2) as buf:
                            buf[:] = bytes(16)
                            time.sleep(0.001)
                    else:
                        with b.recv_view(0.2) as v:
                            bytes(v)
                            time.sleep(0.001)
                tally.call("block held", 0.2, held_box)
        elif phase == "bells":
            # Asleep on an empty ring / mailbox while the doorbells flip.
            if kind == "ring":
                tally.call("get(0.05)", 0.05, obj.get, 0.05)
            else:
                tally.call("recv(0.05)", 0.05, obj.recv, 0.05)
        else:
            name, allowed, fn = rnd.choice(ops)
            tally.call(name, allowed, fn)
        if _mono() > next_dump:
            tally.dump(out, False)
            next_dump = _mono() + 0.25
    tally.call("detach", 0, obj.detach)
    tally.dump(out, True)
    return 0


_INTERESTING = (0, 1, 2, 7, 8, 15, 16, 0x7F, 0x80, 0xFF, 4095, 4096, 4104, 0x7FFFFFFF, 0x80000000,
                0xFFFFFFFF, 1 << 32, (1 << 62) - 8, 1 << 62, (1 << 63) - 1, 1 << 63, (1 << 64) - 8,
                (1 << 64) - 1, 0x7F0000001000, 0xDEADBEEFCAFE0000)


def _attacker(shmid: int, kind: str, phase: str, seconds: float, snapshot: bytes, victims: List[int],
              seed: int, wfd: int) -> int:
    """As uid 65534: write random and chosen values over the object."""
    _drop_privileges()
    from ..segment import Segment

    seg = Segment.attach(shmid=shmid, trusted_uids={0})
    buf = memoryview(seg)
    size = len(buf)
    hdr = len(snapshot)
    rnd = random.Random(seed)
    values = list(_INTERESTING) + victims + [v | 0x80000000 for v in victims]
    if kind == "ring":
        locks: Tuple[int, ...] = (64, 128)
        bells: Tuple[int, ...] = (192, 256, 320, 384)
    else:
        # Old and new mailbox layouts: sem_t/mutex at 64/128/192/320, or
        # futex counters and bells at 64..88, locks at 128/192, bell at 268.
        locks = (64, 128, 192)
        bells = (64, 68, 72, 76, 128, 264, 268, 320)
    writes = 0
    cursor = 0

    def put(off: int, width: int, value: int) -> None:
        nonlocal writes
        if 0 <= off and off + width <= size:
            buf[off:off + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
            writes += 1

    def value() -> int:
        return rnd.choice(values) if rnd.random() < 0.6 else rnd.getrandbits(64)

    end = _mono() + seconds
    while _mono() < end:
        if phase == "locks":
            lock = rnd.choice(locks)
            for off in range(lock - 16, lock + 64, 8):
                if off != lock or rnd.random() < 0.2:  # the lock word itself now and then
                    put(off, 8, value())
            if rnd.random() < 0.05:
                buf[:hdr] = snapshot  # let the victim take the lock again
            time.sleep(0.0002)
        elif phase == "bells":
            for off in bells:
                put(off, 4, rnd.getrandbits(32) if rnd.random() < 0.5 else writes)
            if rnd.random() < 0.01:
                time.sleep(0.0005)
        else:
            for _ in range(rnd.randint(1, 8)):
                p = rnd.random()
                width = rnd.choice((1, 2, 4, 8))
                if p < 0.45:
                    put(rnd.randrange(0, hdr, width), width, value())
                elif p < 0.8:
                    put(rnd.randrange(0, size - width + 1, width), width, value())
                else:  # a sweep, so that every word of the header is hit
                    put(cursor, 8, value())
                    cursor = (cursor + 8) % hdr
            r = rnd.random()
            if r < 0.03:
                buf[:hdr] = snapshot  # a working header again, for a while
                time.sleep(0.003)
            elif r < 0.5:
                time.sleep(0.0003)
    buf.release()
    seg.detach()
    os.write(wfd, json.dumps({"writes": writes}).encode())
    os.close(wfd)
    return 0


def _hostile_round(kind: str, phase: str, seconds: float, tmp: str, seed: int) -> Dict[str, Any]:
    overwrite = kind == "mailbox-latest"
    if kind == "ring":
        obj = h.ring(2048, mode=0o666)
        hdr = 4096
    else:
        obj = h.mailbox(64, mode=0o666, overwrite=overwrite)
        hdr = 512
    base = "ring" if kind == "ring" else "mailbox"
    res: Dict[str, Any] = {"crashes": 0, "hung": 0, "calls": 0, "overruns": 0, "worst": 0.0,
                           "unexpected": Counter(), "documented": Counter(), "writes": 0, "signals": [],
                           "samples": Counter()}
    victims: List[h.Child] = []
    attacker: Optional[h.Child] = None
    try:
        snapshot = bytes(memoryview(obj.segment)[:hdr])
        for i in range(2):
            ready = os.path.join(tmp, f"v{seed}-{i}.ready")
            out = os.path.join(tmp, f"v{seed}-{i}.json")
            victims.append(h.Child(_victim, base, obj.shmid, phase, seconds, ready, out, seed * 10 + i))
            if not _wait_path(ready, 10):
                raise RuntimeError("victim never started")
        rfd, wfd = os.pipe()
        attacker = h.Child(_attacker, obj.shmid, base, phase, seconds, snapshot,
                           [c.pid for c in victims], seed, wfd)
        os.close(wfd)
        with os.fdopen(rfd, "rb") as f:
            attacker_says = json.loads(f.read() or b"{}")
        codes, hangs = h.join_all(victims, seconds + 15)
        acode = attacker.join(10)
        res["hung"] = hangs
        for i, code in enumerate(codes):
            if code is not None and code < 0:
                res["crashes"] += 1
                res["signals"].append(signal.Signals(-code).name)
            data = h.read_json(os.path.join(tmp, f"v{seed}-{i}.json")) or {}
            res["calls"] += data.get("calls", 0)
            res["overruns"] += data.get("overruns", 0)
            res["worst"] = max(res["worst"], data.get("worst", 0.0))
            res["unexpected"].update(data.get("unexpected", {}))
            res["documented"].update(data.get("documented", {}))
            res["samples"].update(data.get("samples", {}))
            if code not in (0, None) and code > 0:
                res["unexpected"][f"victim exit code {code}"] += 1
        res["writes"] = attacker_says.get("writes", 0)
        if acode != 0:
            res["unexpected"][f"attacker exit code {acode}"] += 1
    finally:
        for c in victims + ([attacker] if attacker else []):
            if c.alive():
                c.kill()
                c.join(5)
        h.dispose(obj)
    return res


def fig_hostile_writer(tier: Tier, tmp: str) -> List[Row]:
    rows: List[Row] = []
    phases = [("random", tier.t(3.0, 60.0)), ("locks", tier.t(1.5, 20.0)), ("bells", tier.t(1.5, 20.0))]
    seed = 0
    for kind, label in (("ring", "Ring"), ("mailbox-handoff", "Mailbox (handoff)"),
                        ("mailbox-latest", "Mailbox (latest value)")):
        total: Dict[str, Any] = {"crashes": 0, "hung": 0, "calls": 0, "overruns": 0, "worst": 0.0,
                                 "unexpected": Counter(), "documented": Counter(), "writes": 0,
                                 "signals": [], "samples": Counter()}
        per_phase = []
        for phase, seconds in phases:
            seed += 1
            r = _hostile_round(kind, phase, seconds, tmp, seed)
            per_phase.append(f"{phase}: {r['calls']} calls, {r['writes']} writes, crashes {r['crashes']}"
                             f"{' ' + ','.join(r['signals']) if r['signals'] else ''}, hung {r['hung']}, "
                             f"late {r['overruns']}, other exceptions {sum(r['unexpected'].values())}")
            for k in ("crashes", "hung", "calls", "overruns", "writes"):
                total[k] += r[k]
            total["worst"] = max(total["worst"], r["worst"])
            total["unexpected"].update(r["unexpected"])
            total["documented"].update(r["documented"])
            total["samples"].update(r["samples"])
            total["signals"] += r["signals"]
        bad = total["crashes"] + total["hung"] + total["overruns"] + sum(total["unexpected"].values())
        value = (f"{total['calls']:,} calls vs {total['writes']:,} writes: crashes {total['crashes']}, "
                 f"late {total['overruns'] + total['hung']}, other exceptions {sum(total['unexpected'].values())}")
        detail = "; ".join(per_phase) + f"; worst lateness {total['worst'] * 1000:.1f} ms; documented: " + \
            ", ".join(f"{k} {v}" for k, v in total["documented"].most_common())
        odd = [(k, v) for k, v in total["samples"].most_common() if ": ValueError" in k or ": BufferError" in k]
        if odd:
            detail += "; ValueError/BufferError seen: " + "; ".join(f"{k} x{v}" for k, v in odd[:4])
        if total["unexpected"]:
            detail += "; UNEXPECTED: " + "; ".join(f"{k} x{v}" for k, v in total["unexpected"].most_common(8))
        if total["signals"]:
            detail += "; victims killed by " + ", ".join(total["signals"])
        rows.append(row("15", f"hostile writer (uid {NOBODY}, random/lock/doorbell words) vs a {label} in use",
                        value, "0 / 0 / 0", bad == 0, detail=detail))
    return rows


# ---- 16: squatting ----------------------------------------------------------------


def _squatter(wfd: int, keys: Dict[str, int], name: str) -> int:
    """As uid 65534: create each kind under the victim's key or name, mode 0o666."""
    _drop_privileges()
    from ..liveness import Liveness
    from ..mailbox import Mailbox
    from ..named_semaphore import NamedSemaphore
    from ..ring import Ring
    from ..segment import Segment
    from ..semaphore import Semaphore

    made: Dict[str, Any] = {}
    try:
        made["segment"] = ("shm", Segment.create(4096, keys["segment"], mode=0o666).shmid)
        made["ring"] = ("shm", Ring.create(1024, keys["ring"], mode=0o666).shmid)
        made["mailbox"] = ("shm", Mailbox.create(64, keys["mailbox"], mode=0o666).shmid)
        made["mailbox-latest"] = ("shm", Mailbox.create(64, keys["mailbox-latest"], mode=0o666,
                                                        overwrite=True).shmid)
        made["semaphore"] = ("sem", Semaphore.create(1, keys["semaphore"], mode=0o666).semid)
        made["liveness"] = ("sem", Liveness.create(4, keys["liveness"], mode=0o666).semid)
        NamedSemaphore.create(name, 1, mode=0o666)
        made["named"] = ("name", name)
    finally:
        os.write(wfd, json.dumps(made).encode())
        os.close(wfd)
    return 0


def _squat_attempts(keys: Dict[str, int], shmids: Dict[str, int], name: str,
                    trusted: Optional[set]) -> List[Tuple[str, str]]:
    """Every way of reaching the squatted objects; (label, outcome)."""
    from ..liveness import Liveness
    from ..mailbox import Mailbox
    from ..named_semaphore import NamedSemaphore
    from ..ring import Ring
    from ..segment import Segment
    from ..semaphore import Semaphore

    kw: Dict[str, Any] = {} if trusted is None else {"trusted_uids": trusted}
    tries: List[Tuple[str, Callable[[], Any]]] = [
        ("Segment.attach(key)", lambda: Segment.attach(keys["segment"], **kw)),
        ("Segment.attach(shmid)", lambda: Segment.attach(shmid=shmids["segment"], **kw)),
        ("Segment.open(key)", lambda: Segment.open(keys["segment"], 4096, **kw)),
        ("Ring.attach(key)", lambda: Ring.attach(keys["ring"], **kw)),
        ("Ring.attach(shmid)", lambda: Ring.attach(shmid=shmids["ring"], **kw)),
        ("Mailbox.attach(key)", lambda: Mailbox.attach(keys["mailbox"], **kw)),
        ("Mailbox.attach(key), latest value", lambda: Mailbox.attach(keys["mailbox-latest"], **kw)),
        ("Mailbox.attach(shmid)", lambda: Mailbox.attach(shmid=shmids["mailbox"], **kw)),
        ("Semaphore.attach(key)", lambda: Semaphore.attach(keys["semaphore"], **kw)),
        ("Semaphore.open(key)", lambda: Semaphore.open(keys["semaphore"], 1, **kw)),
        ("Liveness.attach(key)", lambda: Liveness.attach(keys["liveness"], **kw)),
        ("Liveness.open(key)", lambda: Liveness.open(keys["liveness"], 4, **kw)),
        ("NamedSemaphore.open(name)", lambda: NamedSemaphore.open(name, **kw)),
    ]
    out = []
    for label, fn in tries:
        try:
            obj = fn()
        except PermissionError:
            out.append((label, "PermissionError"))
            continue
        except TypeError as e:
            if "trusted_uids" in str(e):
                out.append((label, "no trusted_uids parameter"))
                continue
            out.append((label, f"TypeError: {e}"))
            continue
        except Exception as e:
            out.append((label, f"{type(e).__name__}: {str(e)[:80]}"))
            continue
        out.append((label, "accepted"))
        for meth in ("detach", "close"):  # leave the squatter's objects as they are
            fn2 = getattr(obj, meth, None)
            if fn2 is not None:
                try:
                    fn2()
                except Exception:
                    pass
                break
    return out


def fig_squatting(tier: Tier, tmp: str) -> List[Row]:
    from .. import _core

    kinds = ("segment", "ring", "mailbox", "mailbox-latest", "semaphore", "liveness")
    keys = {k: h.free_key() for k in kinds}
    name = h.new_name("squat")
    rfd, wfd = os.pipe()
    child = h.Child(_squatter, wfd, keys, name)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        made = json.loads(f.read() or b"{}")
    child.join(10)
    for kind, (what, ident) in made.items():  # recorded at once, so a crash below leaks nothing
        if what == "shm":
            h.track_shm(ident)
        elif what == "sem":
            h.track_sem(ident)
    try:
        if len(made) != len(kinds) + 1:
            return [row("16", "squatting: uid 65534 pre-creates every kind", f"only {sorted(made)} created",
                        "all created", False)]
        shmids = {k: v[1] for k, v in made.items() if v[0] == "shm"}
        without = _squat_attempts(keys, shmids, name, None)
        with_trust = _squat_attempts(keys, shmids, name, {NOBODY})
    finally:
        for kind, (what, ident) in made.items():
            try:
                if what == "shm":
                    _core.shm_remove(ident)
                elif what == "sem":
                    _core.sem_remove(ident)
                else:
                    os.unlink("/dev/shm/sem." + ident.lstrip("/"))
            except OSError:
                pass
    accepted = [label for label, res in without if res == "accepted"]
    refused_other = [f"{label}: {res}" for label, res in without if res not in ("accepted", "PermissionError")]
    rows = [row(
        "16", "squatting: objects uid 65534 made (mode 0666) under our keys/name, attached without opt-in",
        f"{len(accepted)} of {len(without)} accepted", "0", not accepted,
        detail=("accepted: " + ", ".join(accepted) + "; " if accepted else "")
        + ("refused otherwise than PermissionError: " + "; ".join(refused_other) if refused_other
           else "all refused with PermissionError"),
    )]
    no_param = [label for label, res in with_trust if res == "no trusted_uids parameter"]
    checked = [(label, res) for label, res in with_trust if res != "no trusted_uids parameter"]
    ok = [label for label, res in checked if res == "accepted"]
    rows.append(row(
        "16", "sanity: the same attaches with trusted_uids={65534}",
        f"{len(ok)} of {len(checked)} accepted", "all", len(ok) == len(checked),
        detail="; ".join(f"{label}: {res}" for label, res in checked if res != "accepted"),
    ))
    if no_param:
        rows.append(row("16", "attaches that take no trusted_uids (a foreign object cannot be opted in)",
                        ", ".join(sorted(set(no_param))), "-", None))
    return rows


# ---- 17: exceptions from a signal handler at any bytecode ---------------------------


class _Interrupt(BaseException):
    """What the SIGALRM handler raises (a BaseException, as KeyboardInterrupt)."""


_ARMED = [False]
_RAISED = [0]
_SIGNALS = [0]


def _on_alarm(signum: int, frame: Any) -> None:
    _SIGNALS[0] += 1
    if _ARMED[0]:
        _ARMED[0] = False  # one raise per armed call: the bookkeeping around it runs unarmed
        _RAISED[0] += 1
        raise _Interrupt()


def _attempt(fn: Callable[..., Any], *args: Any) -> Tuple[Any, Optional[BaseException]]:
    """fn(*args) with the handler armed: (result, None) or (None, exception)."""
    try:
        try:
            _ARMED[0] = True
            result = fn(*args)
            _ARMED[0] = False
            return result, None
        except BaseException as e:  # noqa: B036 - the interrupt is the point
            _ARMED[0] = False
            return None, e
    except _Interrupt as e:  # raised inside the except clause above, before it disarmed
        return None, e


def _storm(on: bool) -> None:
    if on:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 100e-6, 100e-6)
    else:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        _ARMED[0] = False


_SEQ = struct.Struct("<Q")
_END = (1 << 63) - 1
_PAD = bytes(64)


def _seq_msg(seq: int) -> bytes:
    return _SEQ.pack(seq) + _PAD[: (seq % 5) * 8]


def _reserve_put(r: Any, data: bytes, timeout: float) -> None:
    with r.reserve(len(data), timeout) as buf:
        buf[:] = data


def _view_get(r: Any, timeout: float) -> bytes:
    with r.get_view(timeout) as v:
        data = bytes(v)
    return data


def _held_report(r: Any) -> Dict[str, Any]:
    return {"plock_held": bool(r._plock.held), "clock_held": bool(r._clock.held)}


def _async_producer(shmid: int, target: int, cap: float, tmp: str) -> int:
    from ..ring import Ring

    r = Ring.attach(shmid=shmid)
    certain, uncertain = array.array("q"), array.array("q")
    other: Counter = Counter()
    seq = 0
    i = 0
    consumer_done = os.path.join(tmp, "consumer.target")
    _storm(True)
    end = _mono() + cap
    while True:
        i += 1
        if i % 256 == 0 and ((_RAISED[0] >= target and os.path.exists(consumer_done)) or _mono() > end):
            break
        op = i % 3
        if op == 0:
            res, exc = _attempt(r.put, _seq_msg(seq), 1.0)
            batch = [seq]
        elif op == 1:
            batch = list(range(seq, seq + 1 + i % 4))
            res, exc = _attempt(r.put_many, [_seq_msg(s) for s in batch], 1.0)
        else:
            res, exc = _attempt(_reserve_put, r, _seq_msg(seq), 1.0)
            batch = [seq]
        seq += len(batch)
        if exc is None:
            n = res if op == 1 else 1
            certain.extend(batch[:n])
        elif isinstance(exc, _Interrupt):
            uncertain.extend(batch)
        elif not isinstance(exc, TimeoutError):  # a timeout queued nothing
            other[f"{type(exc).__name__}: {exc}"] += 1
    _storm(False)
    held = _held_report(r)
    for _ in range(10):
        try:
            r.put(_seq_msg(_END), 5)
            break
        except TimeoutError:
            other["END put timed out"] += 1
    with open(os.path.join(tmp, "producer.certain"), "wb") as f:
        certain.tofile(f)
    with open(os.path.join(tmp, "producer.uncertain"), "wb") as f:
        uncertain.tofile(f)
    h.write_json(os.path.join(tmp, "producer.json"), {
        **held, "raised": _RAISED[0], "signals": _SIGNALS[0], "other": dict(other), "sent": seq})
    _wait_path(os.path.join(tmp, "exit"), 60)
    r.detach()
    return 0


def _async_consumer(shmid: int, target: int, cap: float, tmp: str) -> int:
    from ..ring import Ring

    r = Ring.attach(shmid=shmid)
    events = array.array("q")  # seq >= 0 delivered; -k: a get that raised, may have taken k
    other: Counter = Counter()
    i = 0
    done = False
    flagged = False
    _storm(True)
    end = _mono() + cap + 30
    while not done and _mono() < end:
        i += 1
        if not flagged and _RAISED[0] >= target:
            _touch(os.path.join(tmp, "consumer.target"))
            flagged = True
        op = i % 3
        if op == 0:
            res, exc = _attempt(r.get, 1.0)
            got, k = [res], 1
        elif op == 1:
            res, exc = _attempt(r.get_many, 4, 1.0)
            got, k = res, 4
        else:
            res, exc = _attempt(_view_get, r, 1.0)
            got, k = [res], 1
        if exc is None:
            for m in got:
                s = _SEQ.unpack_from(m)[0]
                if s == _END:
                    done = True
                else:
                    events.append(s)
        elif isinstance(exc, _Interrupt):
            events.append(-k)
        elif not isinstance(exc, TimeoutError):
            other[f"{type(exc).__name__}: {exc}"] += 1
    _storm(False)
    held = _held_report(r)
    with open(os.path.join(tmp, "consumer.events"), "wb") as f:
        events.tofile(f)
    h.write_json(os.path.join(tmp, "consumer.json"), {
        **held, "raised": _RAISED[0], "signals": _SIGNALS[0], "other": dict(other), "ended": done})
    _wait_path(os.path.join(tmp, "exit"), 60)
    r.detach()
    return 0


def _read_q(path: str) -> array.array:
    a = array.array("q")
    try:
        with open(path, "rb") as f:
            a.frombytes(f.read())
    except FileNotFoundError:
        pass
    return a


def _account(certain: array.array, events: array.array) -> Dict[str, int]:
    """Duplicates, and certain puts missing beyond what the raised gets
    around each gap could have taken (one producer, one consumer: FIFO)."""
    committed = sorted(certain)
    seen = set()
    dup = lost = reordered = slack = 0
    prev = -1
    for ev in events:
        if ev < 0:
            slack += -ev
            continue
        if ev in seen:
            dup += 1
            continue
        seen.add(ev)
        if ev < prev:
            reordered += 1
            continue
        missing = bisect.bisect_left(committed, ev) - bisect.bisect_right(committed, prev)
        lost += max(0, missing - slack)
        slack = 0
        prev = ev
    missing = len(committed) - bisect.bisect_right(committed, prev)  # after the last delivery
    lost += max(0, missing - slack)
    return {"dup": dup, "lost": lost, "reordered": reordered, "delivered": len(seen)}


def _third_party(shmid: int, timeout: float) -> Optional[str]:
    """Can another process put and get right now?  None, or what failed."""
    from ..ring import Ring

    r = Ring.attach(shmid=shmid)
    try:
        r.put(b"third", timeout)
        r.get(timeout)
        return None
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    finally:
        r.detach()


def _async_pair(tier: Tier, tmp: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    target = tier.n(10_000, 100_000)
    cap = tier.t(20.0, 600.0)
    r = h.ring(4096)
    kids: List[h.Child] = []
    try:
        kids = [h.Child(_async_producer, r.shmid, target, cap, tmp),
                h.Child(_async_consumer, r.shmid, target, cap, tmp)]
        ready = all(_wait_path(os.path.join(tmp, f"{w}.json"), cap + 60) for w in ("producer", "consumer"))
        live = _third_party(r.shmid, 0.5) if ready else "the interrupted processes never finished"
        _touch(os.path.join(tmp, "exit"))
        _codes, hangs = h.join_all(kids, 20)
        dead = _third_party(r.shmid, 3.0)
    finally:
        for c in kids:
            c.kill()
        h.join_all(kids, 5)
        h.dispose(r)
    prod = h.read_json(os.path.join(tmp, "producer.json")) or {}
    cons = h.read_json(os.path.join(tmp, "consumer.json")) or {}
    acc = _account(_read_q(os.path.join(tmp, "producer.certain")), _read_q(os.path.join(tmp, "consumer.events")))
    uncertain_gets = sum(1 for e in _read_q(os.path.join(tmp, "consumer.events")) if e < 0)
    leaked = sum(bool(d.get(k)) for d in (prod, cons) for k in ("plock_held", "clock_held"))
    res = {
        "raised": (prod.get("raised", 0), cons.get("raised", 0)),
        "signals": (prod.get("signals", 0), cons.get("signals", 0)),
        "leaked": leaked + (live is not None), "live": live, "unrecoverable": int(dead is not None), "dead": dead,
        "hangs": hangs, "other": {**prod.get("other", {}), **cons.get("other", {})},
        "uncertain_puts": len(_read_q(os.path.join(tmp, "producer.uncertain"))),
        "uncertain_gets": uncertain_gets, "ended": cons.get("ended", False), **acc,
    }
    return res, {}


def _async_holder(shmid: int, side: str, ready: str) -> int:
    from ..ring import Ring

    r = Ring.attach(shmid=shmid)
    if side == "producer":
        with r.reserve(8, 10):
            _touch(ready)
            h.wait_for_kill()
    else:
        r.put(b"held", 10)
        with r.get_view(10):
            _touch(ready)
            h.wait_for_kill()
    return 0


def _async_recoverer(shmid: int, tmp: str) -> int:
    """Under the storm, use both sides while lock holders are killed."""
    from ..ring import Ring

    r = Ring.attach(shmid=shmid)
    other: Counter = Counter()
    ops: List[Tuple[Callable[..., Any], Tuple[Any, ...]]] = [(r.put, (b"r" * 8, 0.5)), (r.get, (0.5,)), (_reserve_put, (r, b"v" * 8, 0.5)),
           (_view_get, (r, 0.5)), (r.put_many, ([b"m"] * 3, 0.5)), (r.get_many, (4, 0.5))]
    stop = os.path.join(tmp, "recover.stop")
    _storm(True)
    i = 0
    while True:
        i += 1
        if i % 64 == 0 and os.path.exists(stop):
            break
        fn, args = ops[i % len(ops)]
        _res, exc = _attempt(fn, *args)
        if exc is not None and not isinstance(exc, (_Interrupt, TimeoutError)):
            other[f"{type(exc).__name__}: {exc}"] += 1
    _storm(False)
    h.write_json(os.path.join(tmp, "recover.json"), {**_held_report(r), "raised": _RAISED[0],
                                                      "other": dict(other)})
    _wait_path(os.path.join(tmp, "exit2"), 60)
    r.detach()
    return 0


def _async_after_kills(tier: Tier, tmp: str) -> Dict[str, Any]:
    kills = tier.n(10, 100)
    r = h.ring(1024)
    rec: Optional[h.Child] = None
    took = 0
    try:
        rec = h.Child(_async_recoverer, r.shmid, tmp)
        for i in range(kills * 2):
            ready = os.path.join(tmp, f"hold{i}.ready")
            side = "producer" if i % 2 == 0 else "consumer"
            holder = h.Child(_async_holder, r.shmid, side, ready)
            if _wait_path(ready, 10):
                took += 1
                time.sleep(random.uniform(0, 0.01))
            holder.kill()
            holder.join(5)
            time.sleep(0.03)  # the recoverer takes the dead holder's lock over (~20 ms) under the storm
        _touch(os.path.join(tmp, "recover.stop"))
        finished = _wait_path(os.path.join(tmp, "recover.json"), 30)
        live = _third_party(r.shmid, 0.5) if finished else "the recovering process never finished"
        _touch(os.path.join(tmp, "exit2"))
        rec.join(20)
        dead = _third_party(r.shmid, 3.0)
    finally:
        if rec is not None:
            rec.kill()
            rec.join(5)
        h.dispose(r)
    data = h.read_json(os.path.join(tmp, "recover.json")) or {}
    return {"kills": took, "raised": data.get("raised", 0),
            "leaked": int(bool(data.get("plock_held"))) + int(bool(data.get("clock_held"))) + int(live is not None),
            "live": live, "unrecoverable": int(dead is not None), "dead": dead, "other": data.get("other", {})}


def fig_async_exceptions(tier: Tier, tmp: str) -> List[Row]:
    res, _ = _async_pair(tier, tmp)
    bad = res["leaked"] + res["unrecoverable"] + res["dup"] + res["lost"] + res["hangs"] + len(res["other"])
    rows = [row(
        "17", "SIGALRM every 100 us raising in put/put_many/reserve (producer) and "
              "get/get_many/get_view (consumer)",
        f"{res['raised'][0]:,} + {res['raised'][1]:,} interrupts: leaked locks {res['leaked']}, unrecoverable "
        f"{res['unrecoverable']}, duplicated {res['dup']}, lost {res['lost']}",
        "0 / 0 / 0 / 0", bad == 0 and res["ended"],
        detail=f"{res['delivered']:,} delivered; uncertain (raised) puts {res['uncertain_puts']:,}, "
               f"uncertain gets {res['uncertain_gets']:,} (info); reordered {res['reordered']}; signals "
               f"{res['signals'][0]:,} + {res['signals'][1]:,}; end of stream reached: {res['ended']}"
               + (f"; third process while they lived: {res['live']}" if res["live"] else "")
               + (f"; after they died: {res['dead']}" if res["dead"] else "")
               + (f"; other exceptions: {res['other']}" if res["other"] else ""),
    )]
    after = _async_after_kills(tier, tmp)
    bad = after["leaked"] + after["unrecoverable"] + len(after["other"])
    rows.append(row(
        "17", "the same storm in a process recovering locks from SIGKILLed holders (reserve / get_view)",
        f"{after['kills']} kills, {after['raised']:,} interrupts: leaked locks {after['leaked']}, "
        f"unrecoverable {after['unrecoverable']}",
        "0 / 0", bad == 0,
        detail=(f"third process while it lived: {after['live']}; " if after["live"] else "")
        + (f"after it died: {after['dead']}; " if after["dead"] else "")
        + (f"other exceptions: {after['other']}" if after["other"] else ""),
    ))
    return rows


# ---- 18: threads sharing a Ring; fork from a threaded process -----------------------

_TSEQ = struct.Struct("<IQ")  # thread, seq


def _threads_one_ring(shmid: int, per_thread: int, out: str) -> int:
    """Three producer and three consumer threads on one Ring object."""
    from ..ring import Ring

    r = Ring.attach(shmid=shmid)
    lock = threading.Lock()
    got: List[Tuple[int, int]] = []
    counts: Counter = Counter()
    producers_left = [3]

    def note(what: str) -> None:
        with lock:
            counts[what] += 1

    def producer(t: int) -> None:
        rnd = random.Random(t)
        seq = 0
        try:
            while seq < per_thread:
                op = rnd.random()
                try:
                    if op < 0.4:
                        r.put(_TSEQ.pack(t, seq) + bytes(rnd.randrange(0, 64, 8)), 5)
                        seq += 1
                    elif op < 0.7:
                        n = min(per_thread - seq, rnd.randint(1, 5))
                        seq += r.put_many([_TSEQ.pack(t, seq + j) for j in range(n)], 5)
                    else:
                        with r.reserve(_TSEQ.size, 5) as buf:
                            buf[:] = _TSEQ.pack(t, seq)
                        seq += 1
                except BufferError:
                    note("BufferError")
                except TimeoutError:
                    note("TimeoutError")
                except Exception as e:
                    note(f"{type(e).__name__}: {e}")
        finally:
            with lock:
                producers_left[0] -= 1

    def consumer(t: int) -> None:
        rnd = random.Random(100 + t)
        while True:
            op = rnd.random()
            try:
                if op < 0.4:
                    msgs = [r.get(0.2)]
                elif op < 0.7:
                    msgs = r.get_many(rnd.randint(1, 6), 0.2)
                else:
                    with r.get_view(0.2) as v:
                        msgs = [bytes(v)]
                with lock:
                    got.extend(_TSEQ.unpack_from(m) for m in msgs)
            except TimeoutError:
                with lock:
                    if producers_left[0] == 0:
                        return
            except BufferError:
                note("BufferError")
            except Exception as e:
                note(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(3)]
    threads += [threading.Thread(target=consumer, args=(t,)) for t in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    seen = Counter(got)
    expected = {(t, s) for t in range(3) for s in range(per_thread)}
    h.write_json(out, {
        "delivered": len(got), "dup": sum(v - 1 for v in seen.values() if v > 1),
        "lost": len(expected - set(seen)), "alien": len(set(seen) - expected),
        "counts": dict(counts), "detached": _try(r.detach),
    })
    return 0


def _try(fn: Callable[[], Any]) -> Optional[str]:
    try:
        fn()
        return None
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def _fork_child_use(r: Any, log: str) -> int:
    """In the forked child: put, get and detach its copy; 0 if all worked."""
    code = 0
    errors = []
    try:
        for m in (b"a", b"b", b"c"):
            r.put(m, 3)
    except Exception as e:
        code |= 1
        errors.append(f"put: {type(e).__name__}: {e}")
    try:
        r.get(3)
    except Exception as e:
        code |= 2
        errors.append(f"get: {type(e).__name__}: {e}")
    try:
        r.detach()
    except Exception as e:
        code |= 4
        errors.append(f"detach: {type(e).__name__}: {e}")
    if errors:
        with open(log, "a") as f:
            f.write("\n".join(errors) + "\n")
    return code


def _fork_from_threads(shmid: int, variant: str, forks: int, out: str) -> int:
    """Fork while threads are blocked in get() / inside a reserve() or
    get_view() block; the child must use and detach its copy."""
    from ..ring import Ring

    r = Ring.attach(shmid=shmid)
    failures: Counter = Counter()
    for _ in range(forks):
        while True:  # start from an empty ring
            try:
                r.get_many(64, 0)
            except TimeoutError:
                break
        threads: List[threading.Thread] = []
        if variant == "get":
            # One thread holds the consumer lock asleep in get(), one waits for that lock.
            def blocked() -> None:
                try:
                    r.get(10)
                except Exception:
                    pass
            threads = [threading.Thread(target=blocked) for _ in range(2)]
        elif variant == "reserve":
            def in_reserve() -> None:
                with r.reserve(8, 5) as buf:
                    buf[:] = bytes(8)
                    time.sleep(0.1)
            threads = [threading.Thread(target=in_reserve)]
        else:
            r.put(b"v", 5)

            def in_view() -> None:
                with r.get_view(5) as v:
                    bytes(v)
                    time.sleep(0.1)
            threads = [threading.Thread(target=in_view)]
        for th in threads:
            th.start()
        time.sleep(0.03)
        pid = os.fork()
        if pid == 0:
            os._exit(_fork_child_use(r, out + ".children"))
        deadline = _mono() + 15
        status = None
        while _mono() < deadline:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            time.sleep(0.005)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            failures["hung"] += 1
        else:
            code = os.waitstatus_to_exitcode(status)
            for bit, what in ((1, "put failed"), (2, "get failed"), (4, "detach failed")):
                if code > 0 and code & bit:
                    failures[what] += 1
            if code < 0:
                failures[f"killed by {signal.Signals(-code).name}"] += 1
        for _ in range(2):
            try:
                r.put(b"free", 1)  # release threads still waiting in get()
            except Exception:
                pass
        for th in threads:
            th.join(15)
            if th.is_alive():
                failures["parent thread stuck"] += 1
    try:
        with open(out + ".children") as f:
            said = Counter(f.read().splitlines())
    except FileNotFoundError:
        said = Counter()
    h.write_json(out, {"failures": dict(failures), "detached": _try(r.detach), "said": dict(said)})
    return 0


def fig_threads_fork(tier: Tier, tmp: str) -> List[Row]:
    rows: List[Row] = []
    per_thread = tier.n(3000, 50_000)
    r = h.ring(4096)
    try:
        out = os.path.join(tmp, "threads.json")
        c = h.Child(_threads_one_ring, r.shmid, per_thread, out)
        code = c.join(tier.t(60, 900))
        data = h.read_json(out) or {}
    finally:
        h.dispose(r)
    counts = data.get("counts", {})
    buffer_errors = counts.get("BufferError", 0)
    others = {k: v for k, v in counts.items() if k not in ("BufferError", "TimeoutError")}
    bad = buffer_errors + data.get("lost", 1) + data.get("dup", 0) + data.get("alien", 0) + len(others)
    rows.append(row(
        "18", "3 producer + 3 consumer threads on one Ring object (put/put_many/reserve, get/get_many/get_view)",
        f"{data.get('delivered', 0):,} msgs: false BufferErrors {buffer_errors}, lost {data.get('lost', '?')}, "
        f"duplicated {data.get('dup', '?')}",
        "0 / 0 / 0", bad == 0 and code == 0 and not data.get("detached"),
        detail=f"exit {code}; put timeouts {counts.get('TimeoutError', 0)}; other exceptions {others}; "
               f"detach: {data.get('detached') or 'ok'}",
    ))
    forks = tier.n(10, 200)
    total = 0
    failures: Counter = Counter()
    said: Counter = Counter()
    for variant in ("get", "reserve", "view"):
        r = h.ring(4096)
        try:
            out = os.path.join(tmp, f"fork-{variant}.json")
            c = h.Child(_fork_from_threads, r.shmid, variant, forks, out)
            code = c.join(tier.t(60, 900))
            data = h.read_json(out)
        finally:
            h.dispose(r)
        total += forks
        if data is None:
            failures[f"{variant}: parent exit {code}"] += 1
            continue
        for k, v in data["failures"].items():
            failures[f"{variant}: {k}"] += v
        said.update({f"{variant}: {k}": v for k, v in data.get("said", {}).items()})
        if data.get("detached"):
            failures[f"{variant}: parent detach {data['detached']}"] += 1
    bad = sum(failures.values())
    rows.append(row(
        "18", "fork while threads sleep in get() / hold a reserve() or get_view() block: child puts, gets, detaches",
        f"{total} forks: children that could not use or detach their copy {bad}", "0", bad == 0,
        detail=", ".join(f"{k} x{v}" for k, v in failures.items())
        + ("; the children said: " + "; ".join(f"{k} x{v}" for k, v in said.most_common(6)) if said else ""),
    ))
    return rows


# ---- 19: interrupted create and remove ---------------------------------------------


def _create_loop(kind: str) -> int:
    """Create and remove keyed objects until killed."""
    from ..mailbox import Mailbox
    from ..ring import Ring

    rnd = random.Random(os.getpid())
    i = 0
    while True:
        i += 1
        key = rnd.getrandbits(30) | 0x40000000
        try:
            obj = Ring.create(256, key) if kind == "ring" else Mailbox.create(64, key, overwrite=bool(i & 1))
        except FileExistsError:
            continue
        obj.remove()
        obj.detach()


def _create_under_signals(kind: str, rounds: int, out: str) -> int:
    """Create/remove keyed objects with a one-shot SIGALRM raising at a random point."""
    from ..mailbox import Mailbox
    from ..ring import Ring

    import sys

    rnd = random.Random(os.getpid())
    signal.signal(signal.SIGALRM, _on_alarm)
    unraisable = [0]  # the interrupt landing in a dropped handle's __del__ (ignored by Python)

    def on_unraisable(_u: Any) -> None:
        unraisable[0] += 1

    sys.unraisablehook = on_unraisable

    def make(key: int) -> Any:
        return Ring.create(256, key) if kind == "ring" else Mailbox.create(64, key, overwrite=bool(key & 1))

    t0 = _mono()
    for _ in range(20):
        o = make(rnd.getrandbits(30) | 0x40000000)
        o.remove()
        o.detach()
    span = (_mono() - t0) / 20 * 1.3
    interrupted = not_original = 0
    others: Counter = Counter()
    for _ in range(rounds):
        key = rnd.getrandbits(30) | 0x40000000
        obj = None
        try:
            try:
                _ARMED[0] = True
                signal.setitimer(signal.ITIMER_REAL, max(1e-6, rnd.uniform(0, span)))
                obj = make(key)
                obj.remove()
                obj.detach()
                _ARMED[0] = False
            except _Interrupt:
                interrupted += 1
            except FileExistsError:
                _ARMED[0] = False
            except BaseException as e:  # not what the handler raised
                _ARMED[0] = False
                not_original += 1
                where = traceback.extract_tb(e.__traceback__)[-3:]
                others[f"{type(e).__name__}: {e} at " + " < ".join(
                    f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(where))] += 1
        except _Interrupt:
            interrupted += 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            _ARMED[0] = False
        obj = None  # a handle the interrupt left: dropped, as a caller's would be
    from ..segment import segments

    mine = [s.shmid for s in segments() if s.cpid == os.getpid() and not s.marked_for_destruction]
    h.write_json(out, {"interrupted": interrupted, "not_original": not_original, "others": dict(others),
                       "left_alive": len(mine), "unraisable": unraisable[0]})
    return 0


def _leftovers_after_cleanup(pids: set) -> Tuple[int, int, List[str]]:
    """(objects of *pids* left before cleanup, after cleanup, what the survivors are)."""
    from .. import _core
    from ..cleanup import cleanup
    from ..segment import Segment, segments

    def ours() -> List[Any]:
        return [s for s in segments() if s.cpid in pids and not (s.marked_for_destruction and s.nattch == 0)]

    before = ours()
    ids = {s.shmid for s in before}
    cleanup(select=lambda o: o.ident in ids)
    after = ours()
    what = []
    for s in after:
        try:
            seg = Segment(s.shmid, readonly=True)
            head = seg.read(8, 0)
            seg.detach()
        except OSError:
            head = b"?"
        what.append(f"magic {head!r}")
        try:
            _core.shm_remove(s.shmid)
        except OSError:
            pass
    return len(before), len(after), [f"{k} x{v}" for k, v in Counter(what).most_common()]


def fig_interrupted_create(tier: Tier, tmp: str) -> List[Row]:
    rows: List[Row] = []
    kills = tier.n(30, 500)
    for kind, label in (("ring", "Ring.create/remove"), ("mailbox", "Mailbox.create/remove")):
        pids = set()
        for _ in range(kills):
            c = h.Child(_create_loop, kind)
            pids.add(c.pid)
            time.sleep(random.uniform(0.002, 0.03))
            c.kill()
            c.join(5)
        before, after, what = _leftovers_after_cleanup(pids)
        rows.append(row(
            "19", f"SIGKILL at a random point of a keyed {label} loop: objects shmipc.cleanup() leaves",
            f"{kills} kills: {before} left by the dead creators, {after} not removed by cleanup", "0",
            after == 0, detail="; ".join(what),
        ))
    rounds = tier.n(2000, 50_000)
    for kind, label in (("ring", "Ring.create/remove"), ("mailbox", "Mailbox.create/remove")):
        out = os.path.join(tmp, f"sig-{kind}.json")
        c = h.Child(_create_under_signals, kind, rounds, out)
        code = c.join(tier.t(60, 900))
        data = h.read_json(out) or {}
        before, after, what = _leftovers_after_cleanup({c.pid})
        rows.append(row(
            "19", f"an exception from a SIGALRM handler at a random point of {label} (keyed)",
            f"{data.get('interrupted', 0):,} of {rounds:,} interrupted: {after} objects cleanup leaves after the "
            f"creator died, {data.get('not_original', '?')} raised another exception",
            "0 / 0", after == 0 and data.get("not_original", 1) == 0 and code == 0,
            detail=f"left while the creator lived: {data.get('left_alive', '?')} ({before} after it died, before "
                   f"cleanup) (info); interrupts inside a dropped handle's __del__: {data.get('unraisable', 0)}" + ("; " + "; ".join(what) if what else "")
                   + (f"; other exceptions: {data.get('others')}" if data.get("others") else ""),
        ))
    return rows
