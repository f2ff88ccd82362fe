"""shmipc.cleanup: removes the rings, mailboxes and named semaphores whose
participants are all dead, and nothing else.

Other runs share this machine, so every removing call is restricted with
``select`` to the objects the test made; the unrestricted form is only run
as a dry run.
"""
import multiprocessing
import os
import signal

import pytest

import shmipc
from shmipc import Mailbox, NamedSemaphore, Ring, Segment, _core
from shmipc.cleanup import cleanup_main

ctx = multiprocessing.get_context("fork")
WAIT = 10


def _make(conn, what, key):
    """Create *what* ("ring", "mailbox", "plain", "ring-detached"), report its
    shmid, then wait to be killed (or, for "ring-detached", detach first)."""
    if what in ("ring", "ring-detached"):
        obj = Ring.create(4096, key)
    elif what == "mailbox":
        obj = Mailbox.create(64, key)
    elif what in ("zeros-initialising", "zeros-0600"):
        # What a create killed between shmget() and its first store leaves
        # (in the mode it starts with), and a user's zeroed segment.
        mode = shmipc.segment.INITIALISING_MODE if what == "zeros-initialising" else 0o600
        obj = Segment(_core.shmget(_core.IPC_PRIVATE, 4096, _core.IPC_CREAT | _core.IPC_EXCL | mode))
    else:
        obj = Segment.create(4096, key)
        obj.write(b"not a shmipc object")
    conn.send(obj.shmid)
    if what == "ring-detached":
        obj.detach()
        conn.send("detached")
    signal.pause()


def _attach_and_wait(conn, shmid):
    ring = Ring.attach(shmid=shmid)
    conn.send("attached")
    signal.pause()
    ring.detach()


def _exit_at_once(conn, unused):
    conn.send("done")


def _start(target, *args):
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child,) + args)
    proc.start()
    assert parent.poll(WAIT), "child did not answer"
    return proc, parent


def _kill(proc, reap=True):
    os.kill(proc.pid, signal.SIGKILL)
    if reap:
        proc.join(WAIT)
        assert proc.exitcode == -signal.SIGKILL


def _made_by_dead_child(shm, what, key=None):
    proc, conn = _start(_make, what, key)
    shmid = conn.recv()
    shm.add(shmid)
    _kill(proc)
    return shmid


def _gone(shmid):
    try:
        info = shmipc.stat_segment(shmid)
    except OSError:
        return True
    return info.marked_for_destruction


def _only(*ids):
    return lambda obj: obj.ident in ids


def test_removes_rings_and_mailboxes_whose_participants_died(shm):
    ring_id = _made_by_dead_child(shm, "ring")
    box_id = _made_by_dead_child(shm, "mailbox")
    found = shmipc.cleanup(dry_run=True, select=_only(ring_id, box_id))
    assert sorted((o.kind, o.ident, o.removed) for o in found) == sorted(
        [("ring", ring_id, False), ("mailbox", box_id, False)]
    )
    assert not _gone(ring_id) and not _gone(box_id)  # a dry run removes nothing
    removed = shmipc.cleanup(select=_only(ring_id, box_id))
    assert sorted((o.ident, o.removed) for o in removed) == sorted([(ring_id, True), (box_id, True)])
    assert _gone(ring_id) and _gone(box_id)


def test_unrestricted_dry_run_finds_them(shm):
    ring_id = _made_by_dead_child(shm, "ring")
    found = shmipc.cleanup(dry_run=True)
    assert [o for o in found if o.ident == ring_id][0].kind == "ring"
    assert not any(o.removed for o in found)
    assert not _gone(ring_id)


