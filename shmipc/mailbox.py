"""Mailbox: the seed's one-slot handoff as a reusable object, and a
latest-value variant.

Handoff mode (default) is the classic pattern: a writer waits until the slot
may be written, fills it, and lets it be read; a reader waits until it may be
read, empties it, and lets it be written.  Latest-value mode
(``overwrite=True``) never blocks the writer: it replaces the value, and
readers get the newest complete one (a sequence lock over two buffers: never
a torn value).

Shared layout, version 2 (native byte order, offsets from the segment start).
Every word is a plain integer: nothing read from the segment is ever used as
an address, and every value is copied once, checked, and only the copy used::

    offset size  field
    0      8     magic          b"shmipcMB" as a u64, written last at init;
                                b"shmipcMi" while the creator initialises
    8      4     layout version MAILBOX_VERSION (2)
    12     4     header size    HEADER_SIZE (slots start here)
    16     8     max_size       largest message, bytes
    24     4     mode           0 = handoff, 1 = latest value
    28     4     closed         1 once close() was called
    32     4     removed        1 once remove() was called (then every bell rings)
    64     4     may write      handoff: u32 semaphore, 1 while the slot is free
    68     4     write bell     handoff: futex word bumped when "may write" is posted
    72     4     may read       handoff: u32 semaphore, 1 while a message waits
    76     4     read bell      handoff: futex word bumped when "may read" is posted
    80     8     slot owner     handoff: pid | role << 32 of the last slot holder
                                (role 1 writer, 2 reader); read only for repair
    88     4     write sleepers handoff: writers asleep on the write bell (advisory)
    92     4     read sleepers  handoff: readers asleep on the read bell (advisory)
    128    8     slot lock      handoff: FutexLock held while taking and posting
    192    8     writer lock    latest value: FutexLock, one writer at a time
    256    8     sequence       latest value: 2 per write; odd while writing
    264    4     readers asleep latest value: readers waiting (advisory)
    268    4     value bell     latest value: futex word bumped after a write
    512    ...   slots          handoff: one slot; latest value: two slots
    slot = 8-byte length, then max_size bytes (rounded up to 8)

Handoff semaphores.  "may write" and "may read" are u32 counters whose sum is
1 whenever the slot lock is free: a sender takes "may write" (1 -> 0),
fills the slot and posts "may read" (0 -> 1); a receiver the reverse.  Both
take and post happen under the slot lock, a :class:`~shmipc._core.FutexLock`
whose hold is recorded in the C call that takes it, so an exception at any
bytecode (a signal handler's, KeyboardInterrupt) never leaves the lock held
(calls: acquire inside ``try``/``finally``; ``send_view``/``recv_view``:
``LockedBlock``, whose C ``__exit__`` gives the lock back).  Before taking,
the holder records itself in "slot owner"; whoever next takes the lock and
finds both counters 0 knows the previous holder left between its take and
its post -- it died (the lock was taken over from it) or an exception
interrupted it -- and gives back what "slot owner" says was taken: a
writer's half-written message is dropped, a reader's message is delivered
again.  Repair is a plain store under the lock, so it is idempotent.
Counters that no crash can produce (either above 1, both 1, both 0 with no
valid owner role) are not clamped: the call raises CorruptedError and
modifies nothing.  Waiters sleep on the bells (futex words of their own, so
that close() and remove() can wake them without posting), in slices of
``_WAIT_SLICE`` seconds, and look under the lock when the counters say the
slot is ready or in flight.

Commit points.  A send is committed by the store that posts "may read", a
receive by the store that posts "may write".  An exception raised after that
store (a signal handler runs after every call returns) still propagates: a
send that raised may have been delivered, a recv that raised after its
commit consumed the message (lost to the caller).  Before the commit point
an exception leaves the message where it was (send: not sent; recv: still
queued).  Nothing is duplicated.

Latest value.  The writer lock is a FutexLock: a writer that died holding it
is taken over within ~20 ms, and an odd sequence it (or a writer interrupted
by an exception) left is closed out by the next writer.  Readers check the
sequence around each copy and retry; every retry loop watches the deadline.

Trust.  A peer with write access to the segment may forge or drop messages,
or make calls raise CorruptedError, TimeoutError, EndOfStream or
RemovedError; it cannot crash this process, make a call outlast its timeout
(beyond one wait slice), or make this process write outside the segment.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any, Iterable, Optional, Tuple, Type

from . import _core
from .atomics import AtomicView
from .errors import CorruptedError, EndOfStream, RemovedError
from .segment import Segment, abandon_forked_views

__all__ = ["Mailbox", "MAILBOX_VERSION"]

MAILBOX_MAGIC = int.from_bytes(b"shmipcMB", "little")
MAILBOX_INIT_MAGIC = int.from_bytes(b"shmipcMi", "little")  # creator still initialising
MAILBOX_VERSION = 2
HEADER_SIZE = 512

OFF_MAGIC = 0
OFF_VERSION = 8
OFF_HEADER_SIZE = 12
OFF_MAX_SIZE = 16
OFF_MODE = 24
OFF_CLOSED = 28
OFF_REMOVED = 32
OFF_MAY_WRITE = 64
OFF_WRITE_BELL = 68
OFF_MAY_READ = 72
OFF_READ_BELL = 76
OFF_OWNER = 80
OFF_WRITE_SLEEPERS = 88
OFF_READ_SLEEPERS = 92
OFF_SLOT_LOCK = 128
OFF_WRITER_LOCK = 192
OFF_SEQUENCE = 256
OFF_READERS_WAITING = 264
OFF_DOORBELL = 268  # the latest-value bell
_BELLS = (OFF_WRITE_BELL, OFF_READ_BELL, OFF_DOORBELL)

MODE_HANDOFF = 0
MODE_LATEST = 1
_ROLE_WRITER = 1
_ROLE_READER = 2

_WAIT_SLICE = 0.05
_SETTLE_LIMIT = 1.0  # latest value, no deadline: a sequence unsettled this long is corrupted
_ATTACH_WAIT = 1.0  # attach(): how long to wait for a creator to finish initialising
_SEQ_LIMIT = 1 << 63  # a latest-value sequence at or past this is corrupted
_SLOT = HEADER_SIZE  # handoff: the slot's length word; its bytes follow
_monotonic = time.monotonic


# os.getpid() is a system call (~0.2 µs here) and the slot owner is
# recorded on every send and recv: the pid is cached, and refreshed in a
# child after os.fork() (and so after multiprocessing's fork).  A fork() made
# in C without Python's fork hooks would record the parent's pid here; the
# pid is only informative (the slot lock, not the pid, detects dead holders).
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def _slot_stride(max_size: int) -> int:
    return 8 + ((max_size + 7) & ~7)


def _pid_alive(pid: int) -> bool:
    """True while *pid* runs; a zombie (killed, not yet reaped) counts as dead."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    # The state letter follows the command name, which ends at the last ')'.
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] not in (b"Z", b"X")


