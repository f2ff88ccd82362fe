"""Figures 12 to 14: leaks over many cycles, permissions and hostile
setups, stale cleanup after a crash."""
from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import os
import signal
import time
from typing import Any, Dict, List, Optional, Tuple

from . import _harness as h
from ._harness import Row, Tier, row

# ---- 12: leaks ---------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cycle(i: int, name: str) -> None:
    """One create/attach/export/read/write/detach/remove round of every object."""
    from ..atomics import AtomicView
    from ..mailbox import Mailbox
    from ..mutex import RobustMutex
    from ..named_semaphore import NamedSemaphore
    from ..ring import Ring
    from ..segment import Segment
    from ..semaphore import Semaphore
    from ..shared_semaphore import SharedSemaphore

    seg = Segment.create(8192)
    try:
        other = Segment.attach(shmid=seg.shmid)
        view = memoryview(other)
        view[:8] = i.to_bytes(8, "little")
        assert seg.read(8) == view[:8].tobytes()
        seg.write(b"abc", offset=100)
        view.release()
        ro = Segment(seg.shmid, readonly=True)
        ro.read(16, 96)
        ro.detach()
        av = AtomicView(seg)
        av.store64(512, i)
        av.fetch_add64(512, 1)
        av.close()
        sem = SharedSemaphore.create(seg, 1024, 1)
        sem.acquire(0)
        sem.release()
        sem.close()
        mtx = RobustMutex.create(seg, 2048)
        with mtx:
            pass
        mtx.close()
        other.detach()
    finally:
        seg.remove()
        seg.detach()
    r = Ring.create(4096)
    try:
        r.put(b"x" * (i % 100))
        r.put_many([b"a", b"b"])
        r.get()
        r.get_many(4)
        with r.reserve(10) as buf:
            buf[:] = b"0123456789"
        with r.get_view() as v:
            bytes(v)
        r2 = Ring.attach(shmid=r.shmid)
        r2.detach()
    finally:
        r.remove()
        r.detach()
    box = Mailbox.create(64)
    try:
        box.send(b"m")
        box.recv()
        b2 = Mailbox.attach(shmid=box.shmid)
        b2.detach()
    finally:
        box.remove()
        box.detach()
    s = Semaphore.create(1)
    try:
        s.acquire(0, undo=True)
        s.release(undo=True)
        s.get_values()
    finally:
        s.remove()
    n = NamedSemaphore.create(name, 1)
    try:
        n.acquire(0)
        n.release()
    finally:
        n.unlink()
        n.close()


