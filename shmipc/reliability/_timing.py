"""Figures 7 to 9: bounded blocking, signals, external removal.

Every blocking call of the library is driven through a small "case" object
that knows how to make the call block (an empty ring, a held lock...), how
to make another process hold or wait on the same thing, and how to unblock
it (so a wait that ignores a signal is rescued and counted, never hangs).
"""
from __future__ import annotations

import errno
import os
import random
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _harness as h
from ._harness import Row, Tier, ms, percentile, row

_NS = 1_000_000_000
_uniq = [0]  # makes every rendezvous file name unique within a figure


def _now_ns() -> int:
    return time.monotonic_ns()


# ---- the blocking calls --------------------------------------------------------

KINDS = [
    "Ring.get", "Ring.put", "Ring.get (lock held)", "Mailbox.recv", "Mailbox.send",
    "Mailbox.recv (latest)", "Semaphore.acquire", "NamedSemaphore.acquire",
    "SharedSemaphore.acquire", "RobustMutex.acquire", "Liveness.wait_gone",
]
# Kinds that block only while another process holds something.
_NEEDS_HOLDER = {"Ring.get (lock held)", "RobustMutex.acquire", "Liveness.wait_gone"}


class Case:
    """One kind of blocking call, set up so that it blocks."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.objs: List[Any] = []
        self.name: Optional[str] = None
        k = kind
        if k.startswith("Ring"):
            self.r = h.ring(256)
            self.objs.append(self.r)
            self.handle: Any = self.r.shmid
            if k == "Ring.put":
                while True:
                    try:
                        self.r.put(b"x" * 100, timeout=0)
                    except TimeoutError:
                        break
        elif k.startswith("Mailbox"):
            self.box = h.mailbox(64, overwrite="latest" in k)
            self.objs.append(self.box)
            self.handle = self.box.shmid
            if k == "Mailbox.send":
                self.box.send(b"full", timeout=0)
            if "latest" in k:
                self.box.send(b"v1")
                self.box.recv(timeout=0)  # nothing newer from now on
        elif k == "Semaphore.acquire":
            self.sem = h.semaphore(0)
            self.objs.append(self.sem)
            self.handle = self.sem.semid
        elif k == "NamedSemaphore.acquire":
            from ..named_semaphore import NamedSemaphore

            self.name = h.new_name("blk")
            self.nsem = NamedSemaphore.create(self.name, 0)
            self.handle = self.name
        elif k in ("SharedSemaphore.acquire", "RobustMutex.acquire"):
            from ..mutex import RobustMutex
            from ..shared_semaphore import SharedSemaphore

            self.seg = h.segment(4096)
            self.handle = self.seg.shmid
            if k == "SharedSemaphore.acquire":
                self.ssem = SharedSemaphore.create(self.seg, 0, 0)
                self.objs.append(self.ssem)
            else:
                self.mutex = RobustMutex.create(self.seg, 0)
                self.objs.append(self.mutex)
            self.objs.append(self.seg)
        elif k == "Liveness.wait_gone":
            self.live = h.liveness(1)
            self.objs.append(self.live)
            self.handle = self.live.semid
        else:
            raise ValueError(k)

    # The call; returns "timeout", "ok" (it got what it waited for) or raises.
    def call(self, timeout: Optional[float]) -> str:
        from ..errors import OwnerDiedError

        k = self.kind
        try:
            if k in ("Ring.get", "Ring.get (lock held)"):
                self.r.get(timeout=timeout)
            elif k == "Ring.put":
                self.r.put(b"y" * 100, timeout=timeout)
            elif k in ("Mailbox.recv", "Mailbox.recv (latest)"):
                self.box.recv(timeout=timeout)
            elif k == "Mailbox.send":
                self.box.send(b"z", timeout=timeout)
            elif k == "Semaphore.acquire":
                return "ok" if self.sem.acquire(timeout) else "timeout"
            elif k == "NamedSemaphore.acquire":
                return "ok" if self.nsem.acquire(timeout) else "timeout"
            elif k == "SharedSemaphore.acquire":
                return "ok" if self.ssem.acquire(timeout) else "timeout"
            elif k == "RobustMutex.acquire":
                try:
                    got = self.mutex.acquire(timeout)
                except OwnerDiedError:
                    self.mutex.mark_consistent()
                    got = True
                if got:
                    self.mutex.release()
                return "ok" if got else "timeout"
            elif k == "Liveness.wait_gone":
                return "ok" if self.live.wait_gone(0, timeout) else "timeout"
        except TimeoutError:
            return "timeout"
        return "ok"

    def unblock(self) -> None:
        """From another thread: give the blocked call what it waits for."""
        k = self.kind
        if k == "Ring.get":
            self.r.put(b"unblock", timeout=1)
        elif k == "Ring.put":
            self.r.get(timeout=1)
        elif k == "Mailbox.recv":
            self.box.send(b"unblock", timeout=1)
        elif k == "Mailbox.send":
            self.box.recv(timeout=1)
        elif k == "Mailbox.recv (latest)":
            self.box.send(b"newer")
        elif k == "Semaphore.acquire":
            self.sem.release()
        elif k == "NamedSemaphore.acquire":
            self.nsem.release()
        elif k == "SharedSemaphore.acquire":
            self.ssem.release()
        # lock-held kinds: the holder process is killed instead

    def reset(self) -> None:
        """Back to "the call would block" after an unblock() that was not consumed."""
        k = self.kind
        try:
            if k in ("Ring.get", "Ring.get (lock held)"):
                while True:
                    self.r.get(timeout=0)
            elif k == "Ring.put":
                while True:
                    self.r.put(b"x" * 100, timeout=0)
            elif k == "Mailbox.recv":
                self.box.recv(timeout=0)
            elif k == "Mailbox.send":
                self.box.send(b"full", timeout=0)
            elif k == "Mailbox.recv (latest)":
                self.box.latest()
            elif k == "Semaphore.acquire":
                while self.sem.acquire(0):
                    pass
            elif k == "NamedSemaphore.acquire":
                while self.nsem.acquire(0):
                    pass
            elif k == "SharedSemaphore.acquire":
                while self.ssem.acquire(0):
                    pass
        except TimeoutError:
            pass

    def close(self) -> None:
        if self.name is not None:
            try:
                self.nsem.unlink()
            except OSError:
                pass
            self.nsem.close()
        for obj in self.objs:
            if hasattr(obj, "remove"):
                h.dispose(obj)
            else:
                try:
                    obj.close()
                except Exception:
                    pass


def _peer(kind: str, handle: Any, ready: str, role: str) -> int:
    """Another process on the same object: holds it (``role == "hold"``) or
    blocks in the same call (``"wait"``); it is killed there."""
    from ..errors import OwnerDiedError

    if kind.startswith("Ring"):
        from ..ring import Ring

        r = Ring.attach(shmid=handle)
        if kind == "Ring.get (lock held)" or (role == "hold" and kind == "Ring.get"):
            with r.get_view(timeout=None) if len(r) else _ConsumerLock(r):
                h.U64Log(ready).add(1)
                h.wait_for_kill()
        h.U64Log(ready).add(1)
        if kind == "Ring.put":
            r.put(b"w" * 100)
        else:
            r.get()
    elif kind.startswith("Mailbox"):
        from ..mailbox import Mailbox

        box = Mailbox.attach(shmid=handle)
        h.U64Log(ready).add(1)
        if kind == "Mailbox.send":
            box.send(b"w")
        else:
            box.recv()
    elif kind == "Semaphore.acquire":
        from ..semaphore import Semaphore

        h.U64Log(ready).add(1)
        Semaphore(handle).acquire()
    elif kind == "NamedSemaphore.acquire":
        from ..named_semaphore import NamedSemaphore

        s = NamedSemaphore.open(handle)
        h.U64Log(ready).add(1)
        s.acquire()
    elif kind in ("SharedSemaphore.acquire", "RobustMutex.acquire"):
        from ..mutex import RobustMutex
        from ..segment import Segment
        from ..shared_semaphore import SharedSemaphore

        seg = Segment(handle)
        if kind == "SharedSemaphore.acquire":
            ss = SharedSemaphore.attach(seg, 0)
            h.U64Log(ready).add(1)
            ss.acquire()
        else:
            m = RobustMutex.attach(seg, 0)
            try:
                m.acquire()
            except OwnerDiedError:
                m.mark_consistent()
            h.U64Log(ready).add(1)
            h.wait_for_kill()
    elif kind == "Liveness.wait_gone":
        from ..liveness import Liveness

        Liveness.attach(semid=handle).register(0)
        h.U64Log(ready).add(1)
        h.wait_for_kill()
    return 0


class _ConsumerLock:
    """Hold a ring's consumer lock without a message (private: the lock itself)."""

    def __init__(self, r: Any) -> None:
        self.r = r

    def __enter__(self) -> None:
        self.r._clock.acquire()  # a killed previous holder is taken over in C

    def __exit__(self, *exc: Any) -> None:
        self.r._clock.release()