def _discard(seg: Segment) -> None:
    """Remove and detach a segment whose mailbox could not be set up."""
    try:
        seg.remove()
    except OSError:
        pass
    try:
        seg.detach()
    except BufferError:
        pass  # removed already: the kernel frees it when the last export dies


def _drop_view(view: Any, window: Any) -> bool:
    """Release a block's view and window; True if a buffer made from it lives on."""
    alive = False
    if view is not None:
        try:
            view.release()
        except BufferError:
            alive = True
    if window is not None and not window.release():
        alive = True
    return alive


class Mailbox:
    """A one-message slot shared between processes.

    ``Mailbox.create(max_size)``; ``send(data, timeout=None)`` and
    ``recv(timeout=None)``; pickles by reference.  ``overwrite=True`` makes a
    latest-value mailbox: ``send`` never blocks and replaces the value,
    ``recv`` returns the newest value newer than the last one this object
    received (``missed`` tells how many it skipped), ``latest()`` the newest
    without waiting.

    One object may be shared by the threads of a process.  Lifetime:
    ``detach()`` once per process, ``remove()`` once overall.
    """

    _seg: Any = None
    _av: Any = None
    _slot_lock: Any = None  # handoff
    _writer_lock: Any = None  # latest value

    # ---- construction ----------------------------------------------------
    @classmethod
    def create(cls, max_size: int, key: Optional[int] = None, *, mode: int = 0o600,
               overwrite: bool = False) -> "Mailbox":
        if isinstance(max_size, bool) or not isinstance(max_size, int):
            raise TypeError(f"max_size must be an int, not {type(max_size).__name__}")
        if max_size < 0:
            raise ValueError("max_size must not be negative")
        slots = 2 if overwrite else 1
        # Marked "initialising" in the call that creates it: a creator
        # interrupted from here on leaves a segment cleanup() recognises.
        seg = Segment._create_marked(HEADER_SIZE + slots * _slot_stride(max_size), key, mode,
                                     MAILBOX_INIT_MAGIC)
        try:
            av = AtomicView(seg)
            try:
                av.store32(OFF_VERSION, MAILBOX_VERSION)
                av.store32(OFF_HEADER_SIZE, HEADER_SIZE)
                av.store64(OFF_MAX_SIZE, max_size)
                av.store32(OFF_MODE, MODE_LATEST if overwrite else MODE_HANDOFF)
                av.store32(OFF_MAY_WRITE, 0 if overwrite else 1)
                av.store64_seq_cst(OFF_MAGIC, MAILBOX_MAGIC)
            finally:
                av.close()
            seg.chmod(mode)  # others may attach (see Segment._create_marked)
            box = cls._from_segment(seg)
        except BaseException:
            _discard(seg)
            raise
        seg._keep()  # last: the create is done
        return box

    @classmethod
    def attach(cls, key: Optional[int] = None, *, shmid: Optional[int] = None,
               trusted_uids: Iterable[int] = ()) -> "Mailbox":
        """Attach an existing mailbox by *key* or *shmid* (exactly one).

        ``PermissionError`` if another user owns or created it, unless that
        uid is in *trusted_uids*; :class:`~shmipc.CorruptedError` if it is
        not a mailbox of this layout version."""
        seg = Segment.attach(key, shmid=shmid, trusted_uids=trusted_uids)
        try:
            return cls._from_segment(seg)
        except BaseException:
            try:
                seg.detach()
            except BufferError:
                pass
            raise

    @classmethod
    def _from_segment(cls, seg: Segment) -> "Mailbox":
        box = cls.__new__(cls)
        box._seg = seg
        try:
            box._bind(seg)
        except BaseException:
            box._release()
            box._seg = None
            raise
        return box

    def _bind(self, seg: Segment) -> None:
        if seg.size < HEADER_SIZE + 8:
            raise CorruptedError(f"segment {seg.shmid} is too small to be a shmipc mailbox")
        av = self._av = AtomicView(seg)
        deadline = _monotonic() + _ATTACH_WAIT
        magic = av.load64(OFF_MAGIC)
        while magic in (0, MAILBOX_INIT_MAGIC) and _monotonic() < deadline:
            time.sleep(0.001)
            magic = av.load64(OFF_MAGIC)
        if magic in (0, MAILBOX_INIT_MAGIC):
            cpid = seg.stat().cpid
            state = "still running" if _pid_alive(cpid) else "no longer running"
            raise CorruptedError(
                f"segment {seg.shmid} is a mailbox its creator (pid {cpid}, {state}) never finished "
                f"initialising; `shmipc cleanup` removes it once the creator is dead"
            )
        if magic != MAILBOX_MAGIC:
            raise CorruptedError(f"segment {seg.shmid} is not a shmipc mailbox (bad magic {magic:#x})")
        version = av.load32(OFF_VERSION)
        if version != MAILBOX_VERSION:
            raise CorruptedError(
                f"segment {seg.shmid} holds mailbox layout version {version}; this shmipc speaks {MAILBOX_VERSION}"
            )
        max_size = av.load64(OFF_MAX_SIZE)
        mode = av.load32(OFF_MODE)
        slots = 2 if mode == MODE_LATEST else 1
        if (
            av.load32(OFF_HEADER_SIZE) != HEADER_SIZE
            or mode not in (MODE_HANDOFF, MODE_LATEST)
            or max_size > seg.size
            or HEADER_SIZE + slots * _slot_stride(max_size) > seg.size
        ):
            raise CorruptedError(f"mailbox header of segment {seg.shmid} is corrupted")
        self.max_size = max_size
        self.overwrite = mode == MODE_LATEST
        self._stride = _slot_stride(max_size)
        self._open_lock()
        self._bound_pid = os.getpid()
        self._seen = 0  # latest value: the sequence of the last value received
        self.missed = 0  #: latest value: values skipped before the last recv()

    def _open_lock(self) -> None:
        if self.overwrite:
            lock = self._writer_lock = _core.FutexLock(self._seg, OFF_WRITER_LOCK)
            calls: Tuple[str, ...] = ("send",)
        else:
            lock = self._slot_lock = _core.FutexLock(self._seg, OFF_SLOT_LOCK)
            calls = ("send", "recv")
        if sys.version_info < (3, 11):
            # CPython 3.9/3.10 can skip a Python-level release when a signal
            # handler raises at an exception handler's entry: the calls run
            # under guard(), which gives back in C a hold they left (see the
            # note above Ring's _GUARD_CALLS).
            for name in calls:
                setattr(self, name, functools.partial(lock.guard, getattr(type(self), name).__get__(self)))

    # ---- attributes ----------------------------------------------------
    def _segment(self) -> Segment:
        if self._seg is None:
            raise ValueError("operation on a detached mailbox")
        return self._seg

    @property
    def shmid(self) -> int:
        return self._segment().shmid

    @property
    def key(self) -> int:
        return self._segment().key

    @property
    def segment(self) -> Segment:
        """The underlying :class:`~shmipc.Segment`."""
        return self._segment()

    @property
    def closed(self) -> bool:
        self._segment()
        return bool(self._av.load32(OFF_CLOSED))

    @property
    def sequence(self) -> int:
        """Latest value: how many values were ever sent."""
        self._segment()
        return self._av.load64(OFF_SEQUENCE) >> 1

    # ---- helpers ---------------------------------------------------------
    @staticmethod
    def _deadline(timeout: Optional[float]) -> Optional[float]:
        """The monotonic deadline of *timeout* seconds (None: no deadline).

        A timeout too large for a float (``10**400``), or infinite, waits for
        ever, as the C calls do."""
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be None or a number, not {type(timeout).__name__}")
        try:
            seconds = float(timeout)
        except OverflowError:
            if timeout < 0:
                raise ValueError("timeout must be None or a non-negative number") from None
            return None
        if seconds != seconds or seconds < 0:
            raise ValueError("timeout must be None or a non-negative number")
        if seconds == float("inf"):
            return None
        return _monotonic() + seconds

    @staticmethod
    def _slice(deadline: Optional[float]) -> float:
        """The next wait: one slice, or what is left of the deadline (>= 0)."""
        if deadline is None:
            return _WAIT_SLICE
        return max(0.0, min(_WAIT_SLICE, deadline - _monotonic()))

    def _check_removed(self) -> None:
        try:
            info = _core.shm_stat(self._seg.shmid)
        except FileNotFoundError:
            raise RemovedError("the mailbox's segment was removed") from None
        if info[14]:
            raise RemovedError("the mailbox's segment was removed (IPC_RMID)")

    def _check_removed_word(self) -> None:
        """RemovedError once remove() set the "removed" word (checked with
        the kernel, so a forged word is CorruptedError, not RemovedError)."""
        if self._av.load32(OFF_REMOVED):
            self._check_removed()
            raise CorruptedError("the mailbox's 'removed' word is set, but its segment was not removed")

    def _acquire(self, lock: Any, deadline: Optional[float], what: str) -> int:
        """Take *lock* before *deadline*, in slices that watch for removal:
        1, or 2 if taken from a holder that died.  Call inside the ``try``
        whose ``finally`` releases it."""
        while True:
            got = lock.acquire(self._slice(deadline))
            if got:
                return int(got)
            self._check_removed_word()
            if deadline is not None and _monotonic() >= deadline:
                raise TimeoutError(f"timed out waiting {what}")
            self._check_removed()

    def _check_len(self, n: int) -> None:
        if n > self.max_size:
            raise ValueError(f"message of {n} bytes does not fit: max_size is {self.max_size}")

    # ---- handoff: the slot semaphores -----------------------------------
    def _take(self, role: int, deadline: Optional[float], what: str) -> None:
        """Take the slot for *role*: on return this thread holds the slot
        lock and has taken "may write" (writer) or "may read" (reader).

        Call inside the ``try`` whose ``finally`` releases the slot lock (or
        from a LockedBlock's ``_enter``): an exception at any point leaves
        the lock free and at worst the semaphore taken, which the next
        holder repairs from "slot owner"."""
        self._segment()
        av = self._av
        lock = self._slot_lock
        if role == _ROLE_WRITER:
            mine, theirs, bell, sleepers = OFF_MAY_WRITE, OFF_MAY_READ, OFF_WRITE_BELL, OFF_WRITE_SLEEPERS
        else:
            mine, theirs, bell, sleepers = OFF_MAY_READ, OFF_MAY_WRITE, OFF_READ_BELL, OFF_READ_SLEEPERS
        while True:
            sleep = True
            # Sleep only while the slot plainly belongs to the other side;
            # otherwise look under the lock: ready for us, in flight (both
            # 0: held, or left by a holder to repair), or values to report.
            if av.load32(mine) != 0 or av.load32(theirs) != 1:
                got = lock.acquire(self._slice(deadline))
                if got:
                    if self._claim(role, mine):
                        return
                    lock.release()
                else:
                    sleep = False  # the slice went by waiting for the lock
            if av.load32(OFF_CLOSED):
                raise EndOfStream("the mailbox was closed")
            self._check_removed_word()
            wait = self._slice(deadline)
            if deadline is not None and wait <= 0:
                raise TimeoutError(f"timed out waiting to {what}")
            if not sleep:
                self._check_removed()
                continue
            # Say we sleep, then read the bell, then look once more: a
            # poster stores its post before it reads "sleepers", so either
            # it rings after our read or we see its post.  (Advisory: an
            # exception between the two adds leaves one extra wake-up call
            # per post, never a lost one.)
            av.fetch_add32(sleepers, 1)
            try:
                ring = av.load32(bell)
                if av.load32(mine) == 0 and av.load32(theirs) == 1 and not av.wait32(bell, ring, wait):
                    self._check_removed()
            finally:
                av.fetch_add32(sleepers, -1)

    def _claim(self, role: int, mine: int) -> bool:
        """Under the slot lock: repair a slot its last holder left in flight,
        check the semaphores, record the owner, take *mine*.  False if the
        slot is not ready for *role*."""
        av = self._av
        may_write = av.load32(OFF_MAY_WRITE)
        may_read = av.load32(OFF_MAY_READ)
        if may_write == 0 and may_read == 0:
            # The last holder left between its take and its post: it died
            # (we took the lock over from it) or an exception interrupted it.
            owner_role = av.load64(OFF_OWNER) >> 32
            if owner_role == _ROLE_WRITER:
                may_write = 1  # its half-written message is dropped
                av.store32_seq_cst(OFF_MAY_WRITE, 1)
                av.wake32(OFF_WRITE_BELL)
            elif owner_role == _ROLE_READER:
                may_read = 1  # its message is delivered again
                av.store32_seq_cst(OFF_MAY_READ, 1)
                av.wake32(OFF_READ_BELL)
            else:
                raise CorruptedError(f"mailbox slot is in flight with no valid owner (role {owner_role})")
        elif may_write + may_read != 1:
            raise CorruptedError(
                f"mailbox slot semaphores hold impossible values (may write {may_write}, may read {may_read})"
            )
        if not (may_write if mine == OFF_MAY_WRITE else may_read):
            return False
        av.store64(OFF_OWNER, _pid | role << 32)
        return bool(av.compare_exchange32(mine, 1, 0))

    def _post(self, off: int, bell: int) -> None:
        """Under the slot lock: post a semaphore (the commit point), then
        ring its bell if someone said it sleeps on it (a system call saved
        per message otherwise; both seq_cst, against _take's two)."""
        av = self._av
        av.store32_seq_cst(off, 1)
        if av.load32(OFF_WRITE_SLEEPERS if bell == OFF_WRITE_BELL else OFF_READ_SLEEPERS):
            av.wake32(bell)

    def _read_handoff_length(self) -> int:
        n = self._av.load64(_SLOT)
        if n > self.max_size:
            # Give the message back (it stays queued) and report it.
            self._post(OFF_MAY_READ, OFF_READ_BELL)
            raise CorruptedError(f"mailbox slot holds a length of {n} bytes, more than max_size {self.max_size}")
        return n

    # ---- handoff ---------------------------------------------------------
    def send(self, data: Any, timeout: Optional[float] = None) -> None:
        """Put *data* in the slot: waits until the slot is free (handoff) or
        replaces the value (latest value)."""
        self._segment()
        view = memoryview(data).cast("B") if type(data) is not bytes else data
        n = len(view)
        self._check_len(n)
        if self.overwrite:
            self._send_latest(view, n, timeout)
            return
        deadline = self._deadline(timeout)
        lock = self._slot_lock
        try:
            self._take(_ROLE_WRITER, deadline, "send")
            self._av.store64(_SLOT, n)
            self._seg.write(view, _SLOT + 8)
            self._post(OFF_MAY_READ, OFF_READ_BELL)
            lock.release()  # inside the try: see ring._UNLOCK_NOTE (3.9/3.10)
        except BaseException:
            lock.release()
            raise

    def recv(self, timeout: Optional[float] = None) -> bytes:
        """Take the message: waits for one (handoff), or for a value newer
        than the last one received (latest value)."""
        self._segment()
        if self.overwrite:
            return self._recv_latest(timeout)
        deadline = self._deadline(timeout)
        lock = self._slot_lock
        try:
            self._take(_ROLE_READER, deadline, "receive")
            data = self._seg.read(self._read_handoff_length(), _SLOT + 8)
            self._post(OFF_MAY_WRITE, OFF_WRITE_BELL)
            lock.release()  # inside the try: see ring._UNLOCK_NOTE (3.9/3.10)
        except BaseException:
            lock.release()
            raise
        return data

    def send_view(self, nbytes: int, timeout: Optional[float] = None) -> "_SlotWrite":
        """Zero-copy send: ``with box.send_view(n) as buf: buf[:] = ...``
        (committed when the block exits normally).  The slot is taken when
        the block starts (TimeoutError is raised there); buffers made from
        ``buf`` must not outlive the block (BufferError, message not sent)."""
        if self.overwrite:
            raise ValueError("send_view() is for handoff mailboxes; latest-value send() is already one copy")
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError("nbytes must be a non-negative int")
        self._segment()
        self._check_len(nbytes)
        return _SlotWrite(self, nbytes, self._deadline(timeout))

    def recv_view(self, timeout: Optional[float] = None) -> "_SlotRead":
        """Zero-copy receive: ``with box.recv_view() as view: ...``; the
        message is taken when the block starts and the slot freed when it
        exits (delete derived arrays inside it: BufferError otherwise, and
        the message stays in the mailbox)."""
        if self.overwrite:
            raise ValueError("recv_view() is for handoff mailboxes")
        self._segment()
        return _SlotRead(self, self._deadline(timeout))

    # ---- latest value ----------------------------------------------------
    def _send_latest(self, view: Any, n: int, timeout: Optional[float]) -> None:
        deadline = self._deadline(timeout)
        lock = self._writer_lock
        av = self._av
        try:
            self._acquire(lock, deadline, "for the mailbox's writer lock")
            raw = av.load64(OFF_SEQUENCE)
            seq = raw & ~1
            if seq >= _SEQ_LIMIT:  # 2**62 sends take a century: only corruption gets here
                raise CorruptedError(f"mailbox sequence {raw:#x} is corrupted (past 2**63)")
            if raw & 1:
                # A writer died mid-write (the lock was taken over from it) or
                # an exception interrupted one: close its write out.  Readers
                # never used that slot; doing this twice changes nothing.
                av.store64_seq_cst(OFF_SEQUENCE, seq)
            av.store64_seq_cst(OFF_SEQUENCE, seq + 1)  # odd: writing the other slot
            slot = HEADER_SIZE + (((seq >> 1) + 1) & 1) * self._stride
            av.store64(slot, n)
            self._seg.write(view, slot + 8)
            av.store64_seq_cst(OFF_SEQUENCE, seq + 2)  # the commit point
            if av.load32(OFF_READERS_WAITING):
                av.wake32(OFF_DOORBELL)
            lock.release()  # inside the try: see ring._UNLOCK_NOTE (3.9/3.10)
        except BaseException:
            lock.release()
            raise

    def _read_latest(self, deadline: Optional[float]) -> Tuple[int, Optional[bytes]]:
        """The newest complete value and its sequence (0, None if none yet).

        Retries while writers move the sequence: until *deadline*
        (TimeoutError), or without one for _SETTLE_LIMIT seconds
        (CorruptedError)."""
        av = self._av
        seg = self._seg
        give_up = None
        while True:
            raw = av.load64(OFF_SEQUENCE)
            if raw >= _SEQ_LIMIT:
                raise CorruptedError(f"mailbox sequence {raw:#x} is corrupted (past 2**63)")
            seq = raw & ~1
            if seq == 0:
                return 0, None
            slot = HEADER_SIZE + ((seq >> 1) & 1) * self._stride
            n = av.load64(slot)
            data = seg.read(n, slot + 8) if n <= self.max_size else None
            _core.fence()
            if av.load64(OFF_SEQUENCE) - seq < 3:  # nobody started rewriting that slot
                if data is None:
                    raise CorruptedError(f"mailbox value length {n} exceeds max_size {self.max_size}")
                return seq >> 1, data
            now = _monotonic()
            if deadline is not None:
                if now >= deadline:
                    raise TimeoutError("timed out: the mailbox's value kept changing while it was read")
            elif give_up is None:
                give_up = now + _SETTLE_LIMIT
            elif now >= give_up:
                raise CorruptedError("mailbox sequence never settles (a writer is stuck or the header is corrupted)")

    def latest(self) -> Optional[bytes]:
        """Latest value: the newest value without waiting (None if none yet)."""
        self._segment()
        if not self.overwrite:
            raise ValueError("latest() is for latest-value mailboxes (overwrite=True)")
        seq, data = self._read_latest(None)
        if data is not None:
            self.missed = max(0, seq - self._seen - 1)
            self._seen = seq
        return data

    def _recv_latest(self, timeout: Optional[float]) -> bytes:
        deadline = self._deadline(timeout)
        self._segment()
        av = self._av
        while True:
            self._check_removed_word()
            if (av.load64(OFF_SEQUENCE) >> 1) > self._seen:
                seq, data = self._read_latest(deadline)
                if data is not None and seq > self._seen:
                    self.missed = seq - self._seen - 1
                    self._seen = seq
                    return data
            if av.load32(OFF_CLOSED):
                raise EndOfStream("the mailbox was closed")
            wait = self._slice(deadline)
            if deadline is not None and wait <= 0:
                raise TimeoutError("timed out waiting for a newer value")
            # The counter is advisory (it only spares writers a wake-up
            # call): an exception between its two updates leaves it off by
            # one, which costs writers a system call, never a lost wake-up.
            try:
                av.fetch_add32(OFF_READERS_WAITING, 1)
                ring = av.load32(OFF_DOORBELL)
                if (av.load64(OFF_SEQUENCE) >> 1) <= self._seen and not av.wait32(OFF_DOORBELL, ring, wait):
                    self._check_removed()
            finally:
                av.fetch_add32(OFF_READERS_WAITING, -1)

    # ---- lifetime --------------------------------------------------------
    def _ring_all(self) -> None:
        for bell in _BELLS:
            self._av.wake32(bell)

    def close(self) -> None:
        """End of stream: blocked and later receivers get EndOfStream once
        nothing is left to read."""
        self._segment()
        self._av.store32_seq_cst(OFF_CLOSED, 1)
        self._ring_all()

    def _release(self) -> None:
        for name in ("_slot_lock", "_writer_lock"):
            lock = getattr(self, name)
            if lock is not None:
                lock.close()
                setattr(self, name, None)
        if self._av is not None:
            self._av.close()
            self._av = None

    def detach(self) -> None:
        """Detach from the segment (once per process).

        BufferError, leaving the mailbox attached and usable, while a
        ``send_view()``/``recv_view()`` block is open, a call is blocked in
        another thread, or a buffer made from a view is alive."""
        seg = self._seg
        if seg is None:
            return
        lock = self._slot_lock if self._slot_lock is not None else self._writer_lock
        try:
            if lock is not None:
                lock.close()
            if self._av is not None:
                self._av.close()
            try:
                seg.detach()
            except BufferError:
                # A child forked while its parent's threads had view blocks
                # open: nothing here will release those views.
                if not abandon_forked_views(seg, self._bound_pid):
                    raise
        except BufferError as exc:
            # Give back what was closed: the mailbox stays attached and usable.
            if self._av is None or self._av.closed:
                self._av = AtomicView(seg)
            if lock is None or lock.closed:
                self._open_lock()
            raise BufferError(
                f"cannot detach the mailbox while it is in use in this process ({exc}): "
                "leave send_view()/recv_view() blocks, let blocked calls return and "
                "delete buffers made from views first"
            ) from None
        self._av = None
        self._slot_lock = self._writer_lock = None
        self._seg = None

    def remove(self) -> None:
        """Mark the segment for destruction (once overall) and wake every
        waiter, here and in other processes: they raise RemovedError."""
        seg = self._segment()
        seg.remove()
        self._av.store32_seq_cst(OFF_REMOVED, 1)
        self._ring_all()

    def __enter__(self) -> "Mailbox":
        self._segment()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    def __del__(self) -> None:
        try:
            self.detach()
        except Exception:
            pass

    def __reduce__(self) -> Any:
        seg = self._segment()
        return (_attach_by_id, (type(self), seg.shmid, tuple(seg._trusted_uids)))

    def __repr__(self) -> str:
        if self._seg is None:
            return f"<{type(self).__name__} detached>"
        kind = "latest-value" if self.overwrite else "handoff"
        return f"<{type(self).__name__} shmid={self._seg.shmid} max_size={self.max_size} {kind}>"


