"""shmipc.Semaphore: System V semaphore sets, in one process and across real ones."""
import errno
import math
import multiprocessing
import os
import pickle
import random
import signal
import sys
import threading
import time

import pytest

import shmipc
from shmipc import _core
from shmipc.semaphore import _limits

SEMVMX = shmipc.SEMVMX
CONTEXTS = ["fork", "spawn"]


# ---- helpers and fixtures -----------------------------------------------------

def _unused_key():
    used = {info.key for info in shmipc.semaphores()}
    while True:
        key = 0x5E300000 | random.getrandbits(20)
        if key not in used:
            return key


def _remove_key(key):
    # By id, whoever owns the set now (a test may have given it away).
    try:
        shmipc.remove_semaphore(shmipc._core.semget(key, 0, 0))
    except FileNotFoundError:
        return


@pytest.fixture
def make_sem():
    """Semaphore.create(...), every set removed after the test."""
    made = []

    def make(*args, **kwargs):
        sem = shmipc.Semaphore.create(*args, **kwargs)
        made.append(sem.semid)
        return sem

    try:
        yield make
    finally:
        for semid in made:
            try:
                shmipc.remove_semaphore(semid)
            except FileNotFoundError:
                pass


@pytest.fixture
def sem_key():
    """A key no set uses; whatever set gets it during the test is removed."""
    key = _unused_key()
    try:
        yield key
    finally:
        _remove_key(key)


def _wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _start(method, target, *args):
    proc = multiprocessing.get_context(method).Process(target=target, args=args)
    proc.start()
    return proc


def _finish(proc, timeout=10.0):
    """Join *proc*; a child still running is killed and fails the test."""
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join(5)
        pytest.fail(f"child {proc.pid} did not finish within {timeout} s")
    return proc.exitcode


def _kill(proc):
    if proc.is_alive():
        proc.kill()
    proc.join(5)


# ---- children (module level, so spawn can import them) --------------------

def child_pingpong(sem, rounds):
    for i in range(rounds):
        if not sem.acquire(timeout=5, index=0):
            sys.exit(2)
        sem.release(index=1)
    sys.exit(0)


def child_hold(sem, action, undo):
    """Do one operation, then sleep until killed."""
    if action == "acquire":
        sem.acquire(undo=undo)
    elif action == "release":
        sem.release(undo=undo)
    elif action == "with":
        sem.__enter__()
    time.sleep(30)
    sys.exit(5)


def child_wait_removed(sem, index, zero):
    try:
        if zero:
            sem.wait_zero(timeout=10, index=index)
        else:
            sem.acquire(timeout=10, index=index)
    except FileNotFoundError as exc:
        sys.exit(0 if exc.errno == errno.EIDRM and "was removed" in str(exc) else 2)
    sys.exit(3)


def child_interrupted(sem):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sem.acquire(timeout=10)
    except KeyboardInterrupt:
        sys.exit(0)
    sys.exit(2)


def child_signal_storm(sem, conn):
    alarms = []
    signal.signal(signal.SIGALRM, lambda signum, frame: alarms.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)
    try:
        t0 = time.monotonic()
        timed_out = sem.acquire(timeout=0.55, index=0)
        waited = time.monotonic() - t0
        zero_timed_out = sem.wait_zero(timeout=0.25, index=1)
        zero_waited = time.monotonic() - t0 - waited
        sem.release(index=2)  # tell the parent: now block until released
        t1 = time.monotonic()
        got = sem.acquire(index=0)
        blocked = time.monotonic() - t1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
    conn.send(
        dict(
            timed_out=timed_out,
            waited=waited,
            zero_timed_out=zero_timed_out,
            zero_waited=zero_waited,
            got=got,
            blocked=blocked,
            alarms=len(alarms),
        )
    )
    sys.exit(0)


def child_open(key, barrier, queue):
    barrier.wait(5)
    sem = shmipc.Semaphore.open(key, [5, 7], count=2)
    queue.put((os.getpid(), sem.created, sem.values))
    sys.exit(0)


def child_unprivileged(semid, key, mode):
    """Drop to nobody, then probe the set; exit code says what happened."""
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    # The set is root's: trust uid 0, so that what is probed is the mode.
    try:
        sem = shmipc.Semaphore.attach(semid=semid, trusted_uids={0})
    except PermissionError:
        try:
            shmipc.Semaphore.attach(key, trusted_uids={0})
        except PermissionError:
            sys.exit(10)  # neither by id nor by key
        sys.exit(11)
    if mode == 0o644:
        value = sem.value
        try:
            sem.release()
        except PermissionError:
            sys.exit(20 if value == 1 else 21)
        sys.exit(22)
    if mode == 0o666:
        if sem.acquire(timeout=1) and sem.value == 0:
            sem.release()
            sys.exit(30)
        sys.exit(31)
    sys.exit(40)


