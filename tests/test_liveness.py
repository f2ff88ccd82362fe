"""shmipc.Liveness: a peer's death is visible at once, even before it is reaped."""
import multiprocessing
import os
import pickle
import random
import signal
import sys
import time

import pytest

import shmipc


# ---- helpers and fixtures -----------------------------------------------------

@pytest.fixture
def make_live():
    """Liveness.create(...), every table removed after the test."""
    made = []

    def make(*args, **kwargs):
        live = shmipc.Liveness.create(*args, **kwargs)
        made.append(live.semid)
        return live

    try:
        yield make
    finally:
        for semid in made:
            try:
                shmipc.remove_semaphore(semid)
            except FileNotFoundError:
                pass


@pytest.fixture
def live_key():
    used = {info.key for info in shmipc.semaphores()}
    key = next(k for k in iter(lambda: 0x5E700000 | random.getrandbits(20), None) if k not in used)
    try:
        yield key
    finally:
        try:
            shmipc.Semaphore.attach(key).remove()
        except FileNotFoundError:
            pass


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


def _proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


# ---- children ---------------------------------------------------------------------

def child_register_and_sleep(live, slot):
    live.register(slot)  # the token is dropped: the registration stays
    time.sleep(30)
    sys.exit(5)


def child_register_and_exit(live, slot):
    live.register(slot)
    sys.exit(0)  # no unregister: exiting is enough


def child_wait_gone(live, slot):
    sys.exit(0 if live.wait_gone(slot, timeout=10) else 2)


def child_wait_gone_removed(live, slot):
    try:
        live.wait_gone(slot, timeout=10)
    except FileNotFoundError as exc:
        sys.exit(0 if "was removed" in str(exc) else 2)
    sys.exit(3)


def child_of_registered_parent(live, token):
    # fork() does not pass the parent's registration (its semadj) on.
    if token.registered or not live.is_alive(token.slot):
        sys.exit(2)
    try:
        token.unregister()
    except RuntimeError:
        sys.exit(0)
    sys.exit(3)


# ---- tests ------------------------------------------------------------------------

def test_zombie_is_seen_dead_at_once(make_live):
    live = make_live(2)
    proc = _start("fork", child_register_and_sleep, live, 1)
    try:
        assert _wait_for(lambda: live.is_alive(1)), "child never registered"
        assert live.pid_of(1) == proc.pid
        assert not live.is_alive(0)
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        # Nothing reaps the child here: multiprocessing only waits in
        # join()/is_alive()/exitcode, none of which runs before the checks.
        assert _wait_for(lambda: not live.is_alive(1), timeout=1.0)
        assert time.monotonic() - t0 < 1.0
        # dead, not yet reaped (the kernel drops semadj before the task turns
        # zombie, so the state may lag the liveness by a moment)
        assert _wait_for(lambda: _proc_state(proc.pid) == "Z", timeout=1.0)
        assert live.wait_gone(1, timeout=1.0) is True
        assert live.pid_of(1) is None
        assert live.alive() == []
    finally:
        _kill(proc)
    assert proc.exitcode == -signal.SIGKILL


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_wait_gone_in_another_process(make_live, method):
    live = make_live(1)
    holder = _start("fork", child_register_and_sleep, live, 0)
    waiter = None
    try:
        assert _wait_for(lambda: live.is_alive(0))
        waiter = _start(method, child_wait_gone, live, 0)
        assert _wait_for(lambda: live.semaphore.zero_waiting_of(0) == 1, timeout=10)
        assert live.wait_gone(0, timeout=0.05) is False  # still alive
        holder.kill()
        t0 = time.monotonic()
        assert _finish(waiter, 2) == 0
        assert time.monotonic() - t0 < 1.0
        assert _finish(holder) == -signal.SIGKILL
    finally:
        _kill(holder)
        if waiter is not None:
            _kill(waiter)


def test_normal_exit_frees_the_slot(make_live):
    live = make_live(1)
    proc = _start("fork", child_register_and_exit, live, 0)
    try:
        assert _finish(proc) == 0
    finally:
        _kill(proc)
    assert not live.is_alive(0)


