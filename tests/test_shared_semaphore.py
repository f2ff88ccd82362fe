"""shmipc.SharedSemaphore: a process-shared sem_t inside a segment."""
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
from shmipc import Segment, SharedSemaphore
from shmipc.named_semaphore import SEM_VALUE_MAX

CONTEXTS = ["fork", "spawn"]
SLACK = 0.05
SIZE = SharedSemaphore.SIZE
ALIGN = SharedSemaphore.ALIGN


# ---- helpers and fixtures ------------------------------------------------

@pytest.fixture
def seg():
    s = Segment.create(4096)
    try:
        yield s
    finally:
        s.remove()
        s.detach()  # BufferError here means a test leaked an export


@pytest.fixture
def sem(seg):
    s = SharedSemaphore.create(seg, 64)
    yield s
    s.close()


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


# ---- children ----------------------------------------------------------------

def child_pingpong(ping, pong, rounds):
    # The parent writes the round number at offset 0 before posting `ping`;
    # we check it and answer with it at offset 8: the semaphore must order
    # the plain memory accesses around it.
    data = memoryview(ping.obj).cast("Q")
    try:
        for i in range(rounds):
            if not ping.acquire(timeout=10):
                sys.exit(2)
            if data[0] != i:
                sys.exit(3)
            data[1] = i
            pong.release()
    finally:
        data.release()


def child_take_and_hang(sem, ready):
    if not sem.acquire(timeout=10):
        sys.exit(2)
    ready.set()
    time.sleep(60)
    sys.exit(3)


def child_block_until_interrupted(sem, ready):
    ready.set()
    try:
        sem.acquire()
    except KeyboardInterrupt:
        sys.exit(0)
    sys.exit(3)


# ---- basics --------------------------------------------------------------------

def test_size_and_alignment():
    assert SIZE >= 16 and ALIGN in (4, 8, 16)
    if sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64"):
        assert (SIZE, ALIGN) == (32, 8)  # glibc's sem_t on 64-bit


def test_create_and_attach_share_the_semaphore(seg):
    a = SharedSemaphore.create(seg, 0, 2)
    b = SharedSemaphore.attach(seg, 0)
    try:
        assert b.value == 2
        assert b.acquire(timeout=0) is True
        assert b.acquire(timeout=0) is True
        assert b.acquire(timeout=0) is False
        a.release(3)
        assert b.value == 3
        b.release(n=2)
        assert a.value == 5
        assert a.obj is seg and a.offset == 0
    finally:
        a.close()
        b.close()


def test_semaphores_at_different_offsets_are_independent(seg):
    a = SharedSemaphore.create(seg, 0, 1)
    b = SharedSemaphore.create(seg, SIZE, 5)
    try:
        assert (a.value, b.value) == (1, 5)
        assert a.acquire(0) and not a.acquire(0)
        assert b.value == 5
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("n", [0, -1, SEM_VALUE_MAX + 1, 2**70])
def test_release_n_range(sem, n):
    with pytest.raises(ValueError):
        sem.release(n)
    assert sem.value == 0


def test_release_argument_errors(sem):
    with pytest.raises(TypeError):
        sem.release("2")
    with pytest.raises(TypeError):
        sem.release(True)
    with pytest.raises(TypeError):
        sem.release(1, 2)
    with pytest.raises(TypeError):
        sem.release(count=1)


@pytest.mark.parametrize("value", [-1, SEM_VALUE_MAX + 1])
def test_initial_value_range(seg, value):
    with pytest.raises(ValueError):
        SharedSemaphore.create(seg, 0, value)
    assert seg.exports == 0


def test_release_past_max_raises_eoverflow(seg):
    s = SharedSemaphore.create(seg, 0, SEM_VALUE_MAX - 1)
    try:
        with pytest.raises(OSError) as info:
            s.release(2)
        assert info.value.errno == errno.EOVERFLOW
        assert "1 of 2" in str(info.value)
        assert s.value == SEM_VALUE_MAX
        with pytest.raises(OSError) as info:
            s.release()
        assert info.value.errno == errno.EOVERFLOW
    finally:
        s.close()


def test_context_manager(sem):
    sem.release()
    with sem as s:
        assert s is sem
        assert sem.value == 0
    assert sem.value == 1


# ---- placement checks --------------------------------------------------------------

