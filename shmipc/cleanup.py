"""Find and remove shmipc objects whose every participant is dead.

A process killed while it owns a ring or a mailbox leaves the System V
segment behind (the kernel keeps a segment until ``IPC_RMID``), so a restart
that creates the same key fails with ``FileExistsError``.  :func:`cleanup`
removes such leftovers, and only them:

* **Rings and mailboxes** (System V segments).  A segment is stale when it
  belongs to the current user (owner and creator uid), nobody is attached
  (``nattch == 0``), its creator pid and last attach/detach pid are both
  dead (a zombie counts as dead), it is not already marked for destruction,
  and it starts with a Ring or Mailbox magic number (or the "initialising"
  mark a create writes first, left by a creator killed or interrupted
  before the object was ready), read through a read-only attach (nothing
  is written).  A segment still all zeros in the mode a Ring/Mailbox create
  starts with (``INITIALISING_MODE``, 0o611, a mode shmipc refuses to give
  anything else: its creator was killed between ``shmget`` and its first
  store) counts too, as "interrupted-create".  Segments of other users, segments
  with attached processes and segments that are not shmipc's are never
  touched.
* **Named POSIX semaphores** ``/dev/shm/sem.shmipc-*`` owned by the current
  user whose name carries a pid (the first all-digit part after
  ``shmipc-``, as ``shmipc-chat-<pid>-...``) that is dead, and that no
  process has open (mapped).  Names without a pid are left alone.
* **System V semaphore sets** (``Semaphore``, ``Liveness``) carry no marker
  that says they are shmipc's, and the kernel does not record their
  creator, so they are never touched; remove them with
  ``shmipc.remove_semaphore`` or ``ipcrm -s``.

There is a small window between the checks and the removal in which a new
process could attach a stale segment; it keeps working (removal is deferred
until its detach) but nobody new can attach it.  Run cleanup when the
application is down, or accept that window.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Set, Union

from . import _core
from .segment import INITIALISING_MODE, Segment, SegmentInfo, segments

__all__ = ["StaleObject", "cleanup", "cleanup_main"]

_MAGICS = {
    int.from_bytes(b"shmipcRG", "little"): "ring",
    int.from_bytes(b"shmipcMB", "little"): "mailbox",
    # What a create marks first: its creator died or was interrupted before
    # the object was ready (attach refuses these).
    int.from_bytes(b"shmipcRi", "little"): "ring",
    int.from_bytes(b"shmipcMi", "little"): "mailbox",
}
_SHM_DIR = "/dev/shm"
_SEM_PREFIX = "sem.shmipc-"


class StaleObject(NamedTuple):
    """One object :func:`cleanup` found stale."""

    kind: str  #: "ring", "mailbox", "interrupted-create" or "named-semaphore"
    ident: Union[int, str]  #: shmid, or the semaphore's name ("/shmipc-...")
    key: Optional[int]  #: the System V key (None for a named semaphore)
    detail: str  #: why it is stale
    removed: bool  #: False in a dry run, or if the removal failed


def _pid_dead(pid: int) -> bool:
    """True if *pid* is not a running process (gone or a zombie)."""
    if pid <= 0:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return True
    except OSError:
        return False  # cannot tell: assume alive
    state = stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3]
    return state in (b"Z", b"X")


def _stale_segment(info: SegmentInfo, uid: int) -> Optional[str]:
    """Why *info* may be a stale shmipc segment (None: it is not)."""
    if info.uid != uid or info.cuid != uid:
        return None
    if info.nattch != 0 or info.marked_for_destruction or info.size < 8:
        return None
    me = os.getpid()
    # Our own read-only peek of an earlier pass leaves lpid == our pid.
    for pid in {info.cpid, info.lpid} - {me}:
        if not _pid_dead(pid):
            return None
    return f"nattch 0, creator pid {info.cpid} and last pid {info.lpid} dead"


def _peek_magic(shmid: int) -> Optional[int]:
    """The first 8 bytes as a u64, read through a read-only attach (None if
    it cannot be attached)."""
    try:
        seg = Segment(shmid, readonly=True)
    except OSError:
        return None
    try:
        return int.from_bytes(seg.read(8, 0), "little")
    finally:
        seg.detach()


def _first_page_zero(shmid: int) -> bool:
    """True if the segment's first page (its whole header, if it is a Ring
    or Mailbox) was never written, read through a read-only attach."""
    try:
        seg = Segment(shmid, readonly=True)
    except OSError:
        return False
    try:
        return not any(seg.read(min(seg.size, _core.PAGE_SIZE), 0))
    finally:
        seg.detach()


def _mapped_inodes() -> Set[int]:
    """Inodes of every /dev/shm file some process has mapped (/proc/*/maps).

    By inode, not by path: glibc's ``sem_open`` maps a temporary file and
    then links it under the final name, so the creator's mapping shows the
    temporary (deleted) name.
    """
    found: Set[int] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps", "rb") as f:
                data = f.read()
        except OSError:
            continue
        for line in data.splitlines():
            if b" /dev/shm/" not in line:
                continue
            fields = line.split(None, 5)
            if len(fields) >= 5 and fields[4].isdigit():
                found.add(int(fields[4]))
    return found


_PID_PART = re.compile(r"^\d+$")


def _name_pid(name: str) -> Optional[int]:
    """The pid embedded in ``shmipc-<word>-...-<pid>-...`` (first all-digit part)."""
    for part in name[len(_SEM_PREFIX):].split("-"):
        if _PID_PART.match(part):
            return int(part)
    return None


def _candidates(uid: int) -> Iterator[StaleObject]:
    for info in segments():
        why = _stale_segment(info, uid)
        if why is None:
            continue
        magic = _peek_magic(info.shmid)
        if magic in _MAGICS:
            yield StaleObject(_MAGICS[magic], info.shmid, info.key, why, False)
        elif magic == 0 and info.mode & 0o777 == INITIALISING_MODE and _first_page_zero(info.shmid):
            # Killed between creating the segment and its first store.
            yield StaleObject("interrupted-create", info.shmid, info.key,
                              why + ", still in the mode a Ring/Mailbox create starts with", False)
    try:
        names = sorted(n for n in os.listdir(_SHM_DIR) if n.startswith(_SEM_PREFIX))
    except OSError:
        names = []
    if not names:
        return
    mapped = _mapped_inodes()
    for name in names:
        path = os.path.join(_SHM_DIR, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_uid != uid or st.st_ino in mapped:
            continue
        pid = _name_pid(name)
        if pid is None or not _pid_dead(pid):
            continue
        yield StaleObject("named-semaphore", "/" + name[len("sem."):], None,
                          f"pid {pid} in its name is dead, no process has it open", False)


def _remove(obj: StaleObject) -> bool:
    try:
        if obj.kind == "named-semaphore":
            os.unlink(os.path.join(_SHM_DIR, "sem." + str(obj.ident)[1:]))
            return True
        shmid = obj.ident
        if not isinstance(shmid, int):  # only named semaphores carry a name
            return False
        # Re-check right before removing: someone may have attached since.
        info = SegmentInfo(*_core.shm_stat(shmid))
        if info.key != obj.key or _stale_segment(info, os.geteuid()) is None:
            return False
        _core.shm_remove(shmid)
        return True
    except OSError:
        return False


def cleanup(dry_run: bool = False, *, select: Optional[Callable[[StaleObject], bool]] = None) -> List[StaleObject]:
    """Remove the shmipc objects of the current user whose participants are
    all dead (see the module documentation for the exact rules).

    Returns what was found, each with ``removed`` telling whether it was
    removed (always False with ``dry_run=True``).  *select*, if given,
    restricts the removal to the objects it returns True for (the others
    are not listed either).
    """
    uid = os.geteuid()
    out = []
    for obj in _candidates(uid):
        if select is not None and not select(obj):
            continue
        if not dry_run:
            obj = obj._replace(removed=_remove(obj))
        out.append(obj)
    return out


def cleanup_main(argv: Optional[Sequence[str]] = None) -> int:
    """``shmipc cleanup [--dry-run] [--json]``: exit 0, or 1 if a removal failed."""
    parser = argparse.ArgumentParser(
        prog="shmipc cleanup",
        description="Remove this user's shmipc rings, mailboxes and named semaphores whose "
        "participants are all dead (nobody attached, creator and last user gone).",
    )
    parser.add_argument("-n", "--dry-run", action="store_true", help="list what would be removed, remove nothing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    found = cleanup(dry_run=args.dry_run)
    failed = [o for o in found if not o.removed and not args.dry_run]
    if args.json:
        json.dump([o._asdict() for o in found], sys.stdout, indent=1)
        print()
    else:
        verb = "would remove" if args.dry_run else "removed"
        for o in found:
            state = verb if (o.removed or args.dry_run) else "FAILED to remove"
            key = f" key {o.key:#010x}" if o.key else ""
            print(f"{state} {o.kind} {o.ident}{key}: {o.detail}")
        if not found:
            print("nothing stale")
    return 1 if failed else 0