class _SlotWrite(_core.LockedBlock):
    """``with box.send_view(n) as buf``: the slot is taken in ``_enter`` and
    the slot lock held for the block; the C ``__exit__`` gives the lock back
    after ``_exit`` whatever happens, so an exception at any bytecode leaves
    no lock held (a slot taken but not posted is repaired by the next
    holder: the message is dropped)."""

    __slots__ = ("_box", "_n", "_deadline", "_window", "_view")

    def __init__(self, box: Mailbox, n: int, deadline: Optional[float]) -> None:
        self._box, self._n, self._deadline = box, n, deadline
        self._window: Any = None
        self._view: Any = None

    def _enter(self) -> memoryview:
        box = self._box
        self._lock = box._slot_lock
        box._take(_ROLE_WRITER, self._deadline, "send")
        self._window = _core.Window(box._seg, _SLOT + 8, self._n)
        self._view = memoryview(self._window)
        return self._view

    def _exit(self, exc_type: Any, exc: Any, tb: Any) -> None:
        box = self._box
        alive = _drop_view(self._view, self._window)
        self._view = self._window = None
        if not self._lock.held:
            raise CorruptedError("the mailbox slot lock was taken from this send_view() block; the message was not sent")
        if exc_type is None and not alive:
            box._av.store64(_SLOT, self._n)
            box._post(OFF_MAY_READ, OFF_READ_BELL)
            return
        box._post(OFF_MAY_WRITE, OFF_WRITE_BELL)  # discarded: the slot is free again
        if alive:
            raise BufferError("a buffer made from the send view is still alive; the message was not sent")