def fig_leaks(tier: Tier, tmp: str) -> List[Row]:
    cycles = tier.n(6000, 100_000)
    name = h.new_name("leak")
    warm = max(200, cycles // 10)
    for i in range(warm):
        _cycle(i, name)
    gc.collect()
    rss0, objs0 = _rss(), len(gc.get_objects())
    start = time.monotonic()
    for i in range(cycles):
        _cycle(i, name)
    elapsed = time.monotonic() - start
    gc.collect()
    rss1, objs1 = _rss(), len(gc.get_objects())
    growth = rss1 - rss0
    return [row(
        "12", "create/attach/export/read/write/detach/remove cycles (Segment, AtomicView, "
              "SharedSemaphore, RobustMutex, Ring, Mailbox, Semaphore, NamedSemaphore)",
        f"{cycles} cycles in {elapsed:.0f} s: RSS {growth / 1024:+.0f} KiB, tracked objects {objs1 - objs0:+d}",
        "RSS <= 1 MiB, objects +0", growth <= 1 << 20 and objs1 - objs0 <= 0,
        detail=f"RSS {rss0} -> {rss1}, gc objects {objs0} -> {objs1} (after {warm} warm-up cycles)",
    )]


# ---- 13: permissions and hostile setups ----------------------------------------------


def _unprivileged(wfd: int, shmids: Dict[str, int], semids: Dict[str, int], name: str) -> int:
    """As uid/gid 65534: try to use everything made with default modes."""
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    from ..liveness import Liveness
    from ..mailbox import Mailbox
    from ..named_semaphore import NamedSemaphore
    from ..ring import Ring
    from ..segment import Segment
    from ..semaphore import Semaphore

    tries: Dict[str, str] = {}

    def attempt(label: str, fn: Any) -> None:
        try:
            fn()
            tries[label] = "SUCCEEDED"
        except PermissionError:
            tries[label] = "PermissionError"
        except Exception as e:
            tries[label] = f"refused ({type(e).__name__})"

    for label, shmid in shmids.items():
        attempt(f"{label}: Segment attach rw", lambda: Segment(shmid))
        attempt(f"{label}: Segment attach ro", lambda: Segment(shmid, readonly=True))
    attempt("ring: Ring.attach", lambda: Ring.attach(shmid=shmids["ring"]))
    attempt("mailbox: Mailbox.attach", lambda: Mailbox.attach(shmid=shmids["mailbox"]))
    for label, semid in semids.items():
        attempt(f"{label}: acquire", lambda: Semaphore(semid).acquire(0))
        attempt(f"{label}: release", lambda: Semaphore(semid).release())
        attempt(f"{label}: read value", lambda: Semaphore(semid).value)
    attempt("liveness: is_alive", lambda: Liveness.attach(semid=semids["liveness"]).is_alive(0))
    attempt("liveness: register", lambda: Liveness.attach(semid=semids["liveness"]).register(0))
    attempt("named semaphore: open", lambda: NamedSemaphore.open(name))
    os.write(wfd, json.dumps(tries).encode())
    os.close(wfd)
    return 0


def _digest(seg: Any) -> Tuple[str, int, int, int]:
    info = seg.stat()
    return hashlib.sha256(memoryview(seg)).hexdigest(), info.mode, info.uid, info.ctime


def _squat_named(name: str) -> Dict[str, Any]:
    """In a child: NamedSemaphore.open of an empty file squatting the name."""
    from ..named_semaphore import NamedSemaphore

    res: Dict[str, Any] = {}
    try:
        NamedSemaphore.create(name, 0)
        res["create"] = "SUCCEEDED"
    except FileExistsError:
        res["create"] = "FileExistsError"
    except Exception as e:
        res["create"] = repr(e)
    return res


def _open_squatted(name: str, wfd: int) -> int:
    from ..named_semaphore import NamedSemaphore

    try:
        s = NamedSemaphore.open(name)
        s.acquire(0)
        out = "opened"
    except Exception as e:
        out = f"{type(e).__name__}"
    os.write(wfd, out.encode())
    return 0


def fig_permissions(tier: Tier, tmp: str) -> List[Row]:
    from ..errors import CorruptedError
    from ..mailbox import Mailbox
    from ..named_semaphore import NamedSemaphore
    from ..ring import Ring

    rows = []
    objs: List[Any] = []
    name = h.new_name("perm")
    nsem = None
    try:
        seg = h.segment(4096)
        r = h.ring(4096)
        box = h.mailbox(64)
        sem = h.semaphore(1)
        live = h.liveness(2)
        objs += [seg, r, box, sem, live]
        nsem = NamedSemaphore.create(name, 1)
        modes = {
            "Segment": seg.stat().mode, "Ring": r.segment.stat().mode, "Mailbox": box.segment.stat().mode,
            "Semaphore": sem.stat().mode, "Liveness": live.semaphore.stat().mode,
            "NamedSemaphore": os.stat(f"/dev/shm/sem.{name}").st_mode & 0o777,
        }
        wrong = {k: oct(v) for k, v in modes.items() if v != 0o600}
        rows.append(row("13", "default mode of every object kind", f"{len(modes) - len(wrong)}/{len(modes)} are 0600",
                        "all 0600", not wrong, detail=f"wrong: {wrong}" if wrong else ", ".join(modes)))

        rfd, wfd = os.pipe()
        child = h.Child(_unprivileged, wfd,
                        {"segment": seg.shmid, "ring": r.shmid, "mailbox": box.shmid},
                        {"semaphore": sem.semid, "liveness": live.semid}, name)
        os.close(wfd)
        data = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            data += chunk
        os.close(rfd)
        child.join(5)
        tries = json.loads(data or b"{}")
        succeeded = [k for k, v in tries.items() if v == "SUCCEEDED"]
        rows.append(row(
            "13", "uid 65534 (forked, privileges dropped) against default objects",
            f"{len(tries)} attempts: {len(succeeded)} succeeded",
            "0 succeed", bool(tries) and not succeeded and child.proc.exitcode == 0,
            detail=("succeeded: " + ", ".join(succeeded)) if succeeded else "; ".join(f"{k} -> {v}" for k, v in tries.items()),
        ))
    finally:
        if nsem is not None:
            try:
                nsem.unlink()
            except OSError:
                pass
            nsem.close()
        h.dispose(*objs)

    # Squatting: someone else made our key first.
    outcomes: List[str] = []
    bad: List[str] = []
    for label, owner, size in [("plain segment", None, 8192), ("plain segment chowned to 65534, mode 0666", 65534, 8192),
                               ("tiny segment", None, 64), ("random bytes", None, 8192)]:
        key = h.free_key()
        squat = h.segment(size, key, mode=0o600)
        try:
            if label == "random bytes":
                squat.write(os.urandom(size))
            if owner is not None:
                squat.chmod(0o666)
                squat.chown(owner, owner)
            before = _digest(squat)
            # Another uid's segment fails the owner check before its bytes are read.
            refused: type = CorruptedError if owner is None else PermissionError
            for what, fn, want in [
                ("Ring.create", lambda: Ring.create(4096, key), FileExistsError),
                ("Mailbox.create", lambda: Mailbox.create(64, key), FileExistsError),
                ("Ring.attach", lambda: Ring.attach(key), refused),
                ("Mailbox.attach", lambda: Mailbox.attach(key), refused),
            ]:
                try:
                    got = fn()
                    h.dispose(got)
                    outcome = "ACCEPTED"
                except Exception as e:
                    outcome = type(e).__name__
                outcomes.append(f"{label}: {what} -> {outcome}")
                if outcome != want.__name__:
                    bad.append(outcomes[-1])
            if _digest(squat) != before:
                bad.append(f"{label}: MODIFIED")
        finally:
            h.dispose(squat)
    rows.append(row(
        "13", "key squatted by a foreign segment: create -> FileExistsError, attach -> CorruptedError "
        "(PermissionError when another uid owns it)",
        f"{len(outcomes)} attempts on 4 squats: {len(outcomes) - len(bad)} refused as expected, "
        f"{sum('MODIFIED' in b for b in bad)} squats modified",
        "all refused, none modified", not bad, detail="; ".join(bad or outcomes[:4]),
    ))

    # A real ring under our key, but owned by another user.
    key = h.free_key()
    other = h.ring(4096, key)
    try:
        other.segment.chmod(0o666)
        other.segment.chown(65534, 65534)
        try:
            h.dispose(Ring.attach(key))
            verdict = "accepted (Ring.attach does not check the owner)"
        except Exception as e:
            verdict = f"refused ({type(e).__name__})"
    finally:
        h.dispose(other)
    rows.append(row("13", "a valid ring under our key owned by another uid (mode 0666)", verdict,
                    "info", None))

    # A squatted named semaphore: an empty file where sem_open expects a sem_t.
    sname = h.new_name("squat")
    path = f"/dev/shm/sem.{sname}"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    try:
        res = _squat_named(sname)
        rfd, wfd = os.pipe()
        child = h.Child(_open_squatted, sname, wfd)
        os.close(wfd)
        child.join(10)
        opened = os.read(rfd, 1000).decode()
        os.close(rfd)
        code = child.proc.exitcode
    finally:
        os.unlink(path)
    signum = -code if code is not None and code < 0 else None
    crashed = signum is not None
    outcome = f"killed by {signal.Signals(signum).name}" if signum is not None else opened or f"exit {code}"
    rows.append(row(
        "13", "named semaphore squatted by an empty /dev/shm file: create / open",
        f"create -> {res.get('create')}; open (in a child) -> {outcome}",
        "FileExistsError; clear error, no crash",
        res.get("create") == "FileExistsError" and not crashed and code == 0,
        detail="glibc's sem_open maps the file without checking its size; touching the sem_t "
               "past EOF raises SIGBUS" if crashed else "",
    ))
    return rows


# ---- 14: stale cleanup ---------------------------------------------------------------


def _participant(role: str, shmid_or_kind: Any, key: Optional[int], wfd: int) -> int:
    """Create (role "create") or attach ("attach") a ring/mailbox/segment, report, wait."""
    from ..mailbox import Mailbox
    from ..named_semaphore import NamedSemaphore
    from ..ring import Ring
    from ..segment import Segment

    if role == "create":
        kind = shmid_or_kind
        if kind == "ring":
            obj: Any = Ring.create(4096, key)
        elif kind == "mailbox":
            obj = Mailbox.create(64, key)
        elif kind == "named":
            NamedSemaphore.create(h.new_name("stale"), 0).close()
            os.write(wfd, b"0\n")
            h.wait_for_kill()
            return 0
        else:
            obj = Segment.create(4096, key)
            obj.write(b"somebody else's data")
        h.track_shm(obj.shmid)
        os.write(wfd, f"{obj.shmid}\n".encode())
    else:
        obj = Ring.attach(shmid=shmid_or_kind) if shmid_or_kind >= 0 else None
        os.write(wfd, b"attached\n")
    h.wait_for_kill()
    return 0


def _start(role: str, arg: Any, key: Optional[int] = None) -> Tuple[h.Child, str]:
    rfd, wfd = os.pipe()
    c = h.Child(_participant, role, arg, key, wfd)
    os.close(wfd)
    line = b""
    deadline = time.monotonic() + 10
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        chunk = os.read(rfd, 100)
        if not chunk:
            break
        line += chunk
    os.close(rfd)
    return c, line.decode().strip()


def fig_cleanup(tier: Tier, tmp: str) -> List[Row]:
    from ..cleanup import cleanup, cleanup_main
    from ..ring import Ring
    from ..segment import stat_segment

    def gone(shmid: int) -> bool:
        try:
            return stat_segment(shmid).marked_for_destruction
        except OSError:
            return True

    rings = tier.n(4, 20)
    children: List[h.Child] = []
    dead: Dict[int, str] = {}
    live: Dict[int, str] = {}
    foreign: Dict[int, str] = {}
    key = h.free_key()
    killed: List[h.Child] = []
    try:
        # Rings and mailboxes whose every participant will be killed.
        for i in range(rings):
            kind = "mailbox" if i % 4 == 3 else "ring"
            c, shmid = _start("create", kind, key if i == 0 else None)
            killed.append(c)
            dead[int(shmid)] = f"{kind} (creator + {'2 attached' if kind == 'ring' else 'no'} peers killed)"
            if kind == "ring":
                killed += [_start("attach", int(shmid))[0] for _ in range(2)]
        # Live participants: a ring whose creator died but a peer lives; a ring whose creator lives.
        c, shmid = _start("create", "ring")
        killed.append(c)
        live[int(shmid)] = "creator killed, an attached peer alive"
        children.append(_start("attach", int(shmid))[0])
        c, shmid = _start("create", "ring")
        children.append(c)
        live[int(shmid)] = "creator alive and attached"
        # Not ours to touch: a plain segment and a ring of another user, all participants dead.
        c, shmid = _start("create", "plain")
        killed.append(c)
        foreign[int(shmid)] = "plain segment (not shmipc)"
        c, shmid = _start("create", "ring")
        killed.append(c)
        foreign[int(shmid)] = "ring owned by uid 65534"
        other_uid = int(shmid)
        c, _ = _start("create", "named")
        killed.append(c)
        for c in killed:
            c.kill()
        h.join_all(killed, 10)
        from .. import _core

        _core.shm_set(other_uid, 65534, 65534, -1)
        restart_blocked = False
        try:
            h.dispose(Ring.create(4096, key))
        except FileExistsError:
            restart_blocked = True

        mine = set(dead) | set(live) | set(foreign)
        found = cleanup(dry_run=True)
        found_ids = {o.ident for o in found}
        others_found = [o for o in found if o.ident not in mine and o.kind != "named-semaphore"]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            cli_code = cleanup_main(["--dry-run"])
        cli_ok = cli_code == 0 and all(f" {s}" in buf.getvalue() for s in dead)
        prefix = f"/{h.NAME_PREFIX[:-1]}{os.environ.get('SHMIPC_RELIABILITY_ROOT', '')}-"
        removed = cleanup(select=lambda o: o.ident in mine or str(o.ident).startswith(prefix))
        removed_ids = {o.ident for o in removed if o.removed}
        named_removed = sum(1 for o in removed if o.kind == "named-semaphore" and o.removed)
        dead_removed = sum(1 for s in dead if s in removed_ids and gone(s))
        live_removed = sum(1 for s in live if s in found_ids or gone(s))
        foreign_removed = sum(1 for s in foreign if s in found_ids or gone(s))
        restart_ok = False
        try:
            r = h.ring(4096, key)
            r.put(b"back")
            restart_ok = Ring.attach(key).get(timeout=1) == b"back"
            h.dispose(r)
        except Exception:
            restart_ok = False
    finally:
        for c in children + killed:
            c.kill()
        h.join_all(children + killed, 10)
        from .. import _core

        for s in list(dead) + list(live) + list(foreign):
            try:
                _core.shm_remove(s)
            except OSError:
                pass
    return [
        row("14", "cleanup after every participant was killed (rings, mailboxes, a named semaphore)",
            f"removed {dead_removed}/{len(dead)} dead objects + {named_removed}/1 named semaphore; "
            f"{live_removed}/{len(live)} with live participants, {foreign_removed}/{len(foreign)} foreign touched",
            "100% dead, 0 live/foreign", dead_removed == len(dead) and named_removed == 1
            and live_removed == 0 and foreign_removed == 0 and cli_ok,
            detail=f"dry run listed {len(others_found)} stale object(s) of other runs on this machine (left alone); "
                   f"CLI dry run {'ok' if cli_ok else 'MISSED objects'}"),
        row("14", "restart after a crash (Ring.create on the same key)",
            f"before cleanup: {'FileExistsError' if restart_blocked else 'worked?'}; after: "
            f"{'works' if restart_ok else 'FAILS'} (no ipcrm)",
            "works without ipcrm", restart_blocked and restart_ok),
    ]
