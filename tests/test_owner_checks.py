"""Owner checks: attaching or opening an existing object refuses one that
another uid owns or created, unless the call lists that uid in
``trusted_uids``.

The squatter is real: a forked child drops to nobody (65534) and creates
each kind of object with mode 0o666 under the key or name the test (root)
then uses.  Those tests need root; the argument checks do not.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import re

import pytest

import _leaks
import shmipc
from shmipc import Liveness, NamedSemaphore, Segment, Semaphore, _core

NOBODY = 65534
JOIN = 15.0  # seconds; a stuck child fails the test instead of hanging it

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to run a squatter as another uid (nobody, 65534)"
)


# ---- the squatter ---------------------------------------------------------------

def squat(key, name):
    """As nobody, create a segment and a semaphore set under *key* and a
    named semaphore *name*, all mode 0o666, and leave them there."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    os.umask(0)
    if key is not None:
        Segment.create(4096, key, mode=0o666).detach()
        Semaphore.create(1, key, count=2, mode=0o666)
    if name is not None:
        NamedSemaphore.create(name, 1, mode=0o666).close()


def squat_symlink(name, target):
    """As nobody, make /dev/shm/sem.<name> a symbolic link to *target*."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    os.symlink(target, _sem_path(name))


def _sem_path(name):
    return "/dev/shm/sem." + name[1:]


def _run_as_nobody(target, *args):
    proc = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    proc.start()
    proc.join(JOIN)
    if proc.is_alive():
        proc.kill()
        proc.join(5)
    assert proc.exitcode == 0, f"the squatter exited with {proc.exitcode}"


class Objects:
    """Keys and names for one test; whatever has them at teardown is removed."""

    def __init__(self):
        self.keys = []
        self.names = []

    def key(self):
        used = {info.key for info in shmipc.semaphores()}
        key = _leaks.new_key()
        while key in used:
            key = _leaks.new_key()
        self.keys.append(key)
        return key

    def name(self):
        name = _leaks.posix_name("owner")
        self.names.append(name)
        return name

    def shmid(self, key):
        return _leaks.register_shm(_core.shmget(key, 0, 0))

    def semid(self, key):
        return _leaks.register_sem(_core.semget(key, 0, 0))

    def cleanup(self):
        for key in self.keys:
            try:
                _core.shm_remove(self.shmid(key))
            except OSError:
                pass
            try:
                _core.sem_remove(self.semid(key))
            except OSError:
                pass
        for name in self.names:
            try:
                os.unlink(_sem_path(name))
            except FileNotFoundError:
                pass


@pytest.fixture
def objs():
    made = Objects()
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def squatted(objs):
    """(key, name): a segment, a semaphore set and a named semaphore that
    nobody created, mode 0o666."""
    key, name = objs.key(), objs.name()
    _run_as_nobody(squat, key, name)
    objs.shmid(key)
    objs.semid(key)
    return key, name


def _refused(exc_info, ident, uid, what="owned"):
    msg = str(exc_info.value)
    assert ident in msg, msg
    assert f"{what} by uid {uid}" in msg, msg
    assert f"trusted_uids={{{uid}}}" in msg, msg


def _hex(key):
    return f"{key & 0xFFFFFFFF:#010x}"


# ---- segments -------------------------------------------------------------------

@needs_root
def test_segment_of_another_uid_is_refused(squatted, objs):
    key, _ = squatted
    shmid = objs.shmid(key)
    info = shmipc.stat_segment(shmid)
    assert (info.uid, info.cuid, info.mode) == (NOBODY, NOBODY, 0o666)
    with pytest.raises(PermissionError) as exc:
        Segment.attach(key)
    _refused(exc, _hex(key), NOBODY)
    with pytest.raises(PermissionError) as exc:
        Segment.attach(shmid=shmid, readonly=True)
    _refused(exc, f"shmid {shmid}", NOBODY)
    with pytest.raises(PermissionError) as exc:
        Segment.open(key, 4096)
    _refused(exc, _hex(key), NOBODY)
    # Each refusal detached what it had attached.
    assert shmipc.stat_segment(shmid).nattch == 0


@needs_root
def test_segment_of_a_trusted_uid_is_accepted(squatted, objs):
    key, _ = squatted
    shmid = objs.shmid(key)
    with Segment.attach(key, trusted_uids={NOBODY}) as seg:
        assert seg.shmid == shmid
        seg.write(b"ok")
    with Segment.attach(shmid=shmid, readonly=True, trusted_uids=[NOBODY, 1000]) as seg:
        assert seg.read(2) == b"ok"
    seg = Segment.open(key, 4096, trusted_uids=(NOBODY,))
    try:
        assert not seg.created
        # A pickle carries trusted_uids: the copy re-attaches under the same check.
        copy = pickle.loads(pickle.dumps(seg))
        try:
            assert copy.shmid == shmid and copy.read(2) == b"ok"
            assert copy._trusted_uids == frozenset({NOBODY})
        finally:
            copy.detach()
    finally:
        seg.detach()


@needs_root
def test_segment_owned_by_euid_is_accepted_and_chown_makes_it_refused(shm, key):
    mine = shm.segment(4096, key)
    info = mine.stat()
    assert (info.uid, info.cuid, info.mode) == (0, 0, 0o600)
    Segment.attach(key).detach()
    Segment.open(key, 4096).detach()
    mine_pickled = pickle.dumps(mine)
    # uid branch: the owner is now nobody, the creator still root.
    mine.chown(uid=NOBODY)
    with pytest.raises(PermissionError) as exc:
        Segment.attach(key)
    _refused(exc, _hex(key), NOBODY, "owned")
    # Unpickling applies the check too (the pickle trusted nobody else).
    with pytest.raises(PermissionError):
        pickle.loads(mine_pickled)
    Segment.attach(key, trusted_uids={NOBODY}).detach()
    assert mine.stat().nattch == 1


@needs_root
def test_segment_created_by_another_uid_is_refused_even_if_owned_by_euid(squatted, objs):
    key, _ = squatted
    shmid = objs.shmid(key)
    # cuid branch: root takes the squatter's segment over (IPC_SET), but it
    # stays created by nobody.
    _core.shm_set(shmid, 0, 0, 0o600)
    info = shmipc.stat_segment(shmid)
    assert (info.uid, info.cuid) == (0, NOBODY)
    with pytest.raises(PermissionError) as exc:
        Segment.attach(key)
    _refused(exc, _hex(key), NOBODY, "created")
    Segment.attach(key, trusted_uids={NOBODY}).detach()


# ---- semaphore sets and liveness tables ---------------------------------------------

@needs_root
def test_semaphore_set_of_another_uid_is_refused(squatted, objs):
    key, _ = squatted
    semid = objs.semid(key)
    info = shmipc.stat_semaphore(semid)
    assert (info.uid, info.cuid, info.mode) == (NOBODY, NOBODY, 0o666)
    for attempt in (
        lambda: Semaphore.attach(key),
        lambda: Semaphore.open(key, count=2),
        lambda: Liveness.attach(key),
        lambda: Liveness.open(key, 2),
    ):
        with pytest.raises(PermissionError) as exc:
            attempt()
        _refused(exc, _hex(key), NOBODY)
    for attempt in (lambda: Semaphore.attach(semid=semid), lambda: Liveness.attach(semid=semid)):
        with pytest.raises(PermissionError) as exc:
            attempt()
        _refused(exc, f"semid {semid}", NOBODY)
    assert shmipc.stat_semaphore(semid).otime != 0  # untouched but for the squatter's init
    assert Semaphore.attach(semid=semid, trusted_uids={NOBODY}).get_values() == (1, 1)


@needs_root
def test_semaphore_set_of_a_trusted_uid_is_accepted_and_pickles_keep_it(squatted, objs):
    key, _ = squatted
    semid = objs.semid(key)
    sem = Semaphore.attach(key, trusted_uids={NOBODY})
    assert sem.semid == semid
    opened = Semaphore.open(key, count=2, trusted_uids={NOBODY})
    assert not opened.created and opened.semid == semid
    copy = pickle.loads(pickle.dumps(sem))
    assert copy.semid == semid and copy._trusted_uids == frozenset({NOBODY})
    live = Liveness.open(key, 2, trusted_uids={NOBODY})
    assert Liveness.attach(semid=semid, trusted_uids={NOBODY}).semid == semid
    live_copy = pickle.loads(pickle.dumps(live))
    assert live_copy.semid == semid
    assert live_copy.semaphore._trusted_uids == frozenset({NOBODY})


@needs_root
def test_semaphore_set_uid_and_cuid_branches(objs, squatted):
    # uid branch: our own set given to nobody.
    own_key = objs.key()
    mine = Semaphore.create(0, own_key, count=1)
    _leaks.register_sem(mine.semid)
    assert mine.stat().mode == 0o600
    Semaphore.attach(own_key)  # ours: accepted
    Liveness.attach(own_key)
    pickled = pickle.dumps(mine)
    mine.chown(uid=NOBODY)
    with pytest.raises(PermissionError) as exc:
        Semaphore.attach(own_key)
    _refused(exc, _hex(own_key), NOBODY, "owned")
    with pytest.raises(PermissionError):
        pickle.loads(pickled)
    # cuid branch: the squatter's set taken over by root stays created by nobody.
    key, _ = squatted
    semid = objs.semid(key)
    _core.sem_set(semid, 0, 0, 0o600)
    info = shmipc.stat_semaphore(semid)
    assert (info.uid, info.cuid) == (0, NOBODY)
    with pytest.raises(PermissionError) as exc:
        Semaphore.attach(key)
    _refused(exc, _hex(key), NOBODY, "created")
    Semaphore.attach(key, trusted_uids={NOBODY})


# ---- named POSIX semaphores ---------------------------------------------------------

@needs_root
def test_named_semaphore_of_another_uid_is_refused(squatted):
    _, name = squatted
    st = os.stat(_sem_path(name))
    assert (st.st_uid, st.st_mode & 0o777) == (NOBODY, 0o666)
    with pytest.raises(PermissionError) as exc:
        NamedSemaphore.open(name)
    _refused(exc, repr(name), NOBODY)
    sem = NamedSemaphore.open(name, trusted_uids={NOBODY})
    try:
        assert sem.owner_uid == NOBODY
        assert sem.value == 1
        copy = pickle.loads(pickle.dumps(sem))
        try:
            assert copy._trusted_uids == frozenset({NOBODY})
            assert copy.acquire(timeout=0) and sem.value == 0
            copy.release()
        finally:
            copy.close()
    finally:
        sem.close()


@needs_root
def test_named_semaphore_owned_by_euid_is_accepted_then_refused_after_chown(objs):
    name = objs.name()
    mine = NamedSemaphore.create(name, 0)
    try:
        assert os.stat(_sem_path(name)).st_mode & 0o777 == 0o600
        assert mine.owner_uid == os.geteuid()
        other = NamedSemaphore.open(name)
        pickled = pickle.dumps(other)
        other.close()
        os.chown(_sem_path(name), NOBODY, -1)
        with pytest.raises(PermissionError) as exc:
            NamedSemaphore.open(name)
        _refused(exc, repr(name), NOBODY)
        with pytest.raises(PermissionError):
            pickle.loads(pickled)
    finally:
        mine.close()


@needs_root
def test_named_semaphore_symlink_is_not_followed(objs):
    # root follows symbolic links in /dev/shm whoever made them (the
    # directory is root's), so a link to root's own semaphore would pass
    # the owner check: the file is opened with O_NOFOLLOW.
    target, link = objs.name(), objs.name()
    mine = NamedSemaphore.create(target, 0)
    try:
        _run_as_nobody(squat_symlink, link, _sem_path(target))
        assert os.path.islink(_sem_path(link))
        with pytest.raises(OSError, match="symbolic link"):
            NamedSemaphore.open(link)
    finally:
        mine.close()


# ---- the trusted_uids argument --------------------------------------------------------

CALLS = [
    pytest.param(lambda t: Segment.attach(0x7FFFFFFE, trusted_uids=t), id="Segment.attach"),
    pytest.param(lambda t: Segment.open(0x7FFFFFFE, 64, trusted_uids=t), id="Segment.open"),
    pytest.param(lambda t: Semaphore.attach(0x7FFFFFFE, trusted_uids=t), id="Semaphore.attach"),
    pytest.param(lambda t: Semaphore.open(0x7FFFFFFE, trusted_uids=t), id="Semaphore.open"),
    pytest.param(lambda t: Liveness.attach(semid=1, trusted_uids=t), id="Liveness.attach"),
    pytest.param(lambda t: Liveness.open(0x7FFFFFFE, 1, trusted_uids=t), id="Liveness.open"),
    pytest.param(lambda t: NamedSemaphore.open("/shmipc-test-none", trusted_uids=t), id="NamedSemaphore.open"),
]


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (1000, TypeError, re.escape("trusted_uids={1000}")),
        (True, TypeError, "single int"),
        ("1000", TypeError, "iterable"),
        (None, TypeError, "iterable"),
        ([1000, "x"], TypeError, "int uids"),
        ([1000.0], TypeError, "int uids"),
        ([False], TypeError, "int uids"),
        ([-1], ValueError, "not a uid"),
        ([2**32], ValueError, "not a uid"),
    ],
)
def test_trusted_uids_is_checked_before_anything_is_touched(call, bad, exc, match):
    with pytest.raises(exc, match=match):
        call(bad)


def test_normalize_trusted():
    from shmipc._trust import normalize_trusted

    assert normalize_trusted(()) == frozenset()
    assert normalize_trusted(iter([5, 5, 0])) == frozenset({0, 5})
    assert normalize_trusted({1000: "dict keys count"}) == frozenset({1000})
    frozen = frozenset({7})
    assert normalize_trusted(frozen) is frozen


def test_new_objects_are_0600_by_default(shm, objs):
    seg = shm.segment()
    assert seg.stat().mode == 0o600
    sem = Semaphore.create(0, objs.key())
    _leaks.register_sem(sem.semid)
    assert sem.stat().mode == 0o600
    live = Liveness.create(1, objs.key())
    _leaks.register_sem(live.semid)
    assert live.semaphore.stat().mode == 0o600
    name = objs.name()
    NamedSemaphore.create(name).close()
    assert os.stat(_sem_path(name)).st_mode & 0o777 == 0o600
