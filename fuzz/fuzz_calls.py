"""Fuzz harness (b): random sequences of calls into the C extension.

Each input is a program: attach and detach segments (read-write and
read-only), export and release memoryviews, read and write at random
offsets and lengths, make AtomicViews, SharedSemaphores and RobustMutexes
at random offsets (also over each other and over freed memory), call their
methods with random arguments, operate a System V semaphore set with random
indices, deltas and flags, close things in random order and drop references
(so deallocation runs with locks held and exports alive).  Python exceptions
are the expected answer to bad calls; a crash, a hang, a ``SystemError``
(C-API misuse) or a sanitizer report is a failure.

Nothing blocks: every wait has ``timeout=0`` or ``IPC_NOWAIT``.  One thing
is left out on purpose: writing over a robust mutex *this process holds*.
glibc keeps held robust mutexes on a per-thread list linked through the
mutex memory itself, so scribbling there corrupts that list and glibc
crashes at the next lock or unlock: a property of process-shared robust
mutexes in writable shared memory, not of shmipc (see docs/reliability.md).

    python fuzz/fuzz_calls.py --seconds 60
    python fuzz/fuzz_calls.py --random --runs 100000
"""
from __future__ import annotations

import gc
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
if importlib.util.find_spec("shmipc") is None:
    sys.path.insert(1, os.path.dirname(_HERE))

from _driver import Reader, instrumented, run  # noqa: E402

with instrumented():
    import shmipc
    from shmipc import AtomicView, RobustMutex, Segment, Semaphore, SharedSemaphore, _core

SIZES = [4096, 8192, 1]
# The segments: created once, removed at once (they live while attached).
SHMIDS = []
for size in SIZES:
    _seg = Segment.create(size)
    _seg.remove()
    SHMIDS.append((_seg.shmid, _seg))  # keep one attach so the ids stay valid
SEMSET = Semaphore.create([1, 0, 5], count=3)
_track = os.environ.get("SHMIPC_RELIABILITY_TRACK")
if _track:  # the reliability suite removes it if this process dies
    # Recorded without its ctime (-1): the programs below SETVAL it, which
    # moves the ctime, and a killed (hung) harness must not leak it.
    with open(_track, "a") as f:
        f.write(f"sem {SEMSET.semid} -1\n")


class State:
    def __init__(self) -> None:
        self.segs: list = []
        self.views: list = []
        self.atomics: list = []
        self.sems: list = []
        self.mutexes: list = []

    def hits_held(self, buffer, start: int, end: int) -> bool:
        """Would writing *buffer*[start:end] touch a mutex this process holds?

        Coarse on purpose: any held mutex in the same segment protects the
        whole segment (views may be slices at unknown offsets).
        """
        shmid = getattr(buffer, "shmid", None)
        if shmid is None and isinstance(buffer, memoryview):
            shmid = getattr(buffer.obj, "shmid", None)
        if shmid is None:
            return False
        for m in self.mutexes:
            try:
                obj = m.obj
                mshmid = getattr(obj, "shmid", None) or getattr(getattr(obj, "obj", None), "shmid", None)
                if m._held and mshmid == shmid:
                    return True
            except ValueError:
                pass
        return False


def _buffer(rd: Reader, st: State):
    pool = st.segs + st.views
    if not pool or rd.below(8) == 0:
        return bytearray(rd.below(200))
    return rd.choice(pool)