def child_apply_both(sem):
    sys.exit(0 if sem.apply([(0, -1), (1, -1)], timeout=5) else 2)


# ---- basics ---------------------------------------------------------------

def test_create_defaults(make_sem):
    sem = make_sem()
    assert sem.created
    assert sem.count == 1
    assert sem.key == 0
    assert sem.value == 0
    assert sem.values == (0,)
    info = sem.stat()
    assert isinstance(info, shmipc.SemaphoreInfo)
    assert info.mode == 0o600
    assert info.nsems == 1
    assert info.semid == sem.semid
    assert (info.uid, info.cuid) == (os.geteuid(), os.geteuid())
    assert info.otime != 0  # initialised: openers will not wait
    assert repr(sem) == f"<Semaphore semid={sem.semid} key=0x00000000 count=1>"
    assert any(i.semid == sem.semid and i.mode == 0o600 for i in shmipc.semaphores())


def test_create_initial_values(make_sem):
    assert make_sem(3, count=3).values == (3, 3, 3)
    assert make_sem([0, SEMVMX, 2], count=3).values == (0, SEMVMX, 2)
    assert make_sem(1, mode=0o640).stat().mode == 0o640
    assert make_sem(1, mode=0o400).stat().mode == 0o400  # owner initialised it first


def test_create_with_key_is_exclusive(make_sem, sem_key):
    sem = make_sem(1, sem_key)
    assert sem.key == sem_key
    with pytest.raises(FileExistsError):
        shmipc.Semaphore.create(1, sem_key)
    other = shmipc.Semaphore.attach(sem_key)
    assert other.semid == sem.semid and not other.created
    assert shmipc.Semaphore.attach(semid=sem.semid).count == 1


def test_key_is_shown_unsigned(make_sem):
    key = _unused_key() | 0x80000000
    sem = make_sem(0, key - (1 << 32))  # the same key as a negative key_t
    assert sem.key == key
    assert sem.stat().key == key


def test_attach_missing_and_bad_calls(sem_key):
    with pytest.raises(FileNotFoundError):
        shmipc.Semaphore.attach(sem_key)
    with pytest.raises(FileNotFoundError, match="no semaphore set"):
        shmipc.Semaphore.attach(semid=2**31 - 1)
    with pytest.raises(TypeError):
        shmipc.Semaphore.attach()
    with pytest.raises(TypeError):
        shmipc.Semaphore.attach(sem_key, semid=1)
    with pytest.raises(ValueError):
        shmipc.Semaphore.attach(semid=-1)
    with pytest.raises(ValueError, match="IPC_PRIVATE"):
        shmipc.Semaphore.attach(0)
    with pytest.raises(FileNotFoundError):
        shmipc.remove_semaphore(2**31 - 1)


def test_acquire_release_and_queries(make_sem):
    sem = make_sem(2, count=2)
    assert sem.acquire() is True
    assert sem.acquire(timeout=0, n=1) is True
    assert sem.acquire(timeout=0) is False
    assert sem.value == 0
    sem.release(3)
    assert sem.value == 3
    assert sem.acquire(n=3, timeout=1) and sem.value == 0
    sem.release(index=1)
    assert sem.values == (0, 3)
    assert sem.last_pid == os.getpid()
    assert sem.last_pid_of(1) == os.getpid()
    assert sem.waiting == 0 and sem.zero_waiting == 0
    assert sem.wait_zero(timeout=0) is True
    assert sem.wait_zero(timeout=0, index=1) is False
    sem.value = 9
    sem.set_value(4, index=1)
    assert sem.values == (9, 4)
    sem.values = [1, 2]
    assert (sem.value_of(0), sem.value_of(1)) == (1, 2)


def test_context_manager_is_an_undo_lock(make_sem):
    sem = make_sem(1)
    with sem as entered:
        assert entered is sem
        assert sem.value == 0
        assert sem.acquire(timeout=0) is False
    assert sem.value == 1


def test_pickle_by_id(make_sem):
    sem = make_sem(5, count=2)
    copy = pickle.loads(pickle.dumps(sem))
    assert type(copy) is shmipc.Semaphore
    assert (copy.semid, copy.count, copy.values) == (sem.semid, 2, (5, 5))


