"""Segments across real processes: fork and spawn round trips by key, id and
pickle; zero copy; deferred IPC_RMID; fork inheritance; permissions as an
unprivileged user; concurrent open().  Child bodies are in _children.py."""
from __future__ import annotations

import multiprocessing
import os

import pytest

import _children
import shmipc
from shmipc import Segment

CONTEXTS = ["fork", "spawn"]
JOIN = 15.0  # seconds; a deadlock fails the test instead of hanging it


@pytest.fixture
def procs():
    """Start children; at teardown none may be left running."""
    started = []

    def start(ctx, target, *args):
        proc = ctx.Process(target=target, args=args, daemon=True)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def finish(proc, timeout=JOIN):
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join(5)
        pytest.fail(f"child {proc.pid} ({proc.name}) did not finish within {timeout} s")
    assert proc.exitcode == 0, f"child failed with exit code {proc.exitcode} (traceback above in stderr)"


def recv(conn, timeout=JOIN):
    assert conn.poll(timeout), "child sent nothing"
    return conn.recv()


@pytest.mark.parametrize("how", ["key", "shmid", "pickle-pipe", "pickle-arg"])
@pytest.mark.parametrize("method", CONTEXTS)
def test_round_trip(shm, key, procs, method, how):
    ctx = multiprocessing.get_context(method)
    seg = shm.add(Segment.create(4096, key))
    seg.write(b"ping")
    ref = {"key": key, "shmid": seg.shmid, "pickle-pipe": None, "pickle-arg": seg}[how]
    parent_conn, child_conn = ctx.Pipe()
    proc = procs(ctx, _children.round_trip, how, ref, child_conn)
    if how == "pickle-pipe":
        parent_conn.send(seg)  # pickled by id; the child re-attaches
    pid, shmid, nattch = recv(parent_conn)
    finish(proc)
    assert pid == proc.pid and pid != os.getpid()
    assert shmid == seg.shmid
    # parent + child; a forked child also inherited the parent's mapping
    # (unless that inherited object is the one it used)
    assert nattch == (3 if method == "fork" and how != "pickle-arg" else 2)
    assert seg.read(4, offset=100) == b"pong"
    assert seg.stat().nattch == 1  # the child detached
    assert seg.stat().lpid == proc.pid


@pytest.mark.parametrize("method", CONTEXTS)
def test_pickled_readonly_attachment_stays_readonly(shm, seg, procs, method):
    ctx = multiprocessing.get_context(method)
    seg.write(b"ping")
    ro = shm.add(Segment.attach(shmid=seg.shmid, readonly=True))
    parent_conn, child_conn = ctx.Pipe()
    proc = procs(ctx, _children.readonly_child, child_conn)
    parent_conn.send(ro)
    finish(proc)
    assert seg.read(4) == b"ping"


@pytest.mark.parametrize("method", CONTEXTS)
def test_zero_copy_between_processes(seg, procs, method):
    np = pytest.importorskip("numpy")
    ctx = multiprocessing.get_context(method)
    arr = seg.ndarray(np.uint64)
    assert arr.ctypes.data == seg.address  # the array's memory IS the mapping
    parent_conn, child_conn = ctx.Pipe()
    proc = procs(ctx, _children.zero_copy_child, seg.shmid, child_conn)
    assert recv(parent_conn) == "written"
    # The child wrote through its own attachment; this array, made before,
    # sees the values without anything being copied or re-read.
    assert arr[:8].tolist() == list(range(1000, 1008))
    arr[9] = 0xC0FFEE
    parent_conn.send("your turn")
    finish(proc)
    del arr


def test_remove_is_deferred_until_the_last_detach(shm, key, procs):
    # spawn: a forked child would also hold an inherited mapping until exit
    ctx = multiprocessing.get_context("spawn")
    seg = shm.add(Segment.create(4096, key))
    parent_conn, child_conn = ctx.Pipe()
    proc = procs(ctx, _children.deferred_child, seg.shmid, key, child_conn)
    assert recv(parent_conn) == "attached"
    assert seg.stat().nattch == 2
    seg.remove()
    info = seg.stat()
    assert info.marked_for_destruction and info.nattch == 2
    shmid = seg.shmid
    seg.detach()
    info = shmipc.stat_segment(shmid)  # still there: the child is attached
    assert info.nattch == 1 and info.marked_for_destruction
    assert shmid in {s.shmid for s in shmipc.segments() if s.marked_for_destruction}
    parent_conn.send("removed")
    finish(proc)  # the child saw it vanish at its detach
    with pytest.raises(FileNotFoundError):
        shmipc.stat_segment(shmid)
    assert shmid not in {s.shmid for s in shmipc.segments()}


def test_fork_inherits_the_attachment(seg, procs):
    ctx = multiprocessing.get_context("fork")
    seg.write(b"ping")
    parent_conn, child_conn = ctx.Pipe()
    proc = procs(ctx, _children.inherited_child, seg, seg.address, child_conn)
    assert recv(parent_conn) == "written"
    assert seg.stat().nattch == 2
    assert seg.read(14) == b"from the child"
    parent_conn.send("bye")
    finish(proc)
    assert not seg.closed and seg.stat().nattch == 1  # the child's detach was its own
    seg.write(b"parent still fine")


def test_concurrent_open_creates_exactly_once(key, procs):
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    conns, children = [], []
    for _ in range(4):
        parent_conn, child_conn = ctx.Pipe()
        conns.append(parent_conn)
        children.append(procs(ctx, _children.open_racer, key, 8192, go, child_conn))
    go.set()
    results = [recv(conn) for conn in conns]
    for proc in children:
        finish(proc)
    assert sum(created for created, _ in results) == 1
    assert len({shmid for _, shmid in results}) == 1
    info = shmipc.stat_segment(results[0][1])
    assert info.size == 8192 and info.key == key and info.nattch == 0
    assert info.cpid in {proc.pid for proc in children}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another uid")
@pytest.mark.parametrize("scenario", ["0600", "0644", "0666", "chown"])
def test_permissions_as_an_unprivileged_user(shm, key, procs, scenario):
    ctx = multiprocessing.get_context("fork")
    mode = {"0600": 0o600, "0644": 0o644, "0666": 0o666, "chown": 0o600}[scenario]
    seg = shm.add(Segment.create(4096, key, mode=mode))
    seg.write(b"ping")
    if scenario == "chown":
        seg.chown(uid=65534)
    proc = procs(ctx, _children.unprivileged, scenario, seg.shmid, key)
    finish(proc)
    info = seg.stat()
    if scenario == "0666":
        assert seg.read(15) == b"nobody was here"
    elif scenario == "chown":
        assert seg.read(5) == b"owned" and info.mode == 0o640 and info.uid == 65534
    else:
        assert seg.read(4) == b"ping" and info.mode == mode  # nothing changed
    assert info.cuid == 0 and not info.marked_for_destruction