def _start_peer(case: Case, tmp: str, role: str, i: int) -> h.Child:
    _uniq[0] += 1
    ready = os.path.join(tmp, f"peer-{case.kind.replace(' ', '_')}-{role}-{i}-{_uniq[0]}")
    c = h.Child(_peer, case.kind, case.handle, ready, role)
    h.wait_file(ready, 10, 8)
    time.sleep(0.01)  # let it block
    return c


# ---- 7: bounded blocking -----------------------------------------------------------


def _measure(case: Case, t: float, n: int) -> Tuple[List[float], int]:
    """n calls with timeout t: overruns (elapsed - t) and wrong outcomes."""
    over, wrong = [], 0
    for _ in range(n):
        t0 = time.monotonic()
        try:
            outcome = case.call(t)
        except Exception:
            outcome = "error"
        elapsed = time.monotonic() - t0
        over.append(elapsed - t)
        if outcome == "error":
            wrong += 1
    return over, wrong


def fig_blocking(tier: Tier, tmp: str) -> List[Row]:
    timeouts = [0.05] if not tier.long else [0.01, 0.1, 0.5]
    n = tier.n(8, 40)
    stress_over: Dict[str, List[float]] = {}
    kill_over: Dict[str, List[float]] = {}
    wrong = 0
    early = 0
    for kind in KINDS:
        case = Case(kind)
        try:
            # Under CPU stress (all cores busy), with a live holder where one is needed.
            holder = _start_peer(case, tmp, "hold", 0) if kind in _NEEDS_HOLDER else None
            with h.Stress():
                for t in timeouts:
                    over, bad = _measure(case, t, n)
                    stress_over.setdefault(kind, []).extend(over)
                    wrong += bad
                    early += sum(1 for o in over if o < -0.002)
            if holder is not None:
                holder.kill()
                holder.join(5)
            # After a peer was killed while holding it or waiting in the same call.
            case.reset()
            role = "hold" if kind in _NEEDS_HOLDER else "wait"
            for i in range(max(1, n // 2)):
                victim = _start_peer(case, tmp, role, i + 1)
                victim.kill()
                victim.join(5)
                for t in timeouts:
                    over, bad = _measure(case, t, 2)
                    kill_over.setdefault(kind, []).extend(over)
                    wrong += bad
                case.reset()
        finally:
            case.close()
    all_stress = [o for v in stress_over.values() for o in v]
    all_kill = [o for v in kill_over.values() for o in v]
    rows = []
    worst_kind = max(stress_over, key=lambda k: percentile(stress_over[k], 99))
    p99s = percentile(all_stress, 99)
    rows.append(row(
        "7", f"blocking calls return by t+50ms under CPU stress ({len(KINDS)} kinds)",
        f"{len(all_stress)} calls, t={'/'.join(str(t) for t in timeouts)} s: overrun p50 {ms(percentile(all_stress, 50))}, "
        f"p99 {ms(p99s)}, max {ms(max(all_stress))} (worst kind {worst_kind}: p99 "
        f"{ms(percentile(stress_over[worst_kind], 99))})",
        "p99 <= 50 ms", p99s <= 0.05 and wrong == 0 and early == 0,
        detail=f"wrong outcomes {wrong}, returned early {early}; per kind p99: "
               + ", ".join(f"{k} {ms(percentile(v, 99))}" for k, v in stress_over.items()),
    ))
    p99k = percentile(all_kill, 99)
    rows.append(row(
        "7", "blocking calls return by t+50ms after a peer was killed in them",
        f"{len(all_kill)} calls: overrun p99 {ms(p99k)}, max {ms(max(all_kill))}",
        "p99 <= 50 ms", p99k <= 0.05 and wrong == 0,
        detail="per kind max: " + ", ".join(f"{k} {ms(max(v))}" for k, v in kill_over.items()),
    ))
    return rows


# ---- 8: signals ------------------------------------------------------------------------

_SIGNAL_KINDS = [k for k in KINDS if k not in _NEEDS_HOLDER] + ["RobustMutex.acquire", "Liveness.wait_gone"]


def fig_signals(tier: Tier, tmp: str) -> List[Row]:
    rows = []
    # (a) blocking waits under a SIGALRM every 0.1 s with a Python handler.
    waits = tier.n(600, 10000)
    t = 0.01 if not tier.long else 0.02
    cases = {k: Case(k) for k in _SIGNAL_KINDS}
    holders = {k: _start_peer(c, tmp, "hold", 0) for k, c in cases.items() if k in _NEEDS_HOLDER}
    alarms = [0]
    spurious: List[str] = []
    early = satisfied_ok = satisfied = 0
    rng = random.Random(8)
    old = signal.signal(signal.SIGALRM, lambda *a: alarms.__setitem__(0, alarms[0] + 1))
    signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)
    start = time.monotonic()
    try:
        kinds = list(cases)
        for i in range(waits):
            kind = kinds[i % len(kinds)]
            case = cases[kind]
            helper = None
            if kind not in _NEEDS_HOLDER and rng.random() < 0.25:
                # A wait that is satisfied half-way, with signals around it.
                helper = threading.Timer(t / 2, case.unblock)
                helper.start()
                satisfied += 1
            t0 = time.monotonic()
            try:
                outcome = case.call(t * 4 if helper else t)
            except Exception as e:
                outcome = "error"
                spurious.append(f"{kind}: {e!r}")
            elapsed = time.monotonic() - t0
            if helper is not None:
                helper.join()
                if outcome == "ok":
                    satisfied_ok += 1
                else:
                    spurious.append(f"{kind}: {outcome} although released")
                case.reset()
            elif outcome == "ok":
                spurious.append(f"{kind}: returned success without a release")
            elif outcome == "timeout" and elapsed < t - 0.001:
                early += 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
        duration = time.monotonic() - start
        for c in holders.values():
            c.kill()
        h.join_all(list(holders.values()), 5)
        for case in cases.values():
            case.close()
    rows.append(row(
        "8", f"blocking waits under SIGALRM every 0.1 s ({len(cases)} kinds)",
        f"{waits} waits, {alarms[0]} signals in {duration:.0f} s: spurious errors {len(spurious)}, "
        f"early returns {early}, released waits that got it {satisfied_ok}/{satisfied}",
        "0 spurious", not spurious and early == 0 and alarms[0] > 0 and satisfied_ok == satisfied,
        detail="; ".join(spurious[:5]),
    ))

    # (b) SIGINT -> KeyboardInterrupt, as from a terminal (process-directed).
    per = tier.n(4, 40)
    lat: Dict[str, List[float]] = {}
    unusable = 0
    for kind in _SIGNAL_KINDS:
        case = Case(kind)
        holder = _start_peer(case, tmp, "hold", 1) if kind in _NEEDS_HOLDER else None
        try:
            for i in range(per):
                sent: List[int] = []

                def interrupt() -> None:
                    sent.append(_now_ns())
                    os.kill(os.getpid(), signal.SIGINT)

                timer = threading.Timer(0.03, interrupt)
                # A wait that ignores Ctrl-C is rescued and counted, never hung.
                rescue = threading.Timer(2.0, holder.kill if holder is not None else case.unblock)
                timer.start()
                rescue.start()
                got = None
                try:
                    case.call(None if i % 2 == 0 else 30.0)
                except KeyboardInterrupt:
                    got = _now_ns()
                finally:
                    timer.join()
                    rescue.cancel()
                lat.setdefault(kind, []).append((got - sent[0]) / _NS if got and sent else float("inf"))
                try:
                    if case.call(0) not in ("timeout",):
                        unusable += 1
                except Exception:
                    unusable += 1
                case.reset()
        finally:
            if holder is not None:
                holder.kill()
                holder.join(5)
            case.close()
    every = [v for vs in lat.values() for v in vs]
    worst = max(every)
    rows.append(row(
        "8", f"SIGINT -> KeyboardInterrupt in a blocking call ({len(lat)} kinds, timeout None/30 s)",
        f"{len(every)} interrupts: p50 {ms(percentile(every, 50))}, max {ms(worst)}; "
        f"unusable afterwards {unusable}",
        "<= 100 ms", worst <= 0.1 and unusable == 0,
        detail="per kind max: " + ", ".join(f"{k} {ms(max(v))}" for k, v in lat.items()),
    ))
    return rows


# ---- 9: external removal -------------------------------------------------------------


def _removal_waiter(kind: str, handle: Any, ready: str, out: str) -> int:
    """Block; report what ended the wait and when."""
    h.U64Log(ready).add(1)
    result: Dict[str, Any] = {"exc": None}
    try:
        if kind in ("ring-get", "ring-put"):
            from ..ring import Ring

            r = Ring.attach(shmid=handle)
            if kind == "ring-get":
                r.get(timeout=10)
            else:
                r.put(b"p" * 100, timeout=10)
        elif kind == "mailbox-recv":
            from ..mailbox import Mailbox

            Mailbox.attach(shmid=handle).recv(timeout=10)
        elif kind == "semaphore":
            from ..semaphore import Semaphore

            Semaphore(handle).acquire(10)
        elif kind == "liveness":
            from ..liveness import Liveness

            Liveness.attach(semid=handle).wait_gone(0, 10)
    except BaseException as e:
        result = {"exc": type(e).__name__, "errno": getattr(e, "errno", None), "msg": str(e)}
    result["t"] = _now_ns()
    h.write_json(out, result)
    return 0


def _removal_case(kind: str, tmp: str) -> Dict[str, Any]:
    from .. import _core

    _uniq[0] += 1
    tmp = os.path.join(tmp, f"case{_uniq[0]}")
    os.makedirs(tmp, exist_ok=True)

    objs: List[Any] = []
    holder = None
    try:
        if kind.startswith("ring"):
            r = h.ring(256)
            objs.append(r)
            if kind == "ring-put":
                while True:
                    try:
                        r.put(b"x" * 100, timeout=0)
                    except TimeoutError:
                        break
            handle: Any = r.shmid
            remove: Callable[[], None] = lambda: _core.shm_remove(handle)  # noqa: E731  (like ipcrm -m)
        elif kind == "mailbox-recv":
            box = h.mailbox(64)
            objs.append(box)
            handle = box.shmid
            remove = lambda: _core.shm_remove(handle)  # noqa: E731
        elif kind == "semaphore":
            s = h.semaphore(0)
            objs.append(s)
            handle = s.semid
            remove = lambda: _core.sem_remove(handle)  # noqa: E731  (like ipcrm -s)
        else:
            live = h.liveness(1)
            objs.append(live)
            handle = live.semid
            ready0 = os.path.join(tmp, f"rm-{kind}-holder")
            holder = h.Child(_peer, "Liveness.wait_gone", handle, ready0, "hold")
            h.wait_file(ready0, 10, 8)
            remove = lambda: _core.sem_remove(handle)  # noqa: E731
        outs, waiters = [], []
        for i in range(4):
            ready, out = os.path.join(tmp, f"rm-{kind}-{i}.r"), os.path.join(tmp, f"rm-{kind}-{i}.json")
            outs.append(out)
            waiters.append(h.Child(_removal_waiter, kind, handle, ready, out))
            h.wait_file(ready, 10, 8)
        time.sleep(0.1)  # all four blocked
        t0 = _now_ns()
        remove()
        _codes, hangs = h.join_all(waiters, 15)
        results = [h.read_json(o) or {} for o in outs]
        lat = [(r["t"] - t0) / _NS if "t" in r else float("inf") for r in results]
        return {"lat": lat, "results": results, "hangs": hangs}
    finally:
        if holder is not None:
            holder.kill()
            holder.join(5)
        h.dispose(*objs)


def _expected(kind: str, res: Dict[str, Any]) -> bool:
    if kind.startswith(("ring", "mailbox")):
        return res.get("exc") == "RemovedError" and res.get("errno") == errno.EIDRM
    return res.get("exc") == "FileNotFoundError" and res.get("errno") == errno.EIDRM


def _old_peer(key: int, cmd: str, out: str) -> int:
    """Attached to the ring under *key*; after the parent re-created it,
    make one blocking call on the old handle, then attach anew by key."""
    from ..ring import Ring

    old = Ring.attach(key)
    h.U64Log(cmd + ".ready").add(1)
    h.wait_file(cmd, 20, 8)
    res: Dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        old.get(timeout=1.0)
        res["old"] = "returned a message"
    except BaseException as e:
        res["old"] = type(e).__name__
    res["old_seconds"] = time.monotonic() - t0
    try:
        new = Ring.attach(key)
        res["new"] = new.get(timeout=1.0).decode()
        new.detach()
    except BaseException as e:
        res["new"] = repr(e)
    h.write_json(out, res)
    return 0


def _sem_old_handle(tmp: str) -> Dict[str, Any]:
    """A semaphore set removed and re-created under the same key: what an old
    handle's next wait says."""
    from ..semaphore import Semaphore

    key = h.free_key()
    s1 = h.semaphore(0, key)
    old = Semaphore.attach(key)
    h.dispose(s1)
    s2 = h.semaphore(1, key)
    try:
        try:
            got = old.acquire(0.2)
            return {"old": f"acquire returned {got} (operated on the new set?)", "ok": False}
        except OSError as e:
            errname = errno.errorcode.get(e.errno, e.errno) if e.errno is not None else None
            return {"old": f"{type(e).__name__} errno {errname}",
                    "ok": s2.value == 1}
    finally:
        h.dispose(s2)


def fig_removal(tier: Tier, tmp: str) -> List[Row]:
    rows = []
    reps = tier.n(2, 20)
    for kind, what in [("ring-get", "Ring.get"), ("ring-put", "Ring.put (full)"),
                       ("mailbox-recv", "Mailbox.recv"), ("semaphore", "Semaphore.acquire"),
                       ("liveness", "Liveness.wait_gone")]:
        lat: List[float] = []
        bad: List[str] = []
        hangs = 0
        for _ in range(reps):
            res = _removal_case(kind, tmp)
            lat.extend(res["lat"])
            hangs += res["hangs"]
            bad.extend(f"{r.get('exc')} errno={r.get('errno')}" for r in res["results"] if not _expected(kind, r))
        ok = not bad and hangs == 0 and max(lat) <= 0.1
        want = "RemovedError (EIDRM)" if kind.startswith(("ring", "mailbox")) else "FileNotFoundError (EIDRM)"
        rows.append(row(
            "9", f"IPC_RMID under 4 blocked {what}",
            f"{len(lat)} waiters: {len(lat) - len(bad)} got {want}; max {ms(max(lat))}",
            "all, <= 100 ms", ok, detail="; ".join(bad[:4]),
        ))

    # Remove and re-create under the same key: the old peers notice.
    key = h.free_key()
    r1 = h.ring(4096, key)
    cmd, out = os.path.join(tmp, "recreate.cmd"), os.path.join(tmp, "recreate.json")
    peer = h.Child(_old_peer, key, cmd, out)
    r2 = None
    try:
        h.wait_file(cmd + ".ready", 10, 8)
        r1.remove()
        r1.detach()
        r2 = h.ring(4096, key)
        r2.put(b"new ring")
        h.U64Log(cmd).add(1)
        peer.join(10)
        res = h.read_json(out) or {}
    finally:
        peer.kill()
        peer.join(2)
        h.dispose(r1, r2)
    ok = res.get("old") == "RemovedError" and res.get("new") == "new ring"
    rows.append(row(
        "9", "Ring removed and re-created under the same key: old handle's next blocking get",
        f"old handle: {res.get('old')} after {ms(res.get('old_seconds', float('nan')))}; "
        f"fresh attach by key reads {res.get('new')!r}",
        "RemovedError; new ring reachable", ok,
    ))
    sres = _sem_old_handle(tmp)
    rows.append(row(
        "9", "Semaphore set removed and re-created under the same key: old handle's next wait",
        sres["old"], "an error, new set untouched", sres["ok"],
    ))
    return rows