def test_timeouts_are_accurate(make_sem):
    sem = make_sem(0, count=2)
    sem.release(index=1)
    for call in (
        lambda: sem.acquire(timeout=0.2),
        lambda: sem.wait_zero(timeout=0.2, index=1),
        lambda: sem.apply([(0, -1)], timeout=0.2),
    ):
        t0 = time.monotonic()
        assert call() is False
        elapsed = time.monotonic() - t0
        assert 0.2 <= elapsed < 0.25, elapsed
    t0 = time.monotonic()
    assert sem.acquire(timeout=0) is False
    assert sem.wait_zero(timeout=0, index=1) is False
    assert time.monotonic() - t0 < 0.01


def test_waiting_counts_a_thread(make_sem):
    sem = make_sem(0, count=2)
    sem.release(index=1)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(sem.acquire(timeout=5))),
        threading.Thread(target=lambda: results.append(sem.wait_zero(timeout=5, index=1))),
    ]
    for t in threads:
        t.start()
    try:
        assert _wait_for(lambda: sem.waiting == 1 and sem.zero_waiting_of(1) == 1)
    finally:
        sem.release()
        sem.acquire(index=1)
        for t in threads:
            t.join(5)
    assert results == [True, True] and sem.values == (0, 0)


# ---- errors -----------------------------------------------------------------

def test_erange_past_semvmx(make_sem):
    sem = make_sem(SEMVMX)
    with pytest.raises(ValueError, match="SEMVMX"):
        sem.release()
    assert sem.value == SEMVMX
    with pytest.raises(ValueError, match="SEMVMX"):
        sem.apply([(0, 1)])
    with pytest.raises(ValueError, match="SEMVMX"):
        sem.set_value(SEMVMX + 1)
    with pytest.raises(ValueError, match="SEMVMX"):
        shmipc.Semaphore.create(SEMVMX + 1)
    assert sem.value == SEMVMX


def test_use_after_remove(make_sem):
    sem = make_sem(1)
    other = shmipc.Semaphore.attach(semid=sem.semid)
    sem.remove()
    assert sem.removed
    for call in (
        sem.acquire,
        sem.release,
        sem.wait_zero,
        lambda: sem.value,
        lambda: sem.values,
        lambda: sem.apply([(0, 1)]),
        sem.stat,
        lambda: sem.chmod(0o600),
        lambda: pickle.dumps(sem),
        lambda: sem.__enter__(),
    ):
        with pytest.raises(ValueError, match="removed"):
            call()
    sem.remove()  # idempotent on this handle
    assert repr(sem) == f"<Semaphore semid={sem.semid} removed>"
    # Another handle (another process, in effect) asks the kernel.
    with pytest.raises(FileNotFoundError, match="no semaphore set"):
        other.acquire(timeout=0)
    with pytest.raises(FileNotFoundError):
        other.value
    with pytest.raises(FileNotFoundError):
        other.remove()
    with pytest.raises(FileNotFoundError):
        shmipc.Semaphore.attach(semid=sem.semid)


