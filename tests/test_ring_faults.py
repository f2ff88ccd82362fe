"""Ring against hostile peers, signal-handler exceptions, killed lock holders,
threads, fork and forged header words (the Ring on FutexLock/LockedBlock/
Window/futex doorbells, layout 2).

Every scenario runs real processes (os.fork), joined with timeouts; a child
that dies of a signal or exits nonzero fails the test.  Every segment made
here is removed at teardown (the session leak check watches).
"""
from __future__ import annotations

import gc
import json
import os
import random
import signal
import struct
import sys
import threading
import time
import traceback

import pytest

import _leaks
import shmipc
from shmipc import CorruptedError, EndOfStream, RemovedError, Ring, _core
from shmipc.atomics import AtomicView
from shmipc.ring import (
    OFF_CONSUMER_LOCK,
    OFF_CONSUMER_WAITING,
    OFF_DATA_BELL,
    OFF_HEAD,
    OFF_PRODUCER_LOCK,
    OFF_PRODUCER_WAITING,
    OFF_PUT_COUNT,
    OFF_SPACE_BELL,
    OFF_TAIL,
    OFF_TAKEN_COUNT,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="futex/SysV: Linux")

ALLOWED = (CorruptedError, TimeoutError, EndOfStream, ValueError, RemovedError, BufferError)


# ---- helpers ---------------------------------------------------------------


def fork_child(fn, *args) -> int:
    """Run fn(*args) in a forked child; its return value (default 0) is the
    exit status, an exception prints and exits 1."""
    pid = os.fork()
    if pid == 0:
        rc = 1
        try:
            rc = fn(*args) or 0
        except BaseException:
            traceback.print_exc()
            rc = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(rc)
    return pid


