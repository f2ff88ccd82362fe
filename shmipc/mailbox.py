"""Mailbox: the seed's one-slot handoff as a reusable object, and a
latest-value variant.

Handoff mode (default) is exactly the classic pattern: a writer waits on
"may write", fills the slot, posts "may read"; a reader waits on "may read",
empties the slot, posts "may write".  Latest-value mode (``overwrite=True``)
never blocks the writer: it replaces the value, and readers get the newest
complete one (a sequence lock over two buffers: never a torn value).

Shared layout (native byte order, offsets from the segment start)::

    offset size  field
    0      8     magic          b"shmipcMB" as a u64, written last at init
    8      4     layout version MAILBOX_VERSION
    12     4     header size    HEADER_SIZE (slots start here)
    16     8     max_size       largest message, bytes
    24     4     mode           0 = handoff, 1 = latest value
    28     4     closed         1 once close() was called
    64     64    may write      SharedSemaphore (handoff; starts at 1)
    128    64    may read       SharedSemaphore (handoff; starts at 0)
    192    64    writer lock    RobustMutex (latest value: one writer at a time)
    256    8     sequence       latest value: 2 per write; odd while writing
    264    4     readers asleep latest value: readers waiting for a newer value
    320    64    value doorbell SharedSemaphore posted once per sleeping reader
    384    8     slot owner     handoff: pid | role << 32 of whoever holds a
                                semaphore between its wait and its post
    512    ...   slots          handoff: one slot; latest value: two slots
    slot = 8-byte length, then max_size bytes (rounded up to 8)

Crash semantics.  Handoff: a process killed between its wait and its post
would leave the slot taken forever (POSIX semaphores have no undo), so each
holder records itself in "slot owner"; a waiter that finds the owner dead
gives the semaphore back (a dead writer's half-written message is dropped; a
dead reader's message is delivered again).  Latest value: the writer lock is
a robust mutex, and readers never see a value whose write did not finish.
"""
from __future__ import annotations

import os
import time
from typing import Any, Optional, Tuple, Type

from . import _core
from .atomics import AtomicView
from .errors import CorruptedError, EndOfStream, OwnerDiedError, RemovedError
from .mutex import RobustMutex
from .segment import Segment
from .shared_semaphore import SharedSemaphore

__all__ = ["Mailbox", "MAILBOX_VERSION"]

MAILBOX_MAGIC = int.from_bytes(b"shmipcMB", "little")
MAILBOX_VERSION = 1
HEADER_SIZE = 512

OFF_MAGIC = 0
OFF_VERSION = 8
OFF_HEADER_SIZE = 12
OFF_MAX_SIZE = 16
OFF_MODE = 24
OFF_CLOSED = 28
OFF_MAY_WRITE = 64
OFF_MAY_READ = 128
OFF_WRITER_LOCK = 192
OFF_SEQUENCE = 256
OFF_READERS_WAITING = 264
OFF_DOORBELL = 320
OFF_OWNER = 384

MODE_HANDOFF = 0
MODE_LATEST = 1
_ROLE_WRITER = 1
_ROLE_READER = 2

_WAIT_SLICE = 0.05
_SEQ_LIMIT = 1 << 63  # a latest-value sequence at or past this is corrupted
_monotonic = time.monotonic


# os.getpid() is a system call (~0.2 µs here) and _own() runs on every
# send and recv: the pid is cached, and refreshed in a child after os.fork()
# (and so after multiprocessing's fork).  A fork() made in C without Python's
# fork hooks would leave the parent's pid here: such a child that then died
# holding the slot would not be seen as dead while the parent lives.
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