BAD_CALLS = [
    ("acquire n=0", ValueError, lambda s: s.acquire(n=0)),
    ("acquire n<0", ValueError, lambda s: s.acquire(n=-1)),
    ("acquire n huge", ValueError, lambda s: s.acquire(n=2**70)),
    ("acquire n past SEMVMX", ValueError, lambda s: s.acquire(n=SEMVMX + 1)),
    ("acquire n float", TypeError, lambda s: s.acquire(n=1.0)),
    ("acquire n str", TypeError, lambda s: s.acquire(n="1")),
    ("acquire n bool", TypeError, lambda s: s.acquire(n=True)),
    ("acquire index past end", ValueError, lambda s: s.acquire(timeout=0, index=2)),
    ("acquire index < 0", ValueError, lambda s: s.acquire(timeout=0, index=-1)),
    ("acquire index str", TypeError, lambda s: s.acquire(index="0")),
    ("acquire timeout < 0", ValueError, lambda s: s.acquire(timeout=-1)),
    ("acquire timeout nan", ValueError, lambda s: s.acquire(timeout=math.nan)),
    ("acquire timeout str", TypeError, lambda s: s.acquire(timeout="1")),
    ("acquire extra positional", TypeError, lambda s: s.acquire(0, 1)),
    ("release n=0", ValueError, lambda s: s.release(0)),
    ("release n<0", ValueError, lambda s: s.release(-3)),
    ("release n huge", ValueError, lambda s: s.release(2**64)),
    ("release index", ValueError, lambda s: s.release(index=5)),
    ("wait_zero index", ValueError, lambda s: s.wait_zero(index=2)),
    ("value_of index", ValueError, lambda s: s.value_of(2)),
    ("waiting_of index", ValueError, lambda s: s.waiting_of(-1)),
    ("set_value < 0", ValueError, lambda s: s.set_value(-1)),
    ("set_value huge", ValueError, lambda s: s.set_value(2**40)),
    ("set_value str", TypeError, lambda s: s.set_value("1")),
    ("set_values length", ValueError, lambda s: s.set_values([1])),
    ("set_values item", TypeError, lambda s: s.set_values([1, "2"])),
    ("set_values range", ValueError, lambda s: s.set_values([1, -2])),
    ("set_values not a sequence", TypeError, lambda s: s.set_values(3)),
    ("apply empty", ValueError, lambda s: s.apply([])),
    ("apply not a sequence", TypeError, lambda s: s.apply(3)),
    ("apply str", TypeError, lambda s: s.apply("ab")),
    ("apply short tuple", TypeError, lambda s: s.apply([(0,)])),
    ("apply index", ValueError, lambda s: s.apply([(0, 1), (2, 1)])),
    ("apply delta range", ValueError, lambda s: s.apply([(0, SEMVMX + 1)])),
    ("apply delta type", TypeError, lambda s: s.apply([(0, 1.5)])),
    ("apply flags", ValueError, lambda s: s.apply([(0, 1, 0x40000)])),
    ("apply flags type", TypeError, lambda s: s.apply([(0, 1, None)])),
    ("apply too many", ValueError, lambda s: s.apply([(0, 0)] * (_limits()[2] + 1))),
    ("apply Op index", ValueError, lambda s: s.apply([shmipc.Op(7, 1)])),
    ("raw semop triple", TypeError, lambda s: s.semop([(0, 1)])),
    ("raw semop flags", ValueError, lambda s: s.semop([(0, 1, 1)])),
    ("raw semop index", ValueError, lambda s: s.semop([(9, 1, 0)])),
    ("chmod range", ValueError, lambda s: s.chmod(0o1000)),
    ("chmod type", TypeError, lambda s: s.chmod("600")),
    ("chown type", TypeError, lambda s: s.chown(uid="root")),
    ("create count 0", ValueError, lambda s: shmipc.Semaphore.create(count=0)),
    ("create count str", TypeError, lambda s: shmipc.Semaphore.create(count="1")),
    ("create value < 0", ValueError, lambda s: shmipc.Semaphore.create(-1)),
    ("create value type", TypeError, lambda s: shmipc.Semaphore.create(1.0)),
    ("create values length", ValueError, lambda s: shmipc.Semaphore.create([1, 2])),
    ("create mode", ValueError, lambda s: shmipc.Semaphore.create(mode=0o1777)),
    ("create key type", TypeError, lambda s: shmipc.Semaphore.create(key="k")),
    ("create key range", ValueError, lambda s: shmipc.Semaphore.create(key=2**32)),
    ("create too many", ValueError, lambda s: shmipc.Semaphore.create(count=_limits()[0] + 1)),
    ("open IPC_PRIVATE", ValueError, lambda s: shmipc.Semaphore.open(0)),
    ("open init_timeout", ValueError, lambda s: shmipc.Semaphore.open(1, init_timeout=-1)),
    ("raw handle semid", ValueError, lambda s: shmipc.Semaphore(-1)),
    ("stat semid type", TypeError, lambda s: shmipc.stat_semaphore("1")),
]


