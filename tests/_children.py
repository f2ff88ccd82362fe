"""Child-process bodies for the multi-process segment tests.

They live in their own light module (no pytest, numpy only where needed) so
that a "spawn" child imports little.  Each one checks what it sees with
assert: a failure exits the child with code 1 and a traceback on stderr,
which the parent reports.  Waits on the parent are bounded, so a lost
message fails instead of hanging.
"""
from __future__ import annotations

import os

import _leaks  # noqa: F401  (records this process as part of the test run)
from shmipc import Segment, stat_segment

WAIT = 10.0


def expect(conn, what):
    if not conn.poll(WAIT):
        raise TimeoutError(f"child: parent never sent {what!r}")
    got = conn.recv()
    assert got == what, (got, what)


def round_trip(how, ref, conn):
    """Attach the parent's segment (by key, shmid, pickle), check, answer."""
    if how == "key":
        seg = Segment.attach(ref)
    elif how == "shmid":
        seg = Segment.attach(shmid=ref)
    elif how == "pickle-pipe":
        assert conn.poll(WAIT)
        seg = conn.recv()  # unpickling re-attaches here
    else:  # "pickle-arg": pickled by spawn, inherited as is by fork
        seg = ref
    assert isinstance(seg, Segment) and not seg.readonly and not seg.closed
    assert seg.read(4) == b"ping", seg.read(4)
    seg.write(b"pong", offset=100)
    conn.send((os.getpid(), seg.shmid, seg.stat().nattch))
    seg.detach()


def readonly_child(conn):
    seg = conn.recv() if conn.poll(WAIT) else None
    assert seg is not None, "no segment arrived"
    assert seg.readonly is True
    assert seg.read(4) == b"ping"
    try:
        seg.write(b"x")
    except TypeError:
        pass
    else:
        raise AssertionError("write() to a read-only attachment succeeded")
    with memoryview(seg) as view:
        assert view.readonly
    seg.detach()


def zero_copy_child(shmid, conn):
    import numpy

    seg = Segment.attach(shmid=shmid)
    arr = seg.ndarray(numpy.uint64)
    assert arr.ctypes.data == seg.address
    arr[:8] = numpy.arange(1000, 1008, dtype=numpy.uint64)  # written in place
    conn.send("written")
    expect(conn, "your turn")
    # the parent wrote through its own view; this existing view sees it
    assert int(arr[9]) == 0xC0FFEE, hex(int(arr[9]))
    del arr
    seg.detach()


def deferred_child(shmid, key, conn):
    seg = Segment.attach(shmid=shmid)
    conn.send("attached")
    expect(conn, "removed")
    info = seg.stat()
    assert info.marked_for_destruction and info.nattch == 1 and info.key == 0, info
    try:
        Segment.attach(key)
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("a removed segment was still found by key")
    seg.write(b"still usable")
    assert seg.read(12) == b"still usable"
    seg.detach()  # the last detach: the kernel destroys it now
    try:
        stat_segment(shmid)
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("segment survived its last detach")


def inherited_child(seg, parent_address, conn):
    # fork: the very same object, still attached at the same address
    assert not seg.closed and seg.address == parent_address
    assert seg.read(4) == b"ping"
    assert seg.stat().nattch == 2  # fork added an attachment
    seg.write(b"from the child")
    conn.send("written")
    expect(conn, "bye")
    seg.detach()  # this process's mapping only


def open_racer(key, size, go, conn):
    if not go.wait(WAIT):
        raise TimeoutError("no start signal")
    seg = Segment.open(key, size)
    conn.send((seg.created, seg.shmid))
    seg.detach()


def unprivileged(scenario, shmid, key):
    """Drop to nobody (65534) and check what the kernel allows."""
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    assert os.geteuid() == 65534
    # The segment is root's (or created by root): trust uid 0, so that what
    # is probed is the kernel's permission check, not the owner check.

    def denied(fn):
        try:
            fn()
        except PermissionError:
            return True
        return False

    if scenario == "0600":
        assert denied(lambda: Segment.attach(shmid=shmid, trusted_uids={0}))
        assert denied(lambda: Segment.attach(shmid=shmid, readonly=True, trusted_uids={0}))
        assert denied(lambda: Segment.attach(key, trusted_uids={0}))
        assert denied(lambda: Segment.open(key, 64, trusted_uids={0}))
        assert denied(lambda: stat_segment(shmid))
        assert denied(lambda: _set_mode(shmid, 0o666))
        assert denied(lambda: _remove(shmid))
        try:
            Segment.create(64, key)
        except FileExistsError:
            pass
        else:
            raise AssertionError("created a segment over an existing key")
        # /proc/sysvipc/shm is world-readable: segments() still lists it
        from shmipc import segments

        assert shmid in {s.shmid for s in segments()}
    elif scenario == "0644":
        ro = Segment.attach(shmid=shmid, readonly=True, trusted_uids={0})
        assert ro.read(4) == b"ping"
        assert stat_segment(shmid).mode == 0o644
        assert denied(lambda: Segment.attach(shmid=shmid, trusted_uids={0}))
        assert denied(lambda: _set_mode(shmid, 0o666))
        ro.detach()
    elif scenario == "0666":
        seg = Segment.attach(shmid=shmid, trusted_uids={0})
        seg.write(b"nobody was here")
        seg.detach()
    elif scenario == "chown":
        # the parent gave the segment to nobody: nobody is now its owner
        seg = Segment.attach(key, trusted_uids={0})
        seg.write(b"owned")
        seg.chmod(0o640)
        assert seg.stat().uid == 65534
        seg.detach()
    else:
        raise AssertionError(scenario)


def _set_mode(shmid, mode):
    from shmipc import _core

    _core.shm_set(shmid, -1, -1, mode)


def _remove(shmid):
    from shmipc import remove_segment

    remove_segment(shmid)