class Mailbox:
    """A one-message slot shared between processes.

    ``Mailbox.create(max_size)``; ``send(data, timeout=None)`` and
    ``recv(timeout=None)``; pickles by reference.  ``overwrite=True`` makes a
    latest-value mailbox: ``send`` never blocks and replaces the value,
    ``recv`` returns the newest value newer than the last one this object
    received (``missed`` tells how many it skipped), ``latest()`` the newest
    without waiting.

    Lifetime: ``detach()`` once per process, ``remove()`` once overall.
    """

    _seg: Any = None
    _av: Any = None
    _buf: Any = None
    _prims: Tuple[Any, ...] = ()

    # ---- construction ----------------------------------------------------
    @classmethod
    def create(cls, max_size: int, key: Optional[int] = None, *, mode: int = 0o600,
               overwrite: bool = False) -> "Mailbox":
        if isinstance(max_size, bool) or not isinstance(max_size, int):
            raise TypeError(f"max_size must be an int, not {type(max_size).__name__}")
        if max_size < 0:
            raise ValueError("max_size must not be negative")
        slots = 2 if overwrite else 1
        seg = Segment.create(HEADER_SIZE + slots * _slot_stride(max_size), key, mode=mode)
        try:
            av = AtomicView(seg)
            try:
                av.store32(OFF_VERSION, MAILBOX_VERSION)
                av.store32(OFF_HEADER_SIZE, HEADER_SIZE)
                av.store64(OFF_MAX_SIZE, max_size)
                av.store32(OFF_MODE, MODE_LATEST if overwrite else MODE_HANDOFF)
                SharedSemaphore.create(seg, OFF_MAY_WRITE, 1).close()
                SharedSemaphore.create(seg, OFF_MAY_READ, 0).close()
                SharedSemaphore.create(seg, OFF_DOORBELL, 0).close()
                RobustMutex.create(seg, OFF_WRITER_LOCK).close()
                av.store64_seq_cst(OFF_MAGIC, MAILBOX_MAGIC)
            finally:
                av.close()
            return cls._from_segment(seg)
        except BaseException:
            seg.remove()
            seg.detach()
            raise

    @classmethod
    def attach(cls, key: Optional[int] = None, *, shmid: Optional[int] = None) -> "Mailbox":
        seg = Segment.attach(key, shmid=shmid)
        try:
            return cls._from_segment(seg)
        except BaseException:
            seg.detach()
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
        deadline = _monotonic() + 1.0
        magic = av.load64(OFF_MAGIC)
        while magic == 0 and _monotonic() < deadline:
            time.sleep(0.001)
            magic = av.load64(OFF_MAGIC)
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
        self._buf = memoryview(seg)
        # Listed as each is attached, so that a failure half-way (a garbage
        # semaphore or mutex) releases the ones already made.
        self._prims = ()
        self._may_write = SharedSemaphore.attach(seg, OFF_MAY_WRITE)
        self._prims += (self._may_write,)
        self._may_read = SharedSemaphore.attach(seg, OFF_MAY_READ)
        self._prims += (self._may_read,)
        self._doorbell = SharedSemaphore.attach(seg, OFF_DOORBELL)
        self._prims += (self._doorbell,)
        self._writer_lock = RobustMutex.attach(seg, OFF_WRITER_LOCK)
        self._prims += (self._writer_lock,)
        self._seen = 0  # latest value: the sequence of the last value received
        self.missed = 0  #: latest value: values skipped before the last recv()

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
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be None or a number, not {type(timeout).__name__}")
        if timeout != timeout or timeout < 0:
            raise ValueError("timeout must be None or a non-negative number")
        return _monotonic() + timeout

    def _check_removed(self) -> None:
        try:
            info = _core.shm_stat(self._seg.shmid)
        except FileNotFoundError:
            raise RemovedError("the mailbox's segment was removed") from None
        if info[14]:
            raise RemovedError("the mailbox's segment was removed (IPC_RMID)")

    def _wait(self, sem: Any, deadline: Optional[float], what: str) -> None:
        """Take *sem* (handoff mode), repairing after a dead slot owner."""
        self._segment()
        if sem.acquire(0):
            return
        while True:
            if self._av.load32(OFF_CLOSED):
                raise EndOfStream("the mailbox was closed")
            if deadline is None:
                wait = _WAIT_SLICE
            else:
                wait = min(_WAIT_SLICE, deadline - _monotonic())
                if wait <= 0:
                    raise TimeoutError(f"timed out waiting to {what}")
            if sem.acquire(wait):
                return
            self._check_removed()
            self._repair_dead_owner()

    def _repair_dead_owner(self) -> None:
        av = self._av
        owner = av.load64(OFF_OWNER)
        pid, role = owner & 0xFFFFFFFF, owner >> 32
        if not pid or _pid_alive(pid):
            return
        if not av.compare_exchange64(OFF_OWNER, owner, 0):
            return  # someone else repaired it
        if role == _ROLE_WRITER:
            self._may_write.release()  # the half-written message is dropped
        elif role == _ROLE_READER:
            self._may_read.release()  # the message is delivered again

    def _own(self, role: int) -> None:
        self._av.store64(OFF_OWNER, _pid | role << 32)

    def _check_len(self, n: int) -> None:
        if n > self.max_size:
            raise ValueError(f"message of {n} bytes does not fit: max_size is {self.max_size}")

    # ---- handoff ---------------------------------------------------------
    def send(self, data: Any, timeout: Optional[float] = None) -> None:
        """Put *data* in the slot: waits until the slot is free (handoff) or
        replaces the value (latest value)."""
        view = memoryview(data).cast("B") if type(data) is not bytes else data
        n = len(view)
        self._check_len(n)
        if self.overwrite:
            self._send_latest(view, n, timeout)
            return
        deadline = self._deadline(timeout)
        self._wait(self._may_write, deadline, "send")
        self._own(_ROLE_WRITER)
        buf = self._buf
        self._av.store64(HEADER_SIZE, n)
        buf[HEADER_SIZE + 8:HEADER_SIZE + 8 + n] = view
        self._av.store64(OFF_OWNER, 0)
        self._may_read.release()

    def _read_handoff_length(self) -> int:
        n = self._av.load64(HEADER_SIZE)
        if n > self.max_size:
            raise CorruptedError(f"mailbox slot holds a length of {n} bytes, more than max_size {self.max_size}")
        return n

    def recv(self, timeout: Optional[float] = None) -> bytes:
        """Take the message: waits for one (handoff), or for a value newer
        than the last one received (latest value)."""
        if self.overwrite:
            return self._recv_latest(timeout)
        deadline = self._deadline(timeout)
        self._wait(self._may_read, deadline, "receive")
        self._own(_ROLE_READER)
        try:
            n = self._read_handoff_length()
        except CorruptedError:
            self._av.store64(OFF_OWNER, 0)
            self._may_read.release()
            raise
        data = self._buf[HEADER_SIZE + 8:HEADER_SIZE + 8 + n].tobytes()
        self._av.store64(OFF_OWNER, 0)
        self._may_write.release()
        return data

    def send_view(self, nbytes: int, timeout: Optional[float] = None) -> "_SlotWrite":
        """Zero-copy send: ``with box.send_view(n) as buf: buf[:] = ...``
        (committed when the block exits normally)."""
        if self.overwrite:
            raise ValueError("send_view() is for handoff mailboxes; latest-value send() is already one copy")
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError("nbytes must be a non-negative int")
        self._check_len(nbytes)
        self._wait(self._may_write, self._deadline(timeout), "send")
        self._own(_ROLE_WRITER)
        return _SlotWrite(self, self._buf[HEADER_SIZE + 8:HEADER_SIZE + 8 + nbytes], nbytes)

    def recv_view(self, timeout: Optional[float] = None) -> "_SlotRead":
        """Zero-copy receive: ``with box.recv_view() as view: ...``; the slot
        is freed when the block exits (delete derived arrays inside it)."""
        if self.overwrite:
            raise ValueError("recv_view() is for handoff mailboxes")
        self._wait(self._may_read, self._deadline(timeout), "receive")
        self._own(_ROLE_READER)
        try:
            n = self._read_handoff_length()
        except CorruptedError:
            self._av.store64(OFF_OWNER, 0)
            self._may_read.release()
            raise
        return _SlotRead(self, self._buf[HEADER_SIZE + 8:HEADER_SIZE + 8 + n].toreadonly())

    # ---- latest value ----------------------------------------------------
    def _send_latest(self, view: Any, n: int, timeout: Optional[float]) -> None:
        lock = self._writer_lock
        try:
            if not lock.acquire(timeout):
                raise TimeoutError("timed out waiting for the mailbox's writer lock")
        except OwnerDiedError:
            # A writer died mid-write: the sequence may be odd; close it out.
            seq = self._av.load64(OFF_SEQUENCE)
            if seq & 1:
                self._av.store64_seq_cst(OFF_SEQUENCE, seq - 1)
            lock.mark_consistent()
        try:
            av = self._av
            seq = av.load64(OFF_SEQUENCE) & ~1
            if seq >= _SEQ_LIMIT:  # 2**62 sends take a century: only corruption gets here
                raise CorruptedError(f"mailbox sequence {seq:#x} is corrupted (past 2**63)")
            av.store64_seq_cst(OFF_SEQUENCE, seq + 1)  # odd: writing the other slot
            slot = HEADER_SIZE + (((seq >> 1) + 1) & 1) * self._stride
            av.store64(slot, n)
            self._buf[slot + 8:slot + 8 + n] = view
            av.store64_seq_cst(OFF_SEQUENCE, seq + 2)
            waiting = av.load32(OFF_READERS_WAITING)
            if waiting:
                self._doorbell.release(min(waiting, 1024))
        finally:
            lock.release()

    def _read_latest(self) -> Tuple[int, Optional[bytes]]:
        """The newest complete value and its sequence (0, None if none yet)."""
        av = self._av
        buf = self._buf
        for _ in range(10000):
            seq = av.load64(OFF_SEQUENCE) & ~1
            if seq == 0:
                return 0, None
            slot = HEADER_SIZE + ((seq >> 1) & 1) * self._stride
            n = av.load64(slot)
            data = buf[slot + 8:slot + 8 + n].tobytes() if n <= self.max_size else None
            _core.fence()
            if av.load64(OFF_SEQUENCE) - seq < 3:  # nobody started rewriting that slot
                if data is None:
                    raise CorruptedError(f"mailbox value length {n} exceeds max_size {self.max_size}")
                return seq >> 1, data
        raise CorruptedError("mailbox sequence never settles (a writer is stuck or the header is corrupted)")

    def latest(self) -> Optional[bytes]:
        """Latest value: the newest value without waiting (None if none yet)."""
        self._segment()
        if not self.overwrite:
            raise ValueError("latest() is for latest-value mailboxes (overwrite=True)")
        seq, data = self._read_latest()
        if data is not None:
            self.missed = max(0, seq - self._seen - 1)
            self._seen = seq
        return data

    def _recv_latest(self, timeout: Optional[float]) -> bytes:
        deadline = self._deadline(timeout)
        av = self._av
        while True:
            if (av.load64(OFF_SEQUENCE) >> 1) > self._seen:
                seq, data = self._read_latest()
                if data is not None and seq > self._seen:
                    self.missed = seq - self._seen - 1
                    self._seen = seq
                    return data
            if av.load32(OFF_CLOSED):
                raise EndOfStream("the mailbox was closed")
            if deadline is None:
                wait = _WAIT_SLICE
            else:
                wait = min(_WAIT_SLICE, deadline - _monotonic())
                if wait <= 0:
                    raise TimeoutError("timed out waiting for a newer value")
            av.fetch_add32(OFF_READERS_WAITING, 1)
            try:
                if (av.load64(OFF_SEQUENCE) >> 1) <= self._seen and not self._doorbell.acquire(wait):
                    self._check_removed()
            finally:
                av.fetch_add32(OFF_READERS_WAITING, 0xFFFFFFFF)  # -1

    # ---- lifetime --------------------------------------------------------
    def close(self) -> None:
        """End of stream: blocked and later receivers get EndOfStream once
        nothing is left to read."""
        self._segment()
        self._av.store32_seq_cst(OFF_CLOSED, 1)
        self._doorbell.release(8)

    def _release(self) -> None:
        for prim in self._prims:
            prim.close()
        self._prims = ()
        if self._buf is not None:
            self._buf.release()
            self._buf = None
        if self._av is not None:
            self._av.close()
            self._av = None

    def detach(self) -> None:
        seg = self._seg
        if seg is None:
            return
        self._release()
        self._seg = None
        seg.detach()

    def remove(self) -> None:
        self._segment().remove()

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
        return (_attach_by_id, (type(self), self._segment().shmid))

    def __repr__(self) -> str:
        if self._seg is None:
            return f"<{type(self).__name__} detached>"
        kind = "latest-value" if self.overwrite else "handoff"
        return f"<{type(self).__name__} shmid={self._seg.shmid} max_size={self.max_size} {kind}>"


