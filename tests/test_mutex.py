"""shmipc.RobustMutex: a robust process-shared pthread mutex in a segment."""
import errno
import mmap
import multiprocessing
import os
import pickle
import platform
import signal
import sys
import threading
import time

import pytest

import shmipc
from shmipc import OwnerDiedError, RobustMutex, Segment

CONTEXTS = ["fork", "spawn"]
SLACK = 0.05
SIZE = RobustMutex.SIZE
ALIGN = RobustMutex.ALIGN
COUNTER = 512  # offset of a plain (non-atomic) counter the tests protect


# ---- helpers and fixtures ------------------------------------------------

@pytest.fixture
def seg():
    s = Segment.create(4096)
    try:
        yield s
    finally:
        s.remove()
        s.detach()


@pytest.fixture
def mutex(seg):
    m = RobustMutex.create(seg, 0)
    yield m
    m.close()


def start(ctx_name, target, *args):
    p = multiprocessing.get_context(ctx_name).Process(target=target, args=args)
    p.start()
    return p


def finish(p, timeout=20.0):
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        pytest.fail(f"child process {p.pid} did not finish in {timeout} s")
    return p.exitcode


def timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - t0


def in_thread(fn, *args):
    """Run fn(*args) in a fresh thread; return its result or raise its error."""
    out = {}

    def run():
        try:
            out["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    assert not t.is_alive()
    if "error" in out:
        raise out["error"]
    return out["result"]


class Holder:
    """A thread that takes the mutex and keeps it until told to let go."""

    def __init__(self, mutex):
        self.mutex = mutex
        self.taken = threading.Event()
        self.let_go = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        assert self.mutex.acquire(timeout=10)
        self.taken.set()
        self.let_go.wait(20)
        self.mutex.release()

    def __enter__(self):
        self.thread.start()
        assert self.taken.wait(10)
        return self

    def __exit__(self, *exc):
        self.let_go.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def acquire_and_release(mutex):
    if not mutex.acquire(0):
        return False
    mutex.release()
    return True


def die_holding(mutex):
    """A thread that acquires and exits without releasing."""
    in_thread(mutex.acquire, 5)


# ---- children ----------------------------------------------------------------

def child_increment(mutex, rounds):
    counter = memoryview(mutex.obj).cast("Q")
    try:
        for _ in range(rounds):
            if not mutex.acquire(timeout=10):
                sys.exit(2)
            counter[COUNTER // 8] = counter[COUNTER // 8] + 1  # not atomic
            mutex.release()
    finally:
        counter.release()


def child_take_and_hang(mutex, ready):
    if not mutex.acquire(timeout=10):
        sys.exit(2)
    ready.set()
    time.sleep(60)
    sys.exit(3)


def child_block_until_interrupted(mutex, ready):
    ready.set()
    try:
        mutex.acquire()
    except KeyboardInterrupt:
        sys.exit(0)
    sys.exit(3)


# ---- basics --------------------------------------------------------------------

def test_size_and_alignment():
    assert SIZE >= 24 and ALIGN in (4, 8, 16)
    if sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64"):
        assert ALIGN == 8 and SIZE in (40, 48)


def test_acquire_release(mutex):
    assert mutex.acquire() is True
    assert mutex._held
    assert in_thread(mutex.acquire, 0) is False  # another thread: busy
    mutex.release()
    assert not mutex._held
    assert mutex.acquire(timeout=0) is True
    mutex.release()


def test_attach_shares_the_lock(seg, mutex):
    other = RobustMutex.attach(seg, 0)
    try:
        assert mutex.acquire(0)
        assert in_thread(other.acquire, 0) is False
        mutex.release()
        assert other.acquire(0)
        other.release()
    finally:
        other.close()


def test_not_recursive(mutex):
    mutex.acquire()
    try:
        with pytest.raises(RuntimeError, match="already held"):
            mutex.acquire()
        with pytest.raises(RuntimeError, match="already held"):
            mutex.acquire(timeout=0)
    finally:
        mutex.release()


def test_release_when_not_held(mutex):
    with pytest.raises(RuntimeError, match="does not hold"):
        mutex.release()
    mutex.acquire()
    try:
        with pytest.raises(RuntimeError, match="does not hold"):
            in_thread(mutex.release)
    finally:
        mutex.release()


def test_context_manager(mutex):
    with mutex as m:
        assert m is mutex
        assert in_thread(mutex.acquire, 0) is False
    assert in_thread(acquire_and_release, mutex) is True


def test_dealloc_releases_a_held_lock(seg, mutex):
    other = RobustMutex.attach(seg, 0)
    assert other.acquire(0)
    assert in_thread(mutex.acquire, 0) is False
    del other
    assert seg.exports == 1  # only `mutex` now
    assert mutex.acquire(0) is True
    mutex.release()


# ---- timeouts and signals ----------------------------------------------------------

def test_timeout_zero_never_blocks(mutex):
    with Holder(mutex):
        result, elapsed = timed(mutex.acquire, 0)
    assert result is False
    assert elapsed < 0.01


@pytest.mark.parametrize("timeout", [0.05, 0.2])
def test_timeout_accuracy(mutex, timeout):
    with Holder(mutex):
        result, elapsed = timed(mutex.acquire, timeout=timeout)
    assert result is False
    assert timeout <= elapsed < timeout + SLACK


def test_bad_timeouts(mutex):
    with pytest.raises(ValueError):
        mutex.acquire(-1)
    with pytest.raises(TypeError):
        mutex.acquire("1")
    with pytest.raises(TypeError):
        mutex.acquire(1, 2)
    with pytest.raises(TypeError):
        mutex.acquire(blocking=True)


def test_release_wakes_a_waiter(mutex):
    h = Holder(mutex)
    with h:
        threading.Timer(0.1, h.let_go.set).start()
        result, elapsed = timed(mutex.acquire, timeout=5)
    assert result is True and elapsed < 1.0
    mutex.release()


def test_signal_storm_causes_no_spurious_errors(mutex):
    hits = []
    old = signal.signal(signal.SIGALRM, lambda signum, frame: hits.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)
    try:
        h = Holder(mutex)
        with h:
            for _ in range(3):
                result, elapsed = timed(mutex.acquire, timeout=0.25)
                assert result is False
                assert 0.25 <= elapsed < 0.25 + SLACK
            threading.Timer(0.25, h.let_go.set).start()
            assert mutex.acquire(timeout=5) is True
        mutex.release()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(hits) >= 8


def test_close_refuses_while_a_thread_waits(seg, mutex):
    waiter = RobustMutex.attach(seg, 0)
    results = []

    def wait():
        results.append(waiter.acquire(timeout=10))
        waiter.release()

    mutex.acquire()
    t = threading.Thread(target=wait)
    t.start()
    try:
        deadline = time.monotonic() + 5
        while waiter._inflight == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert waiter._inflight == 1
        with pytest.raises(RuntimeError, match="blocked in acquire"):
            waiter.close()
    finally:
        mutex.release()
        t.join(10)
    assert results == [True]
    waiter.close()


def test_close_refuses_while_held(mutex):
    mutex.acquire()
    with pytest.raises(RuntimeError, match="release"):
        mutex.close()
    assert not mutex.closed
    mutex.release()
    mutex.close()
    assert mutex.closed


# ---- owner died ------------------------------------------------------------------

def test_owner_died_error_type():
    assert issubclass(OwnerDiedError, RuntimeError)
    assert shmipc.OwnerDiedError is shmipc._core.OwnerDiedError is OwnerDiedError


def test_thread_exit_while_holding_reports_owner_died(mutex):
    die_holding(mutex)
    with pytest.raises(OwnerDiedError):
        mutex.acquire(timeout=5)
    # The lock is held now, by us.
    assert mutex._held
    assert in_thread(mutex.acquire, 0) is False
    mutex.mark_consistent()
    mutex.release()
    assert mutex.acquire(0) is True
    mutex.release()


def test_release_without_mark_consistent_makes_it_unrecoverable(mutex):
    die_holding(mutex)
    with pytest.raises(OwnerDiedError):
        mutex.acquire()
    mutex.release()
    for _ in range(2):
        with pytest.raises(OSError, match="unrecoverable") as info:
            mutex.acquire(timeout=0)
        assert info.value.errno == errno.ENOTRECOVERABLE
    assert not mutex._held
    # Other threads are told too, and are not left waiting (glibc's trylock
    # would leave the mutex locked by the first thread it refused).
    with pytest.raises(OSError, match="unrecoverable"):
        in_thread(mutex.acquire, 0)
    with pytest.raises(OSError, match="unrecoverable"):
        in_thread(mutex.acquire, 1)


def test_mark_consistent_misuse(mutex):
    with pytest.raises(RuntimeError, match="held"):
        mutex.mark_consistent()  # not held
    mutex.acquire()
    try:
        with pytest.raises(RuntimeError, match="owner-died"):
            mutex.mark_consistent()  # nothing to repair
    finally:
        mutex.release()


# ---- placement and lifetime ----------------------------------------------------------

@pytest.mark.parametrize("offset", [-ALIGN, 4096 - SIZE + ALIGN, 4096, 2**62])
def test_offset_out_of_range(seg, offset):
    with pytest.raises(ValueError, match="out of range"):
        RobustMutex.create(seg, offset)
    with pytest.raises(ValueError, match="out of range"):
        RobustMutex.attach(seg, offset)
    assert seg.exports == 0


@pytest.mark.parametrize("offset", [1, 4, ALIGN + 2])
def test_offset_misaligned(seg, offset):
    with pytest.raises(ValueError, match="aligned"):
        RobustMutex.create(seg, offset)
    assert seg.exports == 0


def test_last_slot_fits(seg):
    m = RobustMutex.create(seg, 4096 - SIZE)
    assert m.acquire(0)
    m.release()
    m.close()


def test_read_only_buffers_refused(seg):
    with pytest.raises((BufferError, TypeError)):
        RobustMutex.create(bytes(64), 0)
    ro = Segment.attach(shmid=seg.shmid, readonly=True)
    try:
        with pytest.raises(BufferError):
            RobustMutex.attach(ro, 0)
    finally:
        ro.detach()


def test_any_writable_buffer_works():
    m = mmap.mmap(-1, 4096)
    mx = RobustMutex.create(m, 0)
    try:
        assert mx.acquire(0)
        mx.release()
    finally:
        mx.close()
        m.close()


def test_attach_to_uninitialised_memory_refused(seg):
    with pytest.raises(ValueError, match="no initialised"):
        RobustMutex.attach(seg, 0)
    seg.write(b"\xff" * SIZE, 0)
    with pytest.raises(ValueError, match="no initialised"):
        RobustMutex.attach(seg, 0)
    assert seg.exports == 0


def test_overwritten_mutex_raises_not_crashes(seg, mutex):
    seg.write(b"\x5a" * SIZE, 0)
    for call in (mutex.acquire, lambda: mutex.acquire(0.05), mutex.release,
                 mutex.mark_consistent, mutex.__enter__):
        with pytest.raises(ValueError, match="no initialised"):
            call()


def test_segment_cannot_detach_while_open(seg):
    m = RobustMutex.create(seg, 0)
    with pytest.raises(BufferError):
        seg.detach()
    m.close()
    seg.detach()
    assert seg.closed


def test_use_after_close_raises_value_error(mutex):
    mutex.close()
    mutex.close()
    assert mutex.closed and mutex.obj is None
    for call in (mutex.acquire, lambda: mutex.acquire(0), mutex.release,
                 mutex.mark_consistent, mutex.__enter__,
                 lambda: mutex.__exit__(None, None, None)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        pickle.dumps(mutex)


# ---- across processes ----------------------------------------------------------

@pytest.mark.parametrize("ctx", CONTEXTS)
def test_cross_process_mutual_exclusion(seg, mutex, ctx):
    rounds = 3000
    procs = [start(ctx, child_increment, mutex, rounds) for _ in range(2)]
    for p in procs:
        assert finish(p) == 0
    counter = memoryview(seg).cast("Q")
    try:
        assert counter[COUNTER // 8] == 2 * rounds
    finally:
        counter.release()


@pytest.mark.parametrize("ctx", CONTEXTS)
def test_killed_owner_reports_owner_died(mutex, ctx):
    ready = multiprocessing.get_context(ctx).Event()
    p = start(ctx, child_take_and_hang, mutex, ready)
    assert ready.wait(20)
    assert mutex.acquire(timeout=0) is False
    os.kill(p.pid, signal.SIGKILL)
    assert finish(p) == -signal.SIGKILL
    with pytest.raises(OwnerDiedError):
        mutex.acquire(timeout=5)
    assert in_thread(mutex.acquire, 0) is False  # held by us
    mutex.mark_consistent()
    mutex.release()
    assert mutex.acquire(timeout=0) is True
    mutex.release()


def test_killed_owner_not_marked_consistent_is_unrecoverable(mutex):
    ready = multiprocessing.get_context("fork").Event()
    p = start("fork", child_take_and_hang, mutex, ready)
    assert ready.wait(20)
    os.kill(p.pid, signal.SIGKILL)
    assert finish(p) == -signal.SIGKILL
    with pytest.raises(OwnerDiedError):
        mutex.acquire(timeout=5)
    mutex.release()
    with pytest.raises(OSError, match="unrecoverable") as info:
        mutex.acquire(timeout=1)
    assert info.value.errno == errno.ENOTRECOVERABLE


@pytest.mark.parametrize("ctx", CONTEXTS)
def test_sigint_interrupts_a_blocked_acquire(mutex, ctx):
    ready = multiprocessing.get_context(ctx).Event()
    mutex.acquire()
    try:
        p = start(ctx, child_block_until_interrupted, mutex, ready)
        assert ready.wait(20)
        time.sleep(0.1)
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGINT)
        p.join(2)
        elapsed = time.monotonic() - t0
    finally:
        mutex.release()
    assert finish(p) == 0
    assert elapsed < 1.0


def test_reexported_from_package():
    assert shmipc.RobustMutex is RobustMutex


def test_acquire_with_empty_kwnames_tuple_waits_forever_form(mutex):
    # PEP 590 lets a C caller pass kwnames=() instead of NULL for "no
    # keyword arguments": that is acquire() with no timeout, not a read of
    # an argument that is not there.
    import ctypes

    call = getattr(ctypes.pythonapi, "PyObject_Vectorcall", None)
    if call is None:  # an inline function before 3.10, not an exported symbol
        pytest.skip("PyObject_Vectorcall is not exported by this Python")
    call.argtypes = [ctypes.py_object, ctypes.c_void_p, ctypes.c_size_t, ctypes.py_object]
    call.restype = ctypes.py_object
    assert call(mutex.acquire, None, 0, ()) is True
    assert mutex._held
    mutex.release()


def test_with_block_after_owner_death_leaves_the_mutex_free_and_consistent(mutex):
    # A with-block whose __enter__ raises never reaches __exit__: the lock
    # must not stay held (nor become unrecoverable by a later release).
    die_holding(mutex)
    with pytest.raises(OwnerDiedError, match="marked it consistent and released"):
        with mutex:
            pytest.fail("the block must not run after an owner death")
    assert not mutex._held
    assert in_thread(acquire_and_release, mutex)  # free for another thread
    with mutex:  # and consistent: no OwnerDiedError, no ENOTRECOVERABLE
        pass


def test_forked_child_can_close_while_parent_thread_waits(mutex):
    # A thread of the parent blocked in acquire() does not exist in a child:
    # the child's copy must not count it (it could never close otherwise).
    def take_and_give_back():
        if mutex.acquire(5):
            mutex.release()

    mutex.acquire()
    waiter = threading.Thread(target=take_and_give_back)
    waiter.start()
    deadline = time.monotonic() + 5
    while mutex._inflight == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert mutex._inflight == 1
    pid = os.fork()
    if pid == 0:
        try:
            mutex.close()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    mutex.release()
    waiter.join(5)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
