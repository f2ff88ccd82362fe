"""Figures 3 to 6: processes killed inside put, inside get, inside a
critical section, and how fast a dead peer is noticed.

Deterministic injection points use a private hook: the victim wraps its
own Ring handle's AtomicView (a private attribute) so that the process
kills itself with ``SIGKILL`` right before or right after the one store
that commits a message (``tail``) or consumes it (``head``), or kills itself
inside a ``reserve``/``get_view`` block.  Random points use a ``SIGKILL`` from the
parent at a random moment, and a ``SIGALRM`` timer with the default action
(the kernel terminates the process wherever it is, mid-``memcpy``
included).
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from . import _harness as h
from ._harness import Row, Tier, ms, percentile, row

_NS = 1_000_000_000


def _now_ns() -> int:
    return time.monotonic_ns()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # never reached


# ---- the injection hook -------------------------------------------------------


class _CommitHook:
    """Stands in for a Ring handle's AtomicView in the victim: SIGKILLs the
    process right before or right after the one store that commits a
    message (``tail``) or consumes it (``head``).  Stores that step over a
    padding record do not count."""

    def __init__(self, ring: Any, av: Any, offset: int, when: str, last_words: Any) -> None:
        self._ring, self._av, self._offset, self._when, self._last = ring, av, offset, when, last_words

    def __getattr__(self, name: str) -> Any:
        return getattr(self._av, name)

    def _fires(self, off: int) -> bool:
        from ..ring import HEADER_SIZE, KIND_MSG

        if off != self._offset:
            return False
        at = self._av.load64(off) % self._ring.capacity
        return bool(self._av.load64(HEADER_SIZE + at) >> 32 == KIND_MSG)

    def store64_seq_cst(self, off: int, value: int) -> None:
        self.store64_then_load32(off, value, off)

    def store64_then_load32(self, off: int, value: int, flag_off: int) -> int:
        return int(self._killing_around(off, self._av.store64_then_load32, off, value, flag_off))

    def publish64(self, off: int, value: int, *rest: int) -> bool:
        return bool(self._killing_around(off, self._av.publish64, off, value, *rest))

    def _killing_around(self, off: int, store: Any, *args: int) -> Any:
        fire = self._fires(off)
        if fire and self._when == "before":
            self._last()
            _die()
        result = store(*args)
        if fire and self._when == "after":
            self._last()
            _die()
        return result


def _arm(r: Any, index: str, when: str, last_words: Any) -> None:
    """Install the hook on ring handle *r* (a private attribute, this process only)."""
    from ..ring import OFF_HEAD, OFF_TAIL

    r._av = _CommitHook(r, r._av, OFF_TAIL if index == "tail" else OFF_HEAD, when, last_words)
    r._bind_hot_paths()  # the per-message closures capture the store function


# ---- 3: producer killed mid-put ----------------------------------------------

_SURVIVOR = 0


def _survivor_producer(shmid: int, log: str, tlog: str, max_size: int, seed: int) -> int:
    """Puts until SIGUSR1, logging each committed seq and its commit time."""
    from ..ring import Ring

    stop = []
    signal.signal(signal.SIGUSR1, lambda *a: stop.append(1))
    rng = random.Random(seed)
    r = Ring.attach(shmid=shmid)
    seqs, times = h.U64Log(log), h.U64Log(tlog)
    seq = 0
    while not stop:
        msg = h.make_message(_SURVIVOR, seq, rng.randint(h.MSG_HEADER.size, max_size))
        try:
            r.put(msg, timeout=0.2)
        except TimeoutError:
            continue
        seqs.add(seq)
        times.add(_now_ns())
        seq += 1
        time.sleep(0.0002)
    r.detach()
    return 0


def _producer_victim(shmid: int, ident: int, mode: str, log: str, tlog: str, seed: int, max_size: int) -> int:
    from ..ring import Ring

    rng = random.Random(seed)
    r = Ring.attach(shmid=shmid)
    seqs = h.U64Log(log)
    lo = h.MSG_HEADER.size

    def death_time() -> None:
        h.U64Log(tlog).add(_now_ns())

    if mode in ("random", "timer"):
        if mode == "timer":
            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the kernel kills us, wherever we are
            signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.0005, 0.02))
        seq = 0
        death_time()  # "started putting"; the killer records the real kill time
        while True:
            r.put(h.make_message(ident, seq, rng.randint(lo, max_size)), timeout=30)
            seqs.add(seq)
            seq += 1

    before = rng.randint(0, 4)
    for seq in range(before):
        r.put(h.make_message(ident, seq, rng.randint(lo, max_size)), timeout=30)
        seqs.add(seq)
    msg = h.make_message(ident, before, rng.randint(lo, max_size))
    if mode == "reserved":
        with r.reserve(len(msg), timeout=30):
            death_time()
            _die()
    elif mode == "mid-copy":
        with r.reserve(len(msg), timeout=30) as buf:
            half = len(msg) // 2
            buf[:half] = msg[:half]
            death_time()
            _die()
    else:
        _arm(r, "tail", "before" if mode == "before-commit" else "after", death_time)
        r.put(msg, timeout=30)
    return 3  # the kill did not happen


_PRODUCER_MODES = [
    # mode, what may be delivered of the message in flight
    ("reserved", "never"),
    ("mid-copy", "never"),
    ("before-commit", "never"),
    ("after-commit", "always"),
    ("random", "maybe"),
    ("timer", "maybe"),
]


class _Drain:
    """The parent as consumer: validates and files every message."""

    def __init__(self, r: Any) -> None:
        self.r = r
        self.got: Dict[int, Dict[int, int]] = {}
        self.corrupt = 0
        self.errors: List[str] = []

    def take(self, msg: Any) -> None:
        ident = h.check_message(msg)
        if ident is None:
            self.corrupt += 1
            return
        per = self.got.setdefault(ident[0], {})
        per[ident[1]] = per.get(ident[1], 0) + 1

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                for m in self.r.get_many(64, timeout=min(left, 0.01)):
                    self.take(m)
            except TimeoutError:
                pass
            except Exception as e:  # a clear error is still a failure here
                self.errors.append(repr(e))
                time.sleep(0.01)

    def drain(self) -> None:
        while True:
            try:
                for m in self.r.get_many(256, timeout=0):
                    self.take(m)
            except TimeoutError:
                return


def _last_u64(path: str) -> Optional[int]:
    vals = h.read_u64s(path)
    return vals[-1] if vals else None


def _capacity_restored(r: Any) -> bool:
    """Empty (head == tail), and a message of max_message_size goes through
    (``len()`` is checked apart: see _len_after_drain).

    A max-size message into an empty ring whose tail is not at the wrap point
    needs a consumer to step over the padding first, so the put runs in a
    thread while this thread gets.
    """
    try:
        head, tail = r._indices()
        if head != tail:
            return False
        big = h.make_message(99, 0, r.max_message_size)
        errors: List[BaseException] = []

        def put() -> None:
            try:
                r.put(big, timeout=2)
            except BaseException as e:  # reported below
                errors.append(e)

        t = threading.Thread(target=put)
        t.start()
        got = r.get(timeout=2)
        t.join(3)
        head, tail = r._indices()
        return got == big and not errors and head == tail
    except Exception:
        return False


def _producer_phase(tier: Tier, tmp: str, mode: str, rule: str, kills: int) -> Dict[str, Any]:
    big = mode == "timer"
    max_size = (1 << 20) if big else 2048
    r = h.ring((4 << 20) if big else (64 << 10))
    drain = _Drain(r)
    s_log, s_tlog = os.path.join(tmp, f"{mode}-s.log"), os.path.join(tmp, f"{mode}-s.t")
    survivor = h.Child(_survivor_producer, r.shmid, s_log, s_tlog, 2048, 7)
    res: Dict[str, Any] = {"kills": 0, "missing": 0, "dup": 0, "bad_extra": 0, "unlogged_after_commit": 0,
                           "hangs": 0, "resume": [], "no_kill": 0}
    rng = random.Random(hash(mode) & 0xFFFF)
    victims: List[Tuple[int, str, str]] = []
    try:
        for i in range(kills):
            ident = i + 1
            log, tlog = os.path.join(tmp, f"{mode}-{ident}.log"), os.path.join(tmp, f"{mode}-{ident}.t")
            v = h.Child(_producer_victim, r.shmid, ident, mode, log, tlog, rng.randrange(1 << 30), max_size)
            if mode == "random":
                if not h.wait_file(tlog, 5, 8) or not h.wait_file(log, 1, 8):
                    pass
                drain.pump(rng.uniform(0.0, 0.005))
                death = _now_ns()
                v.kill()
            deadline = time.monotonic() + 10
            while v.alive() and time.monotonic() < deadline:
                drain.pump(0.002)
            code = v.join(1)
            res["hangs"] += v.hung
            if mode != "random":
                death = _last_u64(tlog) or _now_ns()
            if code not in (-signal.SIGKILL, -signal.SIGALRM):
                res["no_kill"] += 1
            res["kills"] += 1
            victims.append((ident, log, tlog))
            # Others resume: the survivor commits again after the death.
            t_end = time.monotonic() + 2.5
            resumed = None
            while time.monotonic() < t_end:
                drain.pump(0.002)
                last = _last_u64(s_tlog)
                if last is not None and last > death:
                    resumed = (last - death) / _NS
                    break
            res["resume"].append(resumed if resumed is not None else float("inf"))
        survivor.kill(signal.SIGUSR1)
        t_end = time.monotonic() + 10
        while survivor.alive() and time.monotonic() < t_end:
            drain.pump(0.005)
        survivor.join(5)
        res["hangs"] += survivor.hung
        drain.drain()
        # Accounting: every logged (committed) message exactly once; the one
        # in flight only as its mode allows.
        for ident, log, _ in victims + [(_SURVIVOR, s_log, "")]:
            logged = h.read_u64s(log)
            got = drain.got.get(ident, {})
            res["dup"] += sum(1 for n in got.values() if n > 1)
            res["missing"] += sum(1 for s in logged if s not in got)
            extra = set(got) - set(logged)
            in_flight = len(logged)
            allowed = {in_flight} if ident != _SURVIVOR and rule != "never" else set()
            res["bad_extra"] += len(extra - allowed)
            if ident != _SURVIVOR and in_flight in got:
                res["unlogged_after_commit"] += 1
            elif ident != _SURVIVOR and rule == "always":
                res["missing"] += 1  # committed before the kill, yet not delivered
        res["corrupt"] = drain.corrupt
        res["errors"] = drain.errors
        res["len_after_drain"] = len(r)  # must be 0 again
        res["restored"] = _capacity_restored(r)
    finally:
        survivor.kill()
        survivor.join(2)
        h.dispose(r)
    return res


def fig_producer_kill(tier: Tier, tmp: str) -> List[Row]:
    rows = []
    kills = tier.n(15, 120)
    for mode, rule in _PRODUCER_MODES:
        res = _producer_phase(tier, tmp, mode, rule, kills)
        resume = res["resume"]
        worst = max(resume) if resume else float("nan")
        ok = (res["missing"] == 0 and res["dup"] == 0 and res["bad_extra"] == 0 and res["corrupt"] == 0
              and res["len_after_drain"] == 0
              and res["hangs"] == 0 and res["restored"] and worst <= 2.0 and not res["errors"]
              and res["no_kill"] == 0)
        where = {"reserved": "in reserve(), nothing written", "mid-copy": "in reserve(), half written",
                 "before-commit": "put: written, tail not published", "after-commit": "put: tail published, lock held",
                 "random": "SIGKILL at a random time in a put loop",
                 "timer": "SIGALRM (default action) mid-put of <=1 MiB"}[mode]
        rows.append(row(
            "3", f"producer killed: {where}",
            f"{res['kills']} kills: torn {res['corrupt']}, lost {res['missing']}, dup {res['dup']}, "
            f"uncommitted delivered {res['bad_extra']}; resume max {ms(worst)}; "
            f"capacity {'restored' if res['restored'] else 'NOT restored'}",
            "0 torn/lost/dup, resume <= 2 s", ok,
            detail=f"in-flight message delivered (kill after commit) {res['unlogged_after_commit']}x; "
                   f"len() of the drained ring {res['len_after_drain']}; "
                   f"hangs {res['hangs']}; victims not killed {res['no_kill']}; errors {res['errors'][:3]}",
        ))
    return rows


# ---- 4: consumer killed mid-get ------------------------------------------------


def _survivor_consumer(shmid: int, log: str, tlog: str, out: str) -> int:
    from ..errors import EndOfStream
    from ..ring import Ring

    r = Ring.attach(shmid=shmid)
    seqs, times = h.U64Log(log), h.U64Log(tlog)
    corrupt = 0
    try:
        while True:
            try:
                msg = r.get(timeout=0.2)
            except TimeoutError:
                continue
            ident = h.check_message(msg)
            if ident is None:
                corrupt += 1
                continue
            seqs.add(ident[1])
            times.add(_now_ns())
    except EndOfStream:
        pass
    r.detach()
    h.write_json(out, {"corrupt": corrupt})
    return 0


def _consumer_victim(shmid: int, mode: str, log: str, tlog: str, seed: int) -> int:
    from ..ring import Ring

    rng = random.Random(seed)
    r = Ring.attach(shmid=shmid)
    seqs = h.U64Log(log)

    def death_time() -> None:
        h.U64Log(tlog).add(_now_ns())

    def take(msg: Any) -> None:
        ident = h.check_message(msg)
        seqs.add(ident[1] if ident is not None else (1 << 63))

    if mode == "random":
        death_time()
        while True:
            take(r.get(timeout=30))
    for _ in range(rng.randint(0, 3)):
        take(r.get(timeout=30))
    if mode == "in-view":
        with r.get_view(timeout=30):
            death_time()
            _die()
    _arm(r, "head", "before" if "before" in mode else "after", death_time)
    if mode.startswith("many"):
        r.get_many(4, timeout=30)
    else:
        r.get(timeout=30)
    return 3


_CONSUMER_MODES = [
    # mode, documented loss per kill: (min, max) messages
    ("in-view", (0, 0), "in get_view(), nothing consumed"),
    ("before-head", (0, 0), "get: copied, head not published"),
    ("after-head", (1, 1), "get: head published, not returned"),
    ("many-before-head", (0, 0), "get_many(4): copied, head not published"),
    ("many-after-head", (1, 4), "get_many(4): head published, not returned"),
    ("random", (0, 1), "SIGKILL at a random time in a get loop"),
]


def _consumer_phase(tier: Tier, tmp: str, mode: str, kills: int) -> Dict[str, Any]:
    r = h.ring(16 << 10)
    s_log, s_tlog, s_out = (os.path.join(tmp, f"c-{mode}-s.{x}") for x in ("log", "t", "json"))
    survivor = h.Child(_survivor_consumer, r.shmid, s_log, s_tlog, s_out)
    rng = random.Random(hash(mode) & 0xFFFF)
    produced = 0
    res: Dict[str, Any] = {"kills": 0, "hangs": 0, "no_kill": 0, "resume": [], "losses": []}
    victim_logs: List[str] = []

    def produce(seconds: float) -> None:
        nonlocal produced
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                r.put(h.make_message(1, produced, rng.randint(h.MSG_HEADER.size, 512)), timeout=0.005)
            except TimeoutError:
                continue
            produced += 1

    try:
        for i in range(kills):
            log, tlog = os.path.join(tmp, f"c-{mode}-{i}.log"), os.path.join(tmp, f"c-{mode}-{i}.t")
            victim_logs.append(log)
            before = produced
            v = h.Child(_consumer_victim, r.shmid, mode, log, tlog, rng.randrange(1 << 30))
            if mode == "random":
                h.wait_file(tlog, 5, 8)
                produce(rng.uniform(0.0, 0.01))
                death = _now_ns()
                v.kill()
            deadline = time.monotonic() + 10
            while v.alive() and time.monotonic() < deadline:
                produce(0.002)
            v.join(1)
            res["hangs"] += v.hung
            if mode != "random":
                death = _last_u64(tlog) or _now_ns()
            if v.proc.exitcode != -signal.SIGKILL:
                res["no_kill"] += 1
            res["kills"] += 1
            # Others resume: the survivor delivers again after the death.
            t_end = time.monotonic() + 2.5
            resumed = None
            while time.monotonic() < t_end:
                produce(0.002)
                last = _last_u64(s_tlog)
                if last is not None and last > death:
                    resumed = (last - death) / _NS
                    break
            res["resume"].append(resumed if resumed is not None else float("inf"))
            del before
        # Let the survivor drain, then end the stream.
        t_end = time.monotonic() + 10
        while len(r) and time.monotonic() < t_end:
            time.sleep(0.005)
        r.close()
        survivor.join(10)
        res["hangs"] += survivor.hung
        s_res = h.read_json(s_out) or {"corrupt": -1}
        counts: Dict[int, int] = {}
        corrupt = max(0, s_res["corrupt"]) + (s_res["corrupt"] < 0)
        for log in victim_logs + [s_log]:
            for seq in h.read_u64s(log):
                if seq == 1 << 63:
                    corrupt += 1
                    continue
                counts[seq] = counts.get(seq, 0) + 1
        res["corrupt"] = corrupt
        res["dup"] = sum(1 for n in counts.values() if n > 1)
        res["lost"] = sum(1 for s in range(produced) if s not in counts)
        res["phantom"] = sum(1 for s in counts if s >= produced)
        res["produced"] = produced
        # The ring is closed now; a fresh handle cannot put, so check space directly.
        head, tail = r._indices()
        res["restored"] = head == tail and len(r) == 0
    finally:
        survivor.kill()
        survivor.join(2)
        h.dispose(r)
    return res


def fig_consumer_kill(tier: Tier, tmp: str) -> List[Row]:
    rows = []
    per_mode = tier.n(20, 100)
    for mode, (lo, hi), where in _CONSUMER_MODES:
        kills = per_mode * (2 if mode == "random" else 1) if tier.long else per_mode
        if tier.long and mode == "random":
            kills = max(kills, 500)
        res = _consumer_phase(tier, tmp, mode, kills)
        worst = max(res["resume"]) if res["resume"] else float("nan")
        lost_ok = res["kills"] * lo <= res["lost"] <= res["kills"] * hi
        ok = (lost_ok and res["dup"] == 0 and res["corrupt"] == 0 and res["phantom"] == 0 and res["hangs"] == 0
              and res["restored"] and worst <= 2.0 and res["no_kill"] == 0)
        allowed = f"{lo * res['kills']}..{hi * res['kills']}" if hi else "0"
        rows.append(row(
            "4", f"consumer killed: {where}",
            f"{res['kills']} kills, {res['produced']} msgs: corrupt {res['corrupt']}, dup {res['dup']}, "
            f"lost {res['lost']} (documented: {allowed}); resume max {ms(worst)}; "
            f"space {'reclaimed' if res['restored'] else 'NOT reclaimed'}",
            "0 corrupt/dup, loss as documented", ok,
            detail=f"hangs {res['hangs']}, victims not killed {res['no_kill']}",
        ))
    return rows


# ---- 5: lock holder killed inside a critical section ------------------------------


def _holder(kind: str, handle: Any, ready: str) -> int:
    """Take the lock of *kind* and wait to be killed inside the critical section."""
    from ..ring import Ring

    if kind == "ring-producer":
        r = Ring.attach(shmid=handle)
        with r.reserve(64):
            h.U64Log(ready).add(1)
            h.wait_for_kill()
    elif kind == "ring-consumer":
        r = Ring.attach(shmid=handle)
        with r.get_view():
            h.U64Log(ready).add(1)
            h.wait_for_kill()
    elif kind == "semaphore-undo":
        from ..semaphore import Semaphore

        s = Semaphore(handle)
        s.acquire(undo=True)
        h.U64Log(ready).add(1)
        h.wait_for_kill()
    elif kind == "robust-mutex":
        from ..mutex import RobustMutex
        from ..segment import Segment

        seg = Segment(handle)
        m = RobustMutex.attach(seg, 0)
        m.acquire()
        h.U64Log(ready).add(1)
        h.wait_for_kill()
    elif kind == "mailbox-slot":
        from ..mailbox import Mailbox

        box = Mailbox.attach(shmid=handle)
        with box.send_view(16):
            h.U64Log(ready).add(1)
            h.wait_for_kill()
    elif kind == "mailbox-latest":
        from ..mailbox import Mailbox

        box = Mailbox.attach(shmid=handle)
        box._writer_lock.acquire()  # the lock send() holds while writing
        h.U64Log(ready).add(1)
        h.wait_for_kill()
    return 3


def _waiter(kind: str, handle: Any, ready: str, done: str) -> int:
    """Block on the same lock; log the time it proceeds."""
    from ..errors import OwnerDiedError

    h.U64Log(ready).add(1)
    if kind == "ring-producer":
        from ..ring import Ring

        Ring.attach(shmid=handle).put(b"after", timeout=5)
    elif kind == "ring-consumer":
        from ..ring import Ring

        Ring.attach(shmid=handle).get(timeout=5)
    elif kind == "semaphore-undo":
        from ..semaphore import Semaphore

        if not Semaphore(handle).acquire(5, undo=True):
            return 4
    elif kind == "robust-mutex":
        from ..mutex import RobustMutex
        from ..segment import Segment

        m = RobustMutex.attach(Segment(handle), 0)
        try:
            if not m.acquire(5):
                return 4
        except OwnerDiedError:
            m.mark_consistent()
        h.U64Log(done).add(_now_ns())
        m.release()
        return 0
    elif kind == "mailbox-slot":
        from ..mailbox import Mailbox

        Mailbox.attach(shmid=handle).send(b"after", timeout=5)
    elif kind == "mailbox-latest":
        from ..mailbox import Mailbox

        Mailbox.attach(shmid=handle).send(b"after", timeout=5)
    h.U64Log(done).add(_now_ns())
    return 0


def _lock_case(kind: str, tmp: str, i: int) -> Tuple[float, bool]:
    """One kill: (seconds from the kill to the waiter proceeding, clean)."""
    from .. import mutex

    objs: List[Any] = []
    try:
        if kind.startswith("ring"):
            r = h.ring(4096)
            objs.append(r)
            if kind == "ring-consumer":
                r.put(b"one")
                r.put(b"two")
            handle: Any = r.shmid
        elif kind == "semaphore-undo":
            s = h.semaphore(1)
            objs.append(s)
            handle = s.semid
        elif kind == "robust-mutex":
            seg = h.segment(4096)
            objs.append(seg)
            mutex.RobustMutex.create(seg, 0).close()
            handle = seg.shmid
        else:
            box = h.mailbox(64, overwrite=kind == "mailbox-latest")
            objs.append(box)
            handle = box.shmid
        ready, wready, done = (os.path.join(tmp, f"{kind}-{i}.{x}") for x in ("r", "w", "d"))
        holder = h.Child(_holder, kind, handle, ready)
        if not h.wait_file(ready, 10, 8):
            holder.kill()
            holder.join(2)
            return float("inf"), False
        waiter = h.Child(_waiter, kind, handle, wready, done)
        h.wait_file(wready, 10, 8)
        time.sleep(0.03)  # let the waiter block
        t0 = _now_ns()
        holder.kill()
        codes, hangs = h.join_all([holder, waiter], 10)
        t1 = _last_u64(done)
        latency = (t1 - t0) / _NS if t1 else float("inf")
        return latency, hangs == 0 and codes[1] == 0
    finally:
        h.dispose(*objs)


def fig_lock_kill(tier: Tier, tmp: str) -> List[Row]:
    rows = []
    n = tier.n(8, 100)
    for kind, what in [
        ("ring-producer", "Ring producer lock (killed in reserve())"),
        ("ring-consumer", "Ring consumer lock (killed in get_view())"),
        ("robust-mutex", "RobustMutex (killed holding it)"),
        ("semaphore-undo", "Semaphore acquire(undo=True)"),
        ("mailbox-slot", "Mailbox slot (killed in send_view())"),
        ("mailbox-latest", "Mailbox latest-value writer lock"),
    ]:
        lat, clean = [], 0
        for i in range(n):
            t, ok = _lock_case(kind, tmp, i)
            lat.append(t)
            clean += ok
        worst = max(lat)
        rows.append(row(
            "5", f"lock holder killed: {what}",
            f"{n} kills: next caller proceeds p50 {ms(percentile(lat, 50))}, max {ms(worst)}; "
            f"{n - clean} failed/hung",
            "<= 1 s, 0 hangs", worst <= 1.0 and clean == n,
        ))
    return rows


# ---- 6: dead-peer detection ----------------------------------------------------------


def _registrant(semid: int, slot: int, ready: str) -> int:
    from ..liveness import Liveness

    Liveness.attach(semid=semid).register(slot)
    h.U64Log(ready).add(1)
    h.wait_for_kill()
    return 3


def fig_dead_peer(tier: Tier, tmp: str) -> List[Row]:
    n = tier.n(40, 1000)
    live = h.liveness(1)
    blocked: List[float] = []
    polled: List[float] = []
    zombies = failures = 0
    try:
        for i in range(n):
            ready = os.path.join(tmp, f"live-{i}")
            c = h.Child(_registrant, live.semid, 0, ready)
            if not h.wait_file(ready, 10, 8):
                failures += 1
                c.kill()
                c.join(2)
                continue
            if i % 2 == 0:
                # A waiter blocked in wait_gone() when the peer dies.
                seen: List[int] = []
                t = threading.Thread(target=lambda: seen.append(_now_ns() if live.wait_gone(0, 5) else 0))
                t.start()
                time.sleep(0.005)
                t0 = _now_ns()
                c.kill()
                t.join(6)
                latency = (seen[0] - t0) / _NS if seen and seen[0] else float("inf")
                blocked.append(latency)
            else:
                # A poller of is_alive() (one semctl per look).
                t0 = _now_ns()
                c.kill()
                deadline = time.monotonic() + 5
                while live.is_alive(0) and time.monotonic() < deadline:
                    pass
                polled.append((_now_ns() - t0) / _NS if not live.is_alive(0) else float("inf"))
            # Detection came before any reaping: the process still exists
            # (exiting or a zombie) and turns into a zombie nobody reaped.
            unreaped = os.path.exists(f"/proc/{c.pid}")
            deadline = time.monotonic() + 2
            while unreaped and not h.zombie(c.pid) and time.monotonic() < deadline:
                time.sleep(0.001)
            zombies += unreaped and h.zombie(c.pid)
            c.join(5)
    finally:
        h.dispose(live)
    every = blocked + polled
    p99 = percentile(every, 99)
    return [row(
        "6", "dead peer detected (Liveness; victim an unreaped zombie)",
        f"{len(every)} kills: p50 {ms(percentile(every, 50))}, p99 {ms(p99)} "
        f"(wait_gone p99 {ms(percentile(blocked, 99))}, is_alive poll p99 {ms(percentile(polled, 99))}); "
        f"{zombies} unreaped (zombies) when seen",
        "p99 <= 100 ms", p99 <= 0.1 and failures == 0 and zombies == len(every),
        detail=f"setup failures {failures}",
    )]