class _SlotRead(_core.LockedBlock):
    """``with box.recv_view() as view``: as _SlotWrite, for the reader (an
    interrupted block leaves the message queued)."""

    __slots__ = ("_box", "_deadline", "_window", "_view")

    def __init__(self, box: Mailbox, deadline: Optional[float]) -> None:
        self._box, self._deadline = box, deadline
        self._window: Any = None
        self._view: Any = None

    def _enter(self) -> memoryview:
        box = self._box
        self._lock = box._slot_lock
        box._take(_ROLE_READER, self._deadline, "receive")
        n = box._read_handoff_length()
        self._window = _core.Window(box._seg, _SLOT + 8, n, readonly=True)
        self._view = memoryview(self._window)
        return self._view

    def _exit(self, exc_type: Any, exc: Any, tb: Any) -> None:
        box = self._box
        alive = _drop_view(self._view, self._window)
        self._view = self._window = None
        if not self._lock.held:
            raise CorruptedError("the mailbox slot lock was taken from this recv_view() block")
        if alive:
            box._post(OFF_MAY_READ, OFF_READ_BELL)  # still queued
            raise BufferError(
                "a buffer made from the message view is still alive; the message was left in the mailbox"
            )
        box._post(OFF_MAY_WRITE, OFF_WRITE_BELL)


def _attach_by_id(cls: Type[Mailbox], shmid: int, trusted_uids: Iterable[int] = ()) -> Mailbox:
    return cls.attach(shmid=shmid, trusted_uids=trusted_uids)