def join(pid: int, timeout: float) -> int:
    """waitpid with a timeout; the raw status.  A child still running at the
    deadline is SIGKILLed and the test fails."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"child {pid} did not finish within {timeout} s (killed)")
        time.sleep(0.005)


def assert_clean_exit(status: int, what: str = "child") -> None:
    assert not os.WIFSIGNALED(status), f"{what} died of signal {os.WTERMSIG(status)}"
    assert os.WEXITSTATUS(status) == 0, f"{what} exited with {os.WEXITSTATUS(status)}"


def kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rfind(b")") + 2:].split()[19])  # field 22


def lock_word(pid: int) -> int:
    return ((start_time(pid) & 0xFFFFFFFF) << 32) | pid


def make_ring(capacity: int, **kw) -> Ring:
    ring = Ring.create(capacity, **kw)
    _leaks.register_shm(ring.shmid)
    return ring


@pytest.fixture
def rings():
    made = []

    def make(capacity: int = 64 * 1024, **kw) -> Ring:
        ring = make_ring(capacity, **kw)
        made.append((ring, ring.shmid))
        return ring

    yield make
    for ring, shmid in made:
        try:
            _core.shm_remove(shmid)
        except OSError:
            pass
        gc.collect()
        try:
            ring.detach()
        except BufferError:
            pass


# ---- 1. hostile writer -----------------------------------------------------

HOSTILE_OFFSETS = list(range(0, 704, 4))
HOT = [64, 68, 128, 132, 128 + 24, 128 + 32, 192, 256, 320, 384, 448, 452, 512, 516, 576, 640]


def _hostile_writer(ring: Ring, seconds: float, mode: str) -> int:
    av = AtomicView(ring.segment)
    seg = ring.segment
    rnd = random.Random(os.getpid())
    cap = ring.capacity
    end = time.monotonic() + seconds
    values32 = [0, 1, 7, 8, 0x7F, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, os.getpid(), os.getppid(), 4000000]
    values64 = [0, 8, 16, cap, cap + 8, cap - 8, 1 << 62, (1 << 64) - 8, (1 << 64) - 1, 1 << 63]
    while time.monotonic() < end:
        if mode == "bell":
            av.store32(OFF_DATA_BELL, 0x7F)
            av.store32(OFF_DATA_BELL, 0)
            continue
        for _ in range(64):
            r = rnd.random()
            if r < 0.45:
                off = rnd.choice(HOT)
                if off % 8 == 0 and rnd.random() < 0.5:
                    av.store64(off, rnd.choice(values64) if rnd.random() < 0.5 else rnd.getrandbits(64))
                else:
                    av.store32(off, rnd.choice(values32) if rnd.random() < 0.5 else rnd.getrandbits(32))
            elif r < 0.75:
                off = rnd.choice(HOSTILE_OFFSETS)
                if off in (0, 4, 8, 12, 16, 20, 24, 28):
                    continue  # attach-time header: read once, not part of this attack
                if off in (32, 36):
                    # closed/removed make every call return at once: rarely
                    av.store32(off, 1 if rnd.random() < 0.05 else 0)
                    continue
                av.store32(off, rnd.getrandbits(32))
            elif r < 0.9:
                # the old glibc robust-list attack: the owner's list pointers
                av.store64(128 + 24, rnd.getrandbits(64))
                av.store64(128 + 32, rnd.getrandbits(64))
            else:
                pos = rnd.randrange(0, cap - 64) & ~7
                seg.write(os.urandom(rnd.choice([8, 16, 64])), 4096 + pos)
        time.sleep(0)
    return 0


def _victim(ring: Ring, seconds: float, mode: str) -> int:
    t = 0.05
    worst = 0.0
    calls = 0
    seen = set()
    ops = [
        lambda: ring.put(b"x" * random.randrange(0, 100), timeout=t),
        lambda: ring.get(timeout=t),
        lambda: ring.put_many([b"ab"] * 5 + [b"c" * 33], timeout=t),
        lambda: ring.get_many(7, timeout=t),
        lambda: ring.put_nowait(b"n"),
        lambda: ring.get_nowait(),
        _reserve,
        _view,
        lambda: len(ring),
        lambda: ring.empty(),
        lambda: ring.full(),
        lambda: repr(ring),
        lambda: ring.closed,
    ]
    if mode == "bell":
        ops = [lambda: ring.get(timeout=t)]

    def run_one(op, timeout):
        nonlocal worst, calls
        t0 = time.monotonic()
        try:
            op()
        except ALLOWED as exc:
            seen.add(type(exc).__name__)
        took = time.monotonic() - t0
        worst = max(worst, took - timeout)
        calls += 1

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for op in ops:
            run_one(op, t)
    print(f"victim {mode}: {calls} calls, worst overrun {worst:.3f} s, raised {sorted(seen)}")
    return 3 if worst > 1.0 else 0


def _reserve_in(ring):
    def op():
        with ring.reserve(8, timeout=0.05) as b:
            b[:] = b"12345678"
    return op


def _view_in(ring):
    def op():
        with ring.get_view(timeout=0.05) as v:
            bytes(v)
            time.sleep(0.001)  # let the writer hit 128+24/128+32 while we hold it
    return op


_reserve = _view = None  # bound per victim below


@pytest.mark.parametrize("mode", ["header", "bell"])
def test_hostile_writer_never_crashes_a_victim(rings, mode):
    ring = rings(16 * 1024)
    for i in range(50):
        ring.put(b"seed %d" % i)

    def victim():
        global _reserve, _view
        _reserve, _view = _reserve_in(ring), _view_in(ring)
        return _victim(ring, 2.5, mode)

    v = fork_child(victim)
    w = fork_child(_hostile_writer, ring, 2.5, mode)
    try:
        assert_clean_exit(join(v, 20), "victim")
    finally:
        kill_and_reap(w)
    if mode == "bell":
        assert len(ring) == 0 or True


# ---- 2. exceptions from signal handlers --------------------------------------


class Boom(Exception):
    pass


_armed = False


_LIBRARY = os.path.dirname(shmipc.__file__) + os.sep


def in_library(frame) -> bool:
    """True when a signal handler interrupted shmipc's own code: the calls
    under test, not this harness (whose except clauses CPython 3.9/3.10
    interrupt too, at a handler's entry)."""
    return frame is not None and frame.f_code.co_filename.startswith(_LIBRARY)


def _alarm(signum, frame):
    global _armed
    if _armed and in_library(frame):
        _armed = False
        raise Boom()


def _storm_child(ring: Ring, seconds: float) -> int:
    global _armed
    signal.signal(signal.SIGALRM, _alarm)
    booms = 0

    def rv():
        with ring.reserve(8, timeout=0) as b:
            b[:] = b"rrrrrrrr"

    def gv():
        with ring.get_view(timeout=0) as v:
            bytes(v)

    ops = [
        lambda: ring.put(b"p" * 20, timeout=0),
        lambda: ring.get(timeout=0),
        lambda: ring.put_many([b"m" * 8] * 4, timeout=0),
        lambda: ring.get_many(5, timeout=0),
        rv,
        gv,
    ]
    signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            for op in ops:
                try:
                    _armed = True
                    op()
                    _armed = False
                except Boom:
                    booms += 1
                except TimeoutError:
                    _armed = False
    finally:
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    print(f"storm: {booms} exceptions from the handler")
    assert booms > 100, booms
    assert not ring._plock.held and not ring._clock.held
    av = AtomicView(ring.segment)
    try:
        assert av.load32(OFF_PRODUCER_LOCK) == 0, hex(av.load32(OFF_PRODUCER_LOCK))
        assert av.load32(OFF_CONSUMER_LOCK) == 0, hex(av.load32(OFF_CONSUMER_LOCK))
    finally:
        av.close()
    return 0


def test_signal_handler_exceptions_leave_no_lock_held(rings):
    ring = rings(64 * 1024)
    assert_clean_exit(join(fork_child(_storm_child, ring, 2.0), 30), "storm child")
    av = AtomicView(ring.segment)
    assert av.load32(OFF_PRODUCER_LOCK) == 0 and av.load32(OFF_CONSUMER_LOCK) == 0
    av.close()
    t0 = time.monotonic()
    ring.put(b"after", timeout=1)
    while True:  # drain what the storm left; ours is the last
        if ring.get(timeout=1) == b"after":
            break
    assert time.monotonic() - t0 < 1.0


def _accounting_producer(ring: Ring, count: int, path: str) -> int:
    global _armed
    signal.signal(signal.SIGALRM, _alarm)
    ok, uncertain = [], []
    signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
    try:
        for i in range(count):
            try:
                _armed = True
                ring.put(struct.pack("=Q", i), timeout=5)
                _armed = False
                ok.append(i)
            except Boom:
                uncertain.append(i)
    finally:
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
    ring.put(b"END", timeout=5)
    with open(path, "w") as f:
        json.dump({"ok": ok, "uncertain": uncertain}, f)
    return 0


def test_signal_handler_exceptions_message_accounting(rings, tmp_path):
    ring = rings(8 * 1024)  # small: the producer also waits for room
    path = str(tmp_path / "acct.json")
    pid = fork_child(_accounting_producer, ring, 20000, path)
    got = []
    try:
        while True:
            m = ring.get(timeout=10)
            if m == b"END":
                break
            got.append(struct.unpack("=Q", m)[0])
    finally:
        status = join(pid, 30)
    assert_clean_exit(status, "producer")
    with open(path) as f:
        acct = json.load(f)
    ok, uncertain = set(acct["ok"]), set(acct["uncertain"])
    assert len(uncertain) > 10, "the itimer never interrupted a put"
    assert len(got) == len(set(got)), "a message was received twice"
    assert set(got) <= ok | uncertain
    assert ok <= set(got), f"lost successful puts: {sorted(ok - set(got))[:10]}"
    assert got == sorted(got), "reordered"


# ---- 3. SIGKILLed lock holders -------------------------------------------------


def _hold_producer(ring: Ring, wfd: int) -> int:
    with ring.reserve(8) as b:
        b[:] = b"doomed!!"
        os.write(wfd, b"p")
        time.sleep(60)
    return 0


def _hold_consumer(ring: Ring, wfd: int) -> int:
    with ring.get_view() as v:
        bytes(v)
        os.write(wfd, b"c")
        time.sleep(60)
    return 0


def test_sigkilled_lock_holders_are_recovered_quickly(rings):
    ring = rings(4096)
    ring.put(b"first")
    r, w = os.pipe()
    p = fork_child(_hold_producer, ring, w)
    c = fork_child(_hold_consumer, ring, w)
    try:
        got = os.read(r, 1) + os.read(r, 1)
        assert sorted(got) == sorted(b"pc")
        assert ring._plock.owner == p and ring._clock.owner == c
    finally:
        kill_and_reap(p)
        kill_and_reap(c)
        os.close(r)
        os.close(w)
    t0 = time.monotonic()
    ring.put(b"second", timeout=1)
    t_put = time.monotonic() - t0
    t0 = time.monotonic()
    assert ring.get(timeout=1) == b"first"  # the killed view never consumed it
    t_get = time.monotonic() - t0
    assert ring.get(timeout=1) == b"second"  # the killed reservation never committed
    print(f"recovered producer lock in {t_put * 1000:.1f} ms, consumer lock in {t_get * 1000:.1f} ms")
    assert t_put < 1.0 and t_get < 1.0


# ---- 4. threads sharing one Ring -------------------------------------------------


def test_threads_share_one_ring_with_blocks(rings):
    ring = rings(4096)
    n = 3000
    got, errors = [], []

    def producer():
        try:
            for i in range(n):
                with ring.reserve(8, timeout=10) as b:
                    b[:] = struct.pack("=Q", i)
                    time.sleep(0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def consumer():
        try:
            for _ in range(n):
                with ring.get_view(timeout=10) as v:
                    got.append(struct.unpack("=Q", bytes(v))[0])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert got == list(range(n))


# ---- 5. fork from a threaded process; failed detach --------------------------------


def _forked_child(ring: Ring) -> int:
    assert not ring._clock.held and not ring._plock.held
    ring.put(b"from-child", timeout=5)
    assert ring.get(timeout=5) == b"for-child"
    ring.detach()
    assert ring.detached
    return 0


def test_fork_while_a_thread_waits_in_get(rings):
    ring = rings(4096)
    got = []
    t = threading.Thread(target=lambda: got.append(ring.get(timeout=10)))
    t.start()
    time.sleep(0.1)  # the thread sleeps in get(), holding the consumer lock
    pid = fork_child(_forked_child, ring)
    try:
        t.join(10)
        assert not t.is_alive()
        assert got == [b"from-child"]
        ring.put(b"for-child", timeout=5)
    finally:
        status = join(pid, 15)
    assert_clean_exit(status)


def test_failed_detach_leaves_the_ring_usable(rings):
    ring = rings(4096)
    ring.put(b"kept")
    with pytest.raises(BufferError):
        with ring.get_view() as v:
            m = v[1:]  # outlives the block: message stays queued
    assert not ring._clock.held
    with pytest.raises(BufferError):
        ring.detach()
    assert not ring.detached
    ring.put(b"more", timeout=1)
    assert bytes(m) == b"ept"
    m.release()
    del m, v
    gc.collect()
    assert ring.get(timeout=1) == b"kept"
    assert ring.get(timeout=1) == b"more"
    mv = memoryview(ring.segment)
    with pytest.raises(BufferError):
        ring.detach()
    assert not ring.detached
    ring.put(b"x", timeout=1)
    assert ring.get(timeout=1) == b"x"
    mv.release()
    ring.detach()
    assert ring.detached


def _exit_forked_copy_of_block(block, wfd: int) -> int:
    # The child's copy of a block entered by the parent: its exit must not
    # publish (the parent's thread holds the lock and commits/consumes).
    time.sleep(0.3)
    try:
        block.__exit__(None, None, None)
    except RuntimeError:
        os.write(wfd, b"R")
    return 0


@pytest.mark.parametrize("kind", ["reserve", "get_view"])
def test_fork_inside_a_block_does_not_publish_from_the_child(rings, kind):
    # Found here: the child's copy of the block published tail (head) again
    # without holding the lock, moving it backwards (messages lost or
    # delivered twice).
    ring = rings(4096)
    r, w = os.pipe()
    try:
        if kind == "reserve":
            block = ring.reserve(1)
            with block as b:
                b[:] = b"A"
                pid = fork_child(_exit_forked_copy_of_block, block, w)
            ring.put(b"B")
            ring.put(b"C")
            status = join(pid, 10)
            assert [ring.get(timeout=1) for _ in range(3)] == [b"A", b"B", b"C"]
        else:
            ring.put_many([b"A", b"B", b"C"])
            block = ring.get_view()
            with block as v:
                assert bytes(v) == b"A"
                pid = fork_child(_exit_forked_copy_of_block, block, w)
            assert ring.get(timeout=1) == b"B"
            status = join(pid, 10)
            assert ring.get(timeout=1) == b"C"
        assert_clean_exit(status)
        assert os.read(r, 1) == b"R"
        with pytest.raises(TimeoutError):
            ring.get(timeout=0)
    finally:
        os.close(r)
        os.close(w)


# ---- 6. detach inside a block ---------------------------------------------------------


def test_detach_inside_blocks_is_refused_and_the_block_completes(rings):
    ring = rings(4096)
    with ring.reserve(5) as b:
        b[:] = b"hello"
        with pytest.raises(BufferError):
            ring.detach()
        assert not ring.detached
    assert not ring._plock.held
    with ring.get_view() as v:
        assert bytes(v) == b"hello"
        with pytest.raises(BufferError):
            ring.detach()
    assert not ring._clock.held and not ring._plock.held
    assert len(ring) == 0
    with pytest.raises(TimeoutError):
        ring.get(timeout=0)
    av = AtomicView(ring.segment)
    assert av.load32(OFF_PRODUCER_LOCK) == 0 and av.load32(OFF_CONSUMER_LOCK) == 0
    av.close()
    ring.detach()
    assert ring.detached


# ---- 7. O(1) queries, garbage counters --------------------------------------------------


def test_len_empty_repr_are_constant_time_and_bounded(rings):
    ring = rings(4 << 20)
    n = ring.capacity // 8
    assert ring.put_many([b""] * n, timeout=5) == n
    assert ring.full()
    for fn in (lambda: len(ring), ring.empty, lambda: repr(ring), ring.full):
        t0 = time.perf_counter()
        fn()
        assert time.perf_counter() - t0 < 0.010
    assert len(ring) == n
    av = AtomicView(ring.segment)
    rnd = random.Random(7)
    head, tail = av.load64(OFF_HEAD), av.load64(OFF_TAIL)
    for _ in range(200):
        av.store64(OFF_PUT_COUNT, rnd.getrandbits(64))
        av.store64(OFF_TAKEN_COUNT, rnd.choice([0, rnd.getrandbits(64), (1 << 64) - 1]))
        assert 0 <= len(ring) <= (tail - head) // 8
        repr(ring)
        ring.empty()
    av.close()


# ---- 8. spin validation --------------------------------------------------------------------


def test_spin_rejects_bad_values_and_create_makes_nothing(rings, key):
    ring = rings(4096)
    for bad, exc in [(float("nan"), ValueError), (-1, ValueError), ("x", TypeError),
                     (float("inf"), ValueError), (10**400, ValueError), (True, TypeError)]:
        with pytest.raises(exc):
            ring.spin = bad
        with pytest.raises(exc):
            Ring.create(4096, key=key, spin=bad)
        with pytest.raises(FileNotFoundError):
            _core.shmget(key, 0, 0)
    assert ring.spin == 0


# ---- 9. doorbells at any value --------------------------------------------------------------


@pytest.mark.parametrize("bell", [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000])
def test_doorbell_at_any_value(rings, bell):
    ring = rings(4096)
    av = AtomicView(ring.segment)
    for off in (OFF_DATA_BELL, OFF_SPACE_BELL):
        av.store32(off, bell)
    for off in (OFF_CONSUMER_WAITING, OFF_PRODUCER_WAITING):
        av.store32(off, 0xFFFFFFFF)
    ring.put(b"ding")
    assert ring.get(timeout=1) == b"ding"
    ring.put_many([b"a", b"b"])
    assert ring.get_many(5, timeout=1) == [b"a", b"b"]
    with ring.reserve(2) as b:
        b[:] = b"zz"
    with ring.get_view(timeout=1) as v:
        assert bytes(v) == b"zz"
    av.close()


# ---- 10. huge timeouts ----------------------------------------------------------------------


def test_timeouts_too_large_for_a_float(rings, seg):
    ring = rings(4096)
    huge = 10**400
    ring.put(b"a", timeout=huge)
    assert ring.get(timeout=huge) == b"a"
    ring.put_many([b"b"], timeout=huge)
    assert ring.get_many(3, timeout=huge) == [b"b"]
    with ring.reserve(1, timeout=huge) as b:
        b[:] = b"c"
    with ring.get_view(timeout=huge) as v:
        assert bytes(v) == b"c"
    lock = _core.FutexLock(seg, 64)
    assert lock.acquire(huge) == 1
    assert lock.release()
    # and a huge timeout on a busy lock still waits, and takes a dead holder's
    other = _core.FutexLock(seg, 64)
    av = AtomicView(seg)
    av.store64(64, 4000000)  # no such thread
    assert other.acquire(huge) in (1, 2)
    assert other.release()
    av.close()
    other.close()
    lock.close()


# ---- 11. interrupted create -----------------------------------------------------------------


def _peek_magic(shmid: int) -> int:
    seg = shmipc.Segment(shmid, readonly=True)
    try:
        return int.from_bytes(seg.read(8, 0), "little")
    finally:
        seg.detach()


def _create_and_leave(key: int) -> int:
    Ring.create(1 << 28, key=key).detach()
    return 0


def test_interrupted_create_is_refused_and_cleaned(shm):
    init_magic = int.from_bytes(b"shmipcRi", "little")
    leftovers = 0
    for delay in (0.001, 0.005, 0.02):
        key = shm.key()
        pid = fork_child(_create_and_leave, key)
        time.sleep(delay)
        kill_and_reap(pid)
        try:
            shmid = _core.shmget(key, 0, 0)
        except FileNotFoundError:
            continue  # killed before the segment existed
        shm.add(shmid)
        magic = _peek_magic(shmid)
        if magic == int.from_bytes(b"shmipcRG", "little"):
            continue  # the create finished before the kill: a good ring
        leftovers += 1
        with pytest.raises(CorruptedError) as info:
            Ring.attach(key)
        # Killed even before the mark store (magic 0), the segment still has
        # the mode a create starts with: refused and cleaned alike.
        assert magic in (0, init_magic)
        assert "initialising" in str(info.value)
        found = shmipc.cleanup(select=lambda o, s=shmid: o.ident == s)
        assert [o.removed for o in found] == [True]
        with pytest.raises(FileNotFoundError):
            _core.shmget(key, 0, 0)
    print(f"{leftovers} interrupted create(s) left a segment behind")


# ---- 12. forged lock words --------------------------------------------------------------------


def test_forged_lock_words(rings):
    ring = rings(4096)
    av = AtomicView(ring.segment)
    pid = fork_child(time.sleep, 30)
    try:
        time.sleep(0.05)
        # a live peer names itself as the holder (tid + its real start time)
        av.store64(OFF_PRODUCER_LOCK, lock_word(pid))
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            ring.put(b"x", timeout=0.2)
        took = time.monotonic() - t0
        assert 0.19 <= took < 0.6, took
        av.store64(OFF_CONSUMER_LOCK, lock_word(pid))
        ring_empty_t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            ring.get(timeout=0.2)
        assert time.monotonic() - ring_empty_t0 < 0.6
        # the peer dies: its word is taken over
        kill_and_reap(pid)
        t0 = time.monotonic()
        ring.put(b"y", timeout=1)
        assert ring.get(timeout=1) == b"y"
        assert time.monotonic() - t0 < 0.5
    finally:
        kill_and_reap(pid)
    for forged in (4000000, 0xFFFFFFFF, (12345 << 32) | os.getppid(), 0x3FFFFFFF):
        av.store64(OFF_PRODUCER_LOCK, forged)
        av.store64(OFF_CONSUMER_LOCK, forged)
        t0 = time.monotonic()
        ring.put(b"z", timeout=1)
        assert ring.get(timeout=1) == b"z"
        assert time.monotonic() - t0 < 0.5, (hex(forged), time.monotonic() - t0)
    av.close()


# ---- 6b. signal-handler exceptions inside create/remove loops ----------------------------------


class _CreateAlarm(Exception):
    pass


_armed = [False]


def _raise_create_alarm(signum, frame):
    if _armed[0] and in_library(frame):  # only inside the calls under test
        raise _CreateAlarm()


def _create_remove_storm(keys, wfd: int) -> int:
    """Create/remove rings under a 200 µs itimer whose handler raises; report
    every exception that came out of the calls that was not the alarm."""
    foreign = []
    signal.signal(signal.SIGALRM, _raise_create_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    for _ in range(3):
        for key in keys:
            try:
                _armed[0] = True
                try:
                    ring = Ring.create(256 * 1024, key=key)
                    ring.remove()
                    ring.detach()
                finally:
                    _armed[0] = False
            except (_CreateAlarm, FileExistsError):
                pass  # FileExistsError: left by an interrupted round
            except BaseException as e:  # noqa: BLE001 - what the test counts
                foreign.append("".join(traceback.format_exception(type(e), e, e.__traceback__)))
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    os.write(wfd, repr(foreign).encode()[:8000])
    return 0


def test_signal_exceptions_in_create_leave_only_what_cleanup_removes(shm):
    keys = [shm.key() for _ in range(40)]
    rfd, wfd = os.pipe()
    pid = fork_child(_create_remove_storm, keys, wfd)
    assert_clean_exit(join(pid, 60), "create/remove storm")
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        foreign = f.read().decode()
    assert foreign == "[]", f"create() raised something other than the interrupting exception: {foreign}"
    left = []
    for key in keys:
        try:
            shmid = _core.shmget(key, 0, 0)
        except FileNotFoundError:
            continue
        shm.add(shmid)
        left.append(shmid)
    # The creator is gone: cleanup must recognise and remove every leftover.
    found = shmipc.cleanup(select=lambda o: o.ident in left)
    assert sorted(o.ident for o in found if o.removed) == sorted(left)
    for key in keys:
        with pytest.raises(FileNotFoundError):
            _core.shmget(key, 0, 0)
    print(f"{len(left)} segment(s) left by interrupted create/remove, all removed by cleanup")


# ---- 10b. fork while other threads are inside blocks -----------------------------------------


def _detach_in_forked_child(ring: Ring, view_holder: list, keep_own_array: bool) -> int:
    shmid = ring.shmid
    ring.put(b"child", timeout=5)  # usable (the consumer side is the parent thread's)
    own = memoryview(ring.segment) if keep_own_array else None
    try:
        ring.detach()
    except BufferError:
        return 3 if own is not None else 1  # refused: the child's own view is alive
    if keep_own_array:
        return 2  # must have been refused
    assert ring.detached
    # The parent's threads' views are private zero pages here: readable, no fault.
    assert bytes(view_holder[0]) == bytes(len(view_holder[0]))
    assert _core.shm_stat(shmid)[8] >= 1  # nattch: the parent (and its thread) only
    return 0


@pytest.mark.parametrize("keep_own_array", [False, True])
def test_fork_while_other_threads_hold_block_views(rings, keep_own_array):
    ring = rings(4096)
    ring.put(b"queued")
    entered = threading.Event()
    leave = threading.Event()
    views: list = []

    def reader():
        with ring.get_view(timeout=5) as v:
            views.append(v)
            entered.set()
            leave.wait(5)
        views.clear()

    t = threading.Thread(target=reader)
    t.start()
    assert entered.wait(5)
    try:
        status = join(fork_child(_detach_in_forked_child, ring, views, keep_own_array), 30)
    finally:
        leave.set()
        t.join(5)
    assert not os.WIFSIGNALED(status), f"child died of signal {os.WTERMSIG(status)}"
    assert os.WEXITSTATUS(status) == (3 if keep_own_array else 0)


# ---- found in review --------------------------------------------------------------------------


def test_reentering_the_same_block_keeps_the_outer_hold(rings):
    ring = rings(4096)
    block = ring.reserve(8)
    with block as buf:
        with pytest.raises(RuntimeError, match="entered once"):
            with block:
                pass
        assert ring._plock.held  # the outer use still holds the producer side
        buf[:] = b"12345678"
    assert ring.get(timeout=1) == b"12345678"
    assert not ring._plock.held


class _NoFloat(int):
    def __float__(self):  # pragma: no cover - must not be called
        raise AssertionError("the timeout converter ran Python code")

    def __lt__(self, other):  # pragma: no cover - must not be called
        raise AssertionError("the timeout converter ran Python code")


def test_timeouts_are_read_without_running_python_code(rings):
    ring = rings(4096)
    av = AtomicView(ring.segment)
    try:
        assert av.wait32(OFF_PRODUCER_LOCK + 4, 1, _NoFloat(5)) is True  # the word is 0, not 1
        assert av.wait_change64(320, 192, 448, 1, _NoFloat(5)) == 0  # tail 0 is not 1
        assert av.wait32(OFF_PRODUCER_LOCK + 4, 0, _NoFloat(0)) is False  # 0: never waits
    finally:
        av.close()
    lock = _core.FutexLock(ring.segment, 1024)
    try:
        assert lock.acquire(_NoFloat(10**400)) == 1
        lock.release()
        with pytest.raises(ValueError):
            lock.acquire(_NoFloat(-(10**400)))
    finally:
        lock.close()


def test_the_initialising_mode_is_reserved(shm):
    for call in (lambda: shmipc.Segment.create(4096, mode=0o611),
                 lambda: shmipc.Segment.open(shm.key(), 4096, mode=0o611),
                 lambda: shm.segment(4096).chmod(0o611),
                 lambda: Ring.create(4096, mode=0o611)):
        with pytest.raises(ValueError, match="reserved"):
            call()