@pytest.mark.parametrize("exc, call", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments(make_sem, exc, call):
    sem = make_sem(1, count=2)
    with pytest.raises(exc):
        call(sem)
    assert sem.values == (1, 1)  # nothing half-done


# ---- apply(): several operations in one call ----------------------------------

def test_apply_is_all_or_nothing(make_sem):
    sem = make_sem([1, 0], count=2)
    assert sem.apply([(0, -1), (1, -1)], timeout=0) is False
    assert sem.values == (1, 0)  # the first operation was not applied
    assert sem.apply([shmipc.Op(0, -1), shmipc.Op(1, -1)], timeout=0.05) is False
    assert sem.values == (1, 0)
    # An IPC_NOWAIT operation makes even an unbounded call give up at once.
    t0 = time.monotonic()
    assert sem.apply([(0, 1), (1, -1, shmipc.IPC_NOWAIT)]) is False
    assert sem.apply([shmipc.Op(0, 1), shmipc.Op(1, -1, nowait=True)]) is False
    assert time.monotonic() - t0 < 0.1
    assert sem.values == (1, 0)
    sem.release(index=1)
    assert sem.apply([(0, -1), (1, -1), (1, 0)], timeout=0) is True
    assert sem.values == (0, 0)
    assert sem.apply([(0, 2), (0, -1), (1, 3, 0)]) is True  # in order, on one value
    assert sem.values == (1, 3)


def test_apply_undo_flags(make_sem):
    sem = make_sem([0, 0], count=2)
    # +1 with undo and -1 with undo cancel out; the value stays as set.
    assert sem.apply([shmipc.Op(0, 1, undo=True), shmipc.Op(1, 2), (0, -1, shmipc.SEM_UNDO)])
    assert sem.values == (0, 2)


def test_apply_waits_for_every_operation(make_sem):
    sem = make_sem([0, 0], count=2)
    proc = _start("fork", child_apply_both, sem)
    try:
        assert _wait_for(lambda: sem.waiting_of(0) + sem.waiting_of(1) == 1)
        sem.release(index=0)
        time.sleep(0.05)
        assert sem.values == (1, 0)  # not taken while index 1 is still 0
        sem.release(index=1)
        assert _finish(proc) == 0
    finally:
        _kill(proc)
    assert sem.values == (0, 0)


# ---- across processes -----------------------------------------------------------

@pytest.mark.parametrize("method", CONTEXTS)
def test_cross_process_handoff(make_sem, method):
    sem = make_sem(0, count=2)
    rounds = 200
    proc = _start(method, child_pingpong, sem, rounds)
    try:
        for _ in range(rounds):
            sem.release(index=0)
            assert sem.acquire(timeout=5, index=1)
        assert _finish(proc) == 0
    finally:
        _kill(proc)
    assert sem.values == (0, 0)


# Each: (initial value, what the child does, undo, value after SIGKILL).
UNDO_CASES = [
    ("lock with undo is given back", 1, "acquire", True, 1),
    ("lock without undo stays taken", 1, "acquire", False, 0),
    ("counter posted with undo is taken back", 0, "release", True, 0),
    ("counter posted without undo stays", 0, "release", False, 1),
    ("with-block lock is given back", 1, "with", None, 1),
]


@pytest.mark.parametrize(
    "initial, action, undo, after", [c[1:] for c in UNDO_CASES], ids=[c[0] for c in UNDO_CASES]
)
def test_sigkilled_holder(make_sem, initial, action, undo, after):
    sem = make_sem(initial)
    proc = _start("fork", child_hold, sem, action, undo)
    try:
        assert _wait_for(lambda: sem.value != initial), "child never operated"
        os.kill(proc.pid, signal.SIGKILL)
        assert _finish(proc) == -signal.SIGKILL
    finally:
        _kill(proc)
    assert sem.value == after


def test_undo_survives_spawn_pickling(make_sem):
    sem = make_sem(1)
    proc = _start("spawn", child_hold, sem, "with", None)
    try:
        assert _wait_for(lambda: sem.value == 0, timeout=10)
        proc.kill()
        assert _finish(proc) == -signal.SIGKILL
    finally:
        _kill(proc)
    assert sem.value == 1


def test_removal_wakes_every_waiter(make_sem):
    sem = make_sem([0, 1], count=2)
    procs = [_start("fork", child_wait_removed, sem, 0, False) for _ in range(3)]
    procs.append(_start("fork", child_wait_removed, sem, 1, True))
    try:
        assert _wait_for(lambda: sem.waiting == 3 and sem.zero_waiting_of(1) == 1)
        sem.remove()
        t0 = time.monotonic()
        assert [_finish(p, 3) for p in procs] == [0, 0, 0, 0]
        assert time.monotonic() - t0 < 2
    finally:
        for p in procs:
            _kill(p)


@pytest.mark.parametrize("method", CONTEXTS)
def test_keyboard_interrupt_during_acquire(make_sem, method):
    sem = make_sem(0)
    proc = _start(method, child_interrupted, sem)
    try:
        assert _wait_for(lambda: sem.waiting == 1, timeout=10)
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        assert _finish(proc, 1.0) == 0
        assert time.monotonic() - t0 < 1.0
    finally:
        _kill(proc)


def test_signal_storm(make_sem):
    sem = make_sem([0, 1, 0], count=3)
    recv, send = multiprocessing.get_context("fork").Pipe(duplex=False)
    proc = _start("fork", child_signal_storm, sem, send)
    try:
        assert sem.acquire(timeout=5, index=2)  # the child is about to block
        time.sleep(0.35)
        sem.release(index=0)
        assert recv.poll(5)
        result = recv.recv()
        assert _finish(proc) == 0
    finally:
        _kill(proc)
    assert result["timed_out"] is False
    assert 0.55 <= result["waited"] < 0.60, result
    assert result["zero_timed_out"] is False
    assert 0.25 <= result["zero_waited"] < 0.30, result
    assert result["got"] is True
    assert 0.3 <= result["blocked"] < 0.6, result
    assert result["alarms"] >= 9, result  # the handler ran throughout
    assert sem.values == (0, 1, 0)


# ---- open(): race-free create-or-open ---------------------------------------------

def test_open_creates_then_opens(sem_key):
    first = shmipc.Semaphore.open(sem_key, 3, count=2)
    assert first.created and first.values == (3, 3)
    second = shmipc.Semaphore.open(sem_key, 9, count=2)
    assert not second.created
    assert second.semid == first.semid and second.values == (3, 3)
    assert shmipc.Semaphore.open(sem_key, count=1).count == 2  # smaller is fine
    with pytest.raises(ValueError, match="fewer"):
        shmipc.Semaphore.open(sem_key, count=3)


def test_open_race_exactly_one_initialises(sem_key):
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier = ctx.Barrier(n)
    queue = ctx.Queue()
    procs = [_start("fork", child_open, sem_key, barrier, queue) for _ in range(n)]
    try:
        results = [queue.get(timeout=10) for _ in range(n)]
        assert [_finish(p) for p in procs] == [0] * n
    finally:
        for p in procs:
            _kill(p)
    assert sum(created for _, created, _ in results) == 1
    assert all(values == (5, 7) for _, _, values in results)


def test_open_waits_for_the_creator(sem_key):
    # A creator that has made the set but not yet initialised it.
    semid = _core.semget(sem_key, 1, shmipc.IPC_CREAT | shmipc.IPC_EXCL | 0o600)
    raw = _core.Semaphore(semid)

    def creator():
        time.sleep(0.2)
        raw.set_values([4])
        raw.semop([(0, -1, 0), (0, 1, 0)])

    thread = threading.Thread(target=creator)
    thread.start()
    try:
        t0 = time.monotonic()
        sem = shmipc.Semaphore.open(sem_key, 9)
        elapsed = time.monotonic() - t0
    finally:
        thread.join(5)
    assert not sem.created
    assert sem.value == 4
    assert 0.15 <= elapsed < 1.5


def test_open_gives_up_on_a_dead_creator(sem_key):
    _core.semget(sem_key, 1, shmipc.IPC_CREAT | shmipc.IPC_EXCL | 0o600)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="not initialised"):
        shmipc.Semaphore.open(sem_key, init_timeout=0.1)
    assert time.monotonic() - t0 < 0.5