def test_an_unreaped_zombie_counts_as_dead(shm):
    proc, conn = _start(_make, "ring", None)
    shmid = conn.recv()
    shm.add(shmid)
    _kill(proc, reap=False)
    try:
        state = "?"
        for _ in range(1000):  # the exiting process detaches, then turns zombie
            with open(f"/proc/{proc.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if shmipc.stat_segment(shmid).nattch == 0 and state == "Z":
                break
            multiprocessing.connection.wait([], 0.005)
        assert state == "Z"
        assert [o.ident for o in shmipc.cleanup(select=_only(shmid))] == [shmid]
        assert _gone(shmid)
    finally:
        proc.join(WAIT)


def test_keeps_a_ring_a_live_process_is_attached_to(shm):
    shmid = _made_by_dead_child(shm, "ring")
    proc, _conn = _start(_attach_and_wait, shmid)
    try:
        assert shmipc.stat_segment(shmid).nattch == 1
        assert shmipc.cleanup(select=_only(shmid)) == []
        assert not _gone(shmid)
    finally:
        _kill(proc)
    assert [o.ident for o in shmipc.cleanup(select=_only(shmid))] == [shmid]


def test_keeps_a_ring_whose_creator_lives(shm):
    proc, conn = _start(_make, "ring-detached", None)
    shmid = conn.recv()
    shm.add(shmid)
    try:
        assert conn.poll(WAIT) and conn.recv() == "detached"
        assert shmipc.stat_segment(shmid).nattch == 0
        assert shmipc.cleanup(select=_only(shmid)) == []
        assert not _gone(shmid)
    finally:
        _kill(proc)


def test_never_touches_segments_that_are_not_shmipc(shm):
    shmid = _made_by_dead_child(shm, "plain")
    before = shmipc.stat_segment(shmid)
    assert shmipc.cleanup(select=_only(shmid)) == []
    after = shmipc.stat_segment(shmid)
    assert not after.marked_for_destruction and after.ctime == before.ctime
    seg = shm.add(Segment(shmid))
    assert seg.read(19) == b"not a shmipc object"


def test_never_touches_other_users_objects(shm):
    shmid = _made_by_dead_child(shm, "ring")
    _core.shm_set(shmid, 65534, 65534, 0o600)
    assert shmipc.cleanup(select=_only(shmid)) == []
    assert not _gone(shmid)


def test_restart_after_a_crash_needs_no_ipcrm(shm, key):
    shmid = _made_by_dead_child(shm, "ring", key)
    with pytest.raises(FileExistsError):
        Ring.create(4096, key)
    assert [o.key for o in shmipc.cleanup(select=_only(shmid))] == [key]
    ring = Ring.create(4096, key)
    shm.add(ring.shmid)
    try:
        ring.put(b"again")
        assert Ring.attach(key).get(timeout=1) == b"again"
    finally:
        ring.remove()
        ring.detach()


def test_named_semaphores_of_dead_processes(shm):
    proc, _conn = _start(_exit_at_once, None)
    proc.kill()
    proc.join(WAIT)
    dead = f"shmipc-test-{proc.pid}-cleanup"
    live = f"shmipc-test-{os.getpid()}-cleanup"
    made = []
    try:
        for name in (dead, live):
            NamedSemaphore.create(name, 0).close()
            made.append(name)
        mine = lambda o: o.ident in ("/" + dead, "/" + live)  # noqa: E731
        found = shmipc.cleanup(select=mine)
        assert [(o.kind, o.ident, o.removed) for o in found] == [("named-semaphore", "/" + dead, True)]
        assert not os.path.exists(f"/dev/shm/sem.{dead}")
        assert os.path.exists(f"/dev/shm/sem.{live}")
    finally:
        for name in made:
            try:
                shmipc.unlink_semaphore(name)
            except FileNotFoundError:
                pass


def test_named_semaphore_still_open_is_kept(shm):
    proc, _conn = _start(_exit_at_once, None)
    proc.join(WAIT)
    name = f"shmipc-test-{proc.pid}-open"
    sem = NamedSemaphore.create(name, 0)  # open here: mapped by a live process
    try:
        assert shmipc.cleanup(select=lambda o: o.ident == "/" + name) == []
    finally:
        sem.close()
        sem.unlink()


def test_cleanup_main_dry_run(shm, capsys):
    shmid = _made_by_dead_child(shm, "mailbox")
    assert cleanup_main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would remove mailbox {shmid}" in out
    assert not _gone(shmid)
    assert cleanup_main(["--dry-run", "--json"]) == 0
    assert f'"ident": {shmid}' in capsys.readouterr().out
    shmipc.cleanup(select=_only(shmid))


def test_removes_a_create_killed_before_its_first_store_but_no_plain_zeros(shm):
    interrupted = _made_by_dead_child(shm, "zeros-initialising")
    plain = _made_by_dead_child(shm, "zeros-0600")
    found = shmipc.cleanup(select=_only(interrupted, plain))
    assert [(o.kind, o.ident, o.removed) for o in found] == [("interrupted-create", interrupted, True)]
    assert _gone(interrupted) and not _gone(plain)