def test_register_unregister_in_process(make_live):
    live = make_live(3)
    assert live.slots == 3 and live.alive() == []
    token = live.register(2)
    assert token.registered and token.slot == 2 and token.pid == os.getpid()
    assert live.is_alive(2) and live.alive() == [2]
    assert live.pid_of(2) == os.getpid()
    with pytest.raises(shmipc.SlotInUseError, match=f"pid {os.getpid()}"):
        live.register(2)
    assert live.semaphore.value_of(2) == 1  # the refused attempt changed nothing
    token.unregister()
    token.unregister()  # idempotent
    assert not token.registered and not live.is_alive(2)
    with live.register(2) as again:
        assert live.is_alive(2)
    assert not again.registered and not live.is_alive(2)
    assert live.wait_gone(2, timeout=0) is True


def test_register_any_skips_held_slots(make_live):
    live = make_live(2)
    first = live.register_any()
    second = live.register_any()
    assert (first.slot, second.slot) == (0, 1)
    with pytest.raises(shmipc.SlotInUseError, match="all 2"):
        live.register_any()
    first.unregister()
    assert live.register_any().slot == 0


def test_slot_held_by_another_process(make_live):
    live = make_live(1)
    proc = _start("fork", child_register_and_sleep, live, 0)
    try:
        assert _wait_for(lambda: live.is_alive(0))
        with pytest.raises(shmipc.SlotInUseError, match=str(proc.pid)):
            live.register(0)
    finally:
        _kill(proc)
    assert live.register(0).registered  # free again once the holder died


def test_forked_child_does_not_hold_the_registration(make_live):
    live = make_live(1)
    token = live.register(0)
    proc = _start("fork", child_of_registered_parent, live, token)
    try:
        assert _finish(proc) == 0
    finally:
        _kill(proc)
    assert live.is_alive(0)  # the child's exit did not undo the parent's +1
    token.unregister()
    assert not live.is_alive(0)


def test_open_attach_and_pickle(make_live, live_key):
    live = shmipc.Liveness.open(live_key, 4)
    assert live.semaphore.created and live.key == live_key and live.slots == 4
    token = live.register(3)
    other = shmipc.Liveness.open(live_key, 4)
    assert not other.semaphore.created and other.is_alive(3)
    assert shmipc.Liveness.attach(live_key).is_alive(3)
    assert shmipc.Liveness.attach(semid=live.semid).is_alive(3)
    copy = pickle.loads(pickle.dumps(live))
    assert copy.semid == live.semid and copy.is_alive(3)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(token)
    assert repr(live) == f"<Liveness semid={live.semid} slots=4>"
    token.unregister()


def test_removal_wakes_wait_gone(make_live):
    live = make_live(1)
    live.register(0)
    proc = _start("fork", child_wait_gone_removed, live, 0)
    try:
        assert _wait_for(lambda: live.semaphore.zero_waiting_of(0) == 1)
        live.remove()
        assert _finish(proc, 2) == 0
    finally:
        _kill(proc)
    with pytest.raises(ValueError, match="removed"):
        live.is_alive(0)
    assert "removed" in repr(live)


@pytest.mark.parametrize(
    "exc, call",
    [
        (ValueError, lambda live: live.register(2)),
        (ValueError, lambda live: live.is_alive(-1)),
        (TypeError, lambda live: live.is_alive("0")),
        (TypeError, lambda live: live.wait_gone(True)),
        (ValueError, lambda live: live.wait_gone(0, timeout=-1)),
        (ValueError, lambda live: live.pid_of(5)),
        (ValueError, lambda live: shmipc.Liveness.create(0)),
        (TypeError, lambda live: shmipc.Liveness.create("2")),
        (TypeError, lambda live: shmipc.Liveness(live.semid)),
    ],
)
def test_bad_arguments(make_live, exc, call):
    live = make_live(2)
    with pytest.raises(exc):
        call(live)
    assert live.alive() == []
