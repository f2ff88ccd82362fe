"""shmipc.NamedSemaphore: sem_open semaphores, across threads and processes."""
import errno
import multiprocessing
import os
import pickle
import signal
import stat
import sys
import threading
import time

import pytest

import _leaks

import shmipc
from shmipc import NamedSemaphore, _core, unlink_semaphore
from shmipc.named_semaphore import SEM_VALUE_MAX

CONTEXTS = ["fork", "spawn"]
SLACK = 0.05  # a wait of t must return within t + SLACK


# ---- helpers and fixtures ------------------------------------------------

@pytest.fixture
def new_name():
    """Factory of unique "/shmipc-test-..." names, all unlinked afterwards."""
    made = []

    def make():
        name = _leaks.posix_name("ns")
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            unlink_semaphore(name)
        except FileNotFoundError:
            pass


@pytest.fixture
def sem(new_name):
    s = NamedSemaphore.create(new_name())
    yield s
    s.close()


def start(ctx_name, target, *args):
    p = multiprocessing.get_context(ctx_name).Process(target=target, args=args)
    p.start()
    return p


def finish(p, timeout=20.0):
    """Join *p*; a child that hangs fails the test instead of hanging it."""
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


# ---- children (module level, so spawn can import them) ----------------------

def child_pingpong(ping, pong, rounds):
    for _ in range(rounds):
        if not ping.acquire(timeout=10):
            sys.exit(2)
        pong.release()
    ping.close()
    pong.close()


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
    sys.exit(3)  # acquired: nobody released it


def child_open_unprivileged(name):
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    try:
        # Root's semaphore, trusted: what is probed is the file's mode.
        NamedSemaphore.open(name, trusted_uids={0})
    except PermissionError:
        sys.exit(0)
    sys.exit(1)


# ---- creation, names, modes --------------------------------------------------

def test_create_open_share_the_semaphore(new_name):
    name = new_name()
    a = NamedSemaphore.create(name, 2)
    b = NamedSemaphore.open(name)
    try:
        assert a.name == b.name == name
        assert b.value == 2
        assert b.acquire(timeout=0) is True
        assert a.value == 1
        a.release()
        a.release()
        assert b.value == 3
    finally:
        a.close()
        b.close()


def test_create_existing_raises_file_exists(sem):
    with pytest.raises(FileExistsError):
        NamedSemaphore.create(sem.name)


def test_open_missing_raises_file_not_found(new_name):
    with pytest.raises(FileNotFoundError):
        NamedSemaphore.open(new_name())


def test_leading_slash_is_added(new_name):
    name = new_name()
    s = NamedSemaphore.create(name[1:], 1)
    try:
        assert s.name == name
        t = NamedSemaphore.open(name[1:])
        assert t.value == 1
        t.close()
    finally:
        s.close()
    unlink_semaphore(name[1:])
    with pytest.raises(FileNotFoundError):
        NamedSemaphore.open(name)


@pytest.mark.parametrize(
    "name",
    ["", "/", "a/b", "//a", "/a/", "a\0b", "x" * (_core.SEM_NAME_MAX + 1)],
)
def test_invalid_names_raise_value_error(name):
    with pytest.raises(ValueError):
        NamedSemaphore.create(name)
    with pytest.raises(ValueError):
        NamedSemaphore.open(name)
    with pytest.raises(ValueError):
        unlink_semaphore(name)


@pytest.mark.parametrize("name", [b"/x", 5, None])
def test_non_str_names_raise_type_error(name):
    with pytest.raises(TypeError):
        NamedSemaphore.open(name)


def test_core_checks_names_too():
    # The facade normalises; the C layer must still refuse bad names.
    for bad in ["noslash", "/a/b", "/", "/a\0b"]:
        with pytest.raises(ValueError):
            _core.NamedSemaphore(bad)
        with pytest.raises(ValueError):
            _core.sem_unlink(bad)
    with pytest.raises(ValueError):
        _core.NamedSemaphore("/x", 0o4000)  # a flag other than O_CREAT/O_EXCL


def test_longest_name_works(new_name):
    name = new_name()
    name = name + "x" * (_core.SEM_NAME_MAX - len(name) + 1)
    assert len(name) == _core.SEM_NAME_MAX + 1  # with the slash
    s = NamedSemaphore.create(name)
    try:
        assert s.name == name
    finally:
        s.close()
        unlink_semaphore(name)


def test_default_mode_is_0600(sem):
    st = os.stat("/dev/shm/sem." + sem.name[1:])
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_explicit_mode(new_name):
    old = os.umask(0o022)
    try:
        s = NamedSemaphore.create(new_name(), mode=0o640)
    finally:
        os.umask(old)
    try:
        st = os.stat("/dev/shm/sem." + s.name[1:])
        assert stat.S_IMODE(st.st_mode) == 0o640
    finally:
        s.close()


@pytest.mark.parametrize("mode", [-1, 0o1000])
def test_bad_mode(new_name, mode):
    with pytest.raises(ValueError):
        NamedSemaphore.create(new_name(), mode=mode)


def test_unprivileged_uid_cannot_open(sem):
    p = start("fork", child_open_unprivileged, sem.name)
    assert finish(p) == 0