class _SlotWrite:
    __slots__ = ("_box", "_view", "_n")

    def __init__(self, box: Mailbox, view: memoryview, n: int) -> None:
        self._box, self._view, self._n = box, view, n

    def __enter__(self) -> memoryview:
        return self._view

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        box = self._box
        view, self._view = self._view, None  # type: ignore[assignment]  # spent: dropped on exit
        box._av.store64(OFF_OWNER, 0)
        try:
            view.release()
        except BufferError:
            box._may_write.release()
            raise BufferError("a buffer made from the send view is still alive; the message was not sent") from None
        if exc_type is not None:
            box._may_write.release()  # discarded: the slot is free again
            return
        box._av.store64(HEADER_SIZE, self._n)
        box._may_read.release()


class _SlotRead:
    __slots__ = ("_box", "_view")

    def __init__(self, box: Mailbox, view: memoryview) -> None:
        self._box, self._view = box, view

    def __enter__(self) -> memoryview:
        return self._view

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        box = self._box
        view, self._view = self._view, None  # type: ignore[assignment]  # spent: dropped on exit
        box._av.store64(OFF_OWNER, 0)
        try:
            view.release()
        except BufferError:
            box._may_read.release()  # still queued
            raise BufferError(
                "a buffer made from the message view is still alive; the message was left in the mailbox"
            ) from None
        box._may_write.release()


def _attach_by_id(cls: Type[Mailbox], shmid: int) -> Mailbox:
    return cls.attach(shmid=shmid)