# ---- permissions ----------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged uid")
def test_permissions_as_unprivileged_user(make_sem, sem_key):
    sem = make_sem(1, sem_key)
    assert sem.stat().mode == 0o600
    expected = {0o600: 10, 0o644: 20, 0o666: 30}
    for mode, code in expected.items():
        sem.chmod(mode)
        assert sem.stat().mode == mode
        proc = _start("fork", child_unprivileged, sem.semid, sem_key, mode)
        try:
            assert _finish(proc) == code, oct(mode)
        finally:
            _kill(proc)
    assert sem.value == 1
    sem.chmod(0o600)
    sem.chown(uid=65534)
    info = sem.stat()
    assert (info.uid, info.gid, info.cuid) == (65534, 0, 0)
    proc = _start("fork", child_unprivileged, sem.semid, sem_key, 0o666)
    try:
        assert _finish(proc) == 30  # the new owner may use it
    finally:
        _kill(proc)


def test_semop_ops_list_shrunk_by_an_item_raises_instead_of_crashing(make_sem):
    # Parsing a triple that is not a list or tuple iterates it (Python code);
    # clearing the ops list from there must not make the parser read freed
    # list items: the ops are a snapshot taken before parsing.
    sem = make_sem(0)
    ops = []

    class ShrinkingTriple:
        def __iter__(self):
            ops.clear()
            return iter((0, 1, 0))

    ops.extend([ShrinkingTriple(), (0, 1, 0), (0, 1, 0)])
    assert sem.semop(ops) is True
    assert ops == [] and sem.value == 3