@pytest.mark.parametrize("value", [-1, SEM_VALUE_MAX + 1])
def test_initial_value_range(new_name, value):
    with pytest.raises(ValueError):
        NamedSemaphore.create(new_name(), value)


def test_initial_value_type(new_name):
    with pytest.raises(TypeError):
        NamedSemaphore.create(new_name(), 1.5)


def test_release_past_max_raises_eoverflow(new_name):
    s = NamedSemaphore.create(new_name(), SEM_VALUE_MAX)
    try:
        with pytest.raises(OSError) as info:
            s.release()
        assert info.value.errno == errno.EOVERFLOW
        assert "maximum" in str(info.value)
        assert s.value == SEM_VALUE_MAX
    finally:
        s.close()


# ---- acquire and timeouts ------------------------------------------------------

def test_timeout_zero_never_blocks(sem):
    result, elapsed = timed(sem.acquire, timeout=0)
    assert result is False
    assert elapsed < 0.01
    sem.release()
    assert sem.acquire(0) is True


@pytest.mark.parametrize("timeout", [0.05, 0.2])
def test_timeout_accuracy(sem, timeout):
    result, elapsed = timed(sem.acquire, timeout=timeout)
    assert result is False
    assert timeout <= elapsed < timeout + SLACK


def test_bad_timeouts(sem):
    with pytest.raises(ValueError):
        sem.acquire(-1)
    with pytest.raises(ValueError):
        sem.acquire(float("nan"))
    with pytest.raises(TypeError):
        sem.acquire("1")
    with pytest.raises(TypeError):
        sem.acquire(1, 2)
    with pytest.raises(TypeError):
        sem.acquire(time=1)
    sem.release()
    assert sem.acquire(timeout=None) is True


def test_release_wakes_a_blocked_thread(sem):
    timer = threading.Timer(0.1, sem.release)
    timer.start()
    try:
        result, elapsed = timed(sem.acquire, timeout=5)
    finally:
        timer.join()
    assert result is True
    assert elapsed < 1.0


def test_context_manager_acquires_and_releases(sem):
    sem.release()
    with sem as s:
        assert s is sem
        assert sem.value == 0
    assert sem.value == 1


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
        assert not sem.closed
    finally:
        sem.release()
        t.join(10)
    assert results == [True]
    assert sem._inflight == 0
    sem.close()
    assert sem.closed


# ---- lifetime ---------------------------------------------------------------

def test_use_after_close_raises_value_error(sem):
    sem.close()
    sem.close()  # idempotent
    assert sem.closed
    with pytest.raises(ValueError):
        sem.acquire()
    with pytest.raises(ValueError):
        sem.acquire(timeout=0)
    with pytest.raises(ValueError):
        sem.release()
    with pytest.raises(ValueError):
        sem.value
    with pytest.raises(ValueError):
        with sem:
            pass
    with pytest.raises(ValueError):
        pickle.dumps(sem)
    assert "closed" in repr(sem)
    sem.unlink()  # still works: it needs only the name
    with pytest.raises(FileNotFoundError):
        sem.unlink()


def test_unlink_keeps_open_handles_working(sem):
    sem.unlink()
    with pytest.raises(FileNotFoundError):
        NamedSemaphore.open(sem.name)
    sem.release()
    assert sem.acquire(timeout=0) is True


def test_pickle_reopens_by_name(sem):
    other = pickle.loads(pickle.dumps(sem))
    try:
        assert isinstance(other, NamedSemaphore)
        assert other.name == sem.name
        other.release()
        assert sem.value == 1
    finally:
        other.close()


def test_reexported_from_package():
    assert shmipc.NamedSemaphore is NamedSemaphore
    assert shmipc.unlink_semaphore is unlink_semaphore


# ---- across processes ----------------------------------------------------------

@pytest.mark.parametrize("ctx", CONTEXTS)
def test_cross_process_handoff(new_name, ctx):
    ping = NamedSemaphore.create(new_name())
    pong = NamedSemaphore.create(new_name())
    rounds = 200
    try:
        p = start(ctx, child_pingpong, ping, pong, rounds)
        for _ in range(rounds):
            ping.release()
            assert pong.acquire(timeout=10)
        assert finish(p) == 0
        assert ping.value == pong.value == 0
    finally:
        ping.close()
        pong.close()


@pytest.mark.parametrize("ctx", CONTEXTS)
def test_killed_holder_is_not_given_back(new_name, ctx):
    """A POSIX semaphore taken by a process that is then SIGKILLed stays taken."""
    s = NamedSemaphore.create(new_name(), 1)
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
        time.sleep(0.1)  # let it block in sem_wait
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGINT)
        p.join(2)
        elapsed = time.monotonic() - t0
    finally:
        if p.is_alive():
            sem.release()  # let it go rather than leave it blocked
    assert finish(p) == 0
    assert elapsed < 1.0


def test_open_refuses_a_squatted_empty_file():
    # glibc would map the empty file and die of SIGBUS at the first touch.
    name = _leaks.posix_name("squat")
    path = "/dev/shm/sem." + name[1:]
    open(path, "w").close()
    try:
        with pytest.raises(OSError, match="not a POSIX semaphore"):
            NamedSemaphore.open(name)
    finally:
        os.unlink(path)