@pytest.mark.parametrize("offset", [-ALIGN, 4096 - SIZE + ALIGN, 4096, 2**62])
def test_offset_out_of_range(seg, offset):
    with pytest.raises(ValueError, match="out of range"):
        SharedSemaphore.create(seg, offset)
    with pytest.raises(ValueError, match="out of range"):
        SharedSemaphore.attach(seg, offset)
    assert seg.exports == 0


def test_last_slot_fits(seg):
    s = SharedSemaphore.create(seg, 4096 - SIZE, 1)
    assert s.acquire(0)
    s.close()


@pytest.mark.parametrize("offset", [1, ALIGN // 2, ALIGN + 4])
def test_offset_misaligned(seg, offset):
    with pytest.raises(ValueError, match="aligned"):
        SharedSemaphore.create(seg, offset)
    assert seg.exports == 0


def test_offset_type(seg):
    with pytest.raises(TypeError):
        SharedSemaphore.create(seg, 8.0)
    with pytest.raises(TypeError):
        SharedSemaphore.create(seg, 0, 1.0)


def test_read_only_buffers_refused(seg):
    with pytest.raises((BufferError, TypeError)):
        SharedSemaphore.create(bytes(64), 0)
    ro = Segment.attach(shmid=seg.shmid, readonly=True)
    try:
        with pytest.raises(BufferError):
            SharedSemaphore.create(ro, 0)
    finally:
        ro.detach()


def test_any_writable_buffer_works():
    m = mmap.mmap(-1, 4096)
    s = SharedSemaphore.create(m, 0, 1)
    try:
        assert s.acquire(0) is True
        assert s.acquire(0) is False
        with pytest.raises(BufferError):
            m.close()  # our export keeps it mapped
    finally:
        s.close()
        m.close()


def test_attach_to_uninitialised_memory_refused(seg):
    # Zeroed memory looks like a *process-private* glibc semaphore, whose
    # wake-ups never cross processes: attach must not accept it.
    with pytest.raises(ValueError, match="no initialised"):
        SharedSemaphore.attach(seg, 0)
    seg.write(b"\xff" * SIZE, 0)
    with pytest.raises(ValueError, match="no initialised"):
        SharedSemaphore.attach(seg, 0)
    assert seg.exports == 0


def test_overwritten_semaphore_raises_not_crashes(seg):
    s = SharedSemaphore.create(seg, 0, 0)
    try:
        seg.write(b"\xff" * SIZE, 0)
        with pytest.raises(ValueError):
            s.acquire(timeout=0.05)
        with pytest.raises(ValueError):
            s.release()
        with pytest.raises(ValueError):
            s.value
    finally:
        s.close()


# ---- lifetime --------------------------------------------------------------------

def test_segment_cannot_detach_while_open(seg):
    s = SharedSemaphore.create(seg, 0)
    assert seg.exports == 1
    with pytest.raises(BufferError):
        seg.detach()
    s.close()
    assert seg.exports == 0
    seg.detach()
    assert seg.closed


def test_dealloc_drops_the_export(seg):
    s = SharedSemaphore.create(seg, 0)
    assert seg.exports == 1
    del s
    assert seg.exports == 0


def test_use_after_close_raises_value_error(sem):
    sem.close()
    sem.close()
    assert sem.closed and sem.obj is None
    for call in (sem.acquire, lambda: sem.acquire(timeout=0), sem.release,
                 lambda: sem.release(2), lambda: sem.value, sem.__enter__,
                 lambda: sem.__exit__(None, None, None)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        pickle.dumps(sem)


def test_pickle_needs_a_segment():
    m = mmap.mmap(-1, 4096)
    s = SharedSemaphore.create(m, 0)
    try:
        with pytest.raises(TypeError):
            pickle.dumps(s)
    finally:
        s.close()
        m.close()


def test_close_refuses_while_a_thread_waits(sem):
    results = []
    t = threading.Thread(target=lambda: results.append(sem.acquire(timeout=10)))
    t.start()
    try:
        deadline = time.monotonic() + 5
        while sem._inflight == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert sem._inflight == 1
        with pytest.raises(RuntimeError, match="blocked in acquire"):
            sem.close()
    finally:
        sem.release()
        t.join(10)
    assert results == [True]
    sem.close()


# ---- waiting ------------------------------------------------------------------

def test_timeout_zero_never_blocks(sem):
    result, elapsed = timed(sem.acquire, 0)
    assert result is False
    assert elapsed < 0.01


@pytest.mark.parametrize("timeout", [0.05, 0.2])
def test_timeout_accuracy(sem, timeout):
    result, elapsed = timed(sem.acquire, timeout=timeout)
    assert result is False
    assert timeout <= elapsed < timeout + SLACK


def test_bad_timeouts(sem):
    with pytest.raises(ValueError):
        sem.acquire(-0.5)
    with pytest.raises(TypeError):
        sem.acquire("x")
    with pytest.raises(TypeError):
        sem.acquire(tmo=1)


def test_release_wakes_a_blocked_thread(sem):
    timer = threading.Timer(0.1, sem.release)
    timer.start()
    try:
        result, elapsed = timed(sem.acquire, timeout=5)
    finally:
        timer.join()
    assert result is True and elapsed < 1.0


def test_signal_storm_causes_no_spurious_errors(sem):
    hits = []
    old = signal.signal(signal.SIGALRM, lambda signum, frame: hits.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)
    try:
        for _ in range(3):
            result, elapsed = timed(sem.acquire, timeout=0.25)
            assert result is False
            assert 0.25 <= elapsed < 0.25 + SLACK
        timer = threading.Timer(0.25, sem.release)
        timer.start()
        try:
            assert sem.acquire(timeout=5) is True
        finally:
            timer.join()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(hits) >= 8


# ---- across processes -----------------------------------------------------------

@pytest.mark.parametrize("ctx", CONTEXTS)
def test_cross_process_handoff(seg, ctx):
    ping = SharedSemaphore.create(seg, 64)
    pong = SharedSemaphore.create(seg, 128)
    data = memoryview(seg).cast("Q")
    rounds = 500
    try:
        p = start(ctx, child_pingpong, ping, pong, rounds)
        for i in range(rounds):
            data[0] = i
            ping.release()
            assert pong.acquire(timeout=10)
            assert data[1] == i
        assert finish(p) == 0
    finally:
        data.release()
        ping.close()
        pong.close()


@pytest.mark.parametrize("ctx", CONTEXTS)
def test_killed_holder_is_not_given_back(seg, ctx):
    s = SharedSemaphore.create(seg, 0, 1)
    try:
        ready = multiprocessing.get_context(ctx).Event()
        p = start(ctx, child_take_and_hang, s, ready)
        assert ready.wait(20)
        os.kill(p.pid, signal.SIGKILL)
        assert finish(p) == -signal.SIGKILL
        assert s.acquire(timeout=0.2) is False
        assert s.value == 0
    finally:
        s.close()


@pytest.mark.parametrize("ctx", CONTEXTS)
def test_sigint_interrupts_a_blocked_acquire(sem, ctx):
    ready = multiprocessing.get_context(ctx).Event()
    p = start(ctx, child_block_until_interrupted, sem, ready)
    try:
        assert ready.wait(20)
        time.sleep(0.1)
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGINT)
        p.join(2)
        elapsed = time.monotonic() - t0
    finally:
        if p.is_alive():
            sem.release()
    assert finish(p) == 0
    assert elapsed < 1.0


def test_reexported_from_package():
    assert shmipc.SharedSemaphore is SharedSemaphore


def _vectorcall_with_empty_kwnames(method):
    """method() through PyObject_Vectorcall with kwnames=() instead of NULL,
    which PEP 590 allows a C caller to pass for "no keyword arguments"."""
    import ctypes

    call = getattr(ctypes.pythonapi, "PyObject_Vectorcall", None)
    if call is None:  # an inline function before 3.10, not an exported symbol
        pytest.skip("PyObject_Vectorcall is not exported by this Python")
    call.argtypes = [ctypes.py_object, ctypes.c_void_p, ctypes.c_size_t, ctypes.py_object]
    call.restype = ctypes.py_object
    return call(method, None, 0, ())


def test_release_with_empty_kwnames_tuple_is_release_one(sem):
    assert _vectorcall_with_empty_kwnames(sem.release) is None
    assert sem.value == 1
    assert _vectorcall_with_empty_kwnames(sem.acquire) is True
    assert sem.value == 0