def step(rd: Reader, st: State) -> None:
    op = rd.below(24)
    if op == 0:
        shmid = rd.choice(SHMIDS)[0]
        st.segs.append(Segment(shmid, readonly=bool(rd.int(1) & 1)))
    elif op == 1 and st.segs:
        rd.choice(st.segs).detach()
    elif op == 2 and st.segs:
        seg = rd.choice(st.segs)
        if rd.int(1) & 1:
            seg.read(rd.wild_int(), rd.wild_int())
        else:
            count = rd.wild_int() if rd.int(1) & 1 else rd.below(64)
            seg.read_many(count, rd.wild_int(), rd.wild_int(), rd.wild_int())
    elif op == 3 and st.segs:
        seg = rd.choice(st.segs)
        data, off = rd.bytes(rd.below(64)), rd.wild_int()
        if not st.hits_held(seg, off, off + len(data)):
            seg.write(data, off)
    elif op == 4 and st.segs:
        seg = rd.choice(st.segs)
        v = memoryview(seg)
        a, b = sorted((rd.wild_int() % (len(v) + 1), rd.wild_int() % (len(v) + 1)))
        st.views.append(v[a:b] if rd.int(1) & 1 else v)
    elif op == 5 and st.views:
        v = rd.choice(st.views)
        if rd.int(1) & 1:
            v.release()
        else:
            off = rd.wild_int()
            if not st.hits_held(v, off, off + 1):
                v[off] = rd.int(1)
    elif op == 6:
        st.atomics.append(AtomicView(_buffer(rd, st)))
    elif op in (7, 8) and st.atomics:
        av = rd.choice(st.atomics)
        off = rd.wild_int() if rd.int(1) & 1 else rd.below(4096) & ~3
        value = rd.wild_int()
        width = 8 if rd.int(1) & 1 else 4
        name = rd.choice(["load", "store", "store_seq_cst", "exchange", "compare_exchange", "fetch_add",
                          "store_then_load"])
        writes = name != "load"
        if writes and st.hits_held(av.obj, off, off + width):
            return
        if name == "store_then_load":  # a store of one width, a load of the other
            other = rd.wild_int() if rd.int(1) & 1 else rd.below(4096) & ~7
            fn = av.store64_then_load32 if width == 8 else av.store32_then_load64
            fn(off, value, other)
            return
        bits = width * 8
        method = {"load": f"load{bits}", "store": f"store{bits}", "store_seq_cst": f"store{bits}_seq_cst",
                  "exchange": f"exchange{bits}", "compare_exchange": f"compare_exchange{bits}",
                  "fetch_add": f"fetch_add{bits}"}[name]
        fn = getattr(av, method)
        if name == "compare_exchange":
            fn(off, value, rd.wild_int())
        elif name == "load":
            fn(off)
        else:
            fn(off, value)
    elif op == 9 and st.atomics:
        rd.choice(st.atomics).close()
    elif op == 10:
        buf = _buffer(rd, st)
        off = rd.wild_int() if rd.int(1) & 1 else rd.below(4096) & ~31
        if st.hits_held(buf, off, off + SharedSemaphore.SIZE):
            return
        value = None if rd.int(1) & 1 else rd.wild_int()
        st.sems.append(SharedSemaphore(buf, off, value))
    elif op == 11 and st.sems:
        s = rd.choice(st.sems)
        m = rd.below(5)
        if m == 0:
            s.acquire(0)
        elif m == 1:
            s.release(rd.wild_int() if rd.int(1) & 1 else 1)
        elif m == 2:
            s.value
        elif m == 3:
            s.close()
        elif s.acquire(0):  # (``with s:`` would wait forever on a zero value)
            s.release()
    elif op == 12:
        buf = _buffer(rd, st)
        off = rd.wild_int() if rd.int(1) & 1 else rd.below(4096) & ~63
        init = bool(rd.int(1) & 1)
        if init and st.hits_held(buf, off, off + RobustMutex.SIZE):
            return
        st.mutexes.append(RobustMutex(buf, off, init))
    elif op == 13 and st.mutexes:
        m = rd.choice(st.mutexes)
        k = rd.below(5)
        if k == 0:
            try:
                m.acquire(0)
            except shmipc.OwnerDiedError:
                pass
        elif k == 1:
            m.release()
        elif k == 2:
            m.mark_consistent()
        elif k == 3:
            m.close()
        else:
            m._held, m.closed, m.offset
    elif op == 14:
        index, n = rd.wild_int(), rd.wild_int()
        undo = bool(rd.int(1) & 1)
        k = rd.below(8)
        if k == 0:
            SEMSET.acquire(0, n=n, undo=undo, index=index)
        elif k == 1:
            SEMSET.release(n, undo=undo, index=index)
        elif k == 2:
            SEMSET.wait_zero(0, index=index)
        elif k == 3:
            ops = [(rd.wild_int(), rd.wild_int(), rd.wild_int() | _core.IPC_NOWAIT) for _ in range(rd.below(4))]
            SEMSET.semop(ops, 0)
        elif k == 4:
            SEMSET.value_of(index)
        elif k == 5:
            SEMSET.set_value(n, index)
        elif k == 6:
            SEMSET.waiting_of(index), SEMSET.zero_waiting_of(index), SEMSET.last_pid_of(index)
        else:
            SEMSET.set_values([rd.wild_int() for _ in range(rd.below(5))])
    elif op == 15 and st.segs:
        seg = rd.choice(st.segs)
        seg.prefault() if rd.int(1) & 1 else (seg.size, seg.exports, seg.address, seg.key, seg.closed)
    elif op == 16:
        _core.shm_stat(rd.choice(SHMIDS)[0])
    elif op == 17:
        pools = [p for p in (st.segs, st.views, st.atomics, st.sems, st.mutexes) if p]
        if pools:
            pool = rd.choice(pools)
            obj = pool.pop(rd.below(len(pool)))
            if obj in st.mutexes or obj in st.sems:
                return
            del obj  # deallocation with whatever state it has
    elif op == 18:
        gc.collect()
    else:
        pass


def one_input(data: bytes) -> None:
    rd = Reader(data)
    st = State()
    try:
        while rd.left() > 0:
            try:
                step(rd, st)
            except SystemError:
                raise
            except Exception:
                pass
    finally:
        # Release held mutexes before their memory can go away.
        for m in st.mutexes:
            try:
                if m._held:
                    try:
                        m.mark_consistent()
                    except Exception:
                        pass
                    m.release()
            except Exception:
                pass
        del st  # (op 18 runs gc.collect() inside programs)


if __name__ == "__main__":
    run(one_input, max_len=256, at_exit=SEMSET.remove)
