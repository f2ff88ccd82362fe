"""Ring: a multi-producer, multi-consumer message queue in one segment.

Messages of 0 to ``max_message_size`` bytes go through a byte ring in one
System V segment.  Producers serialise on one lock, consumers on another;
the shared indices are published with atomics, and two futex words serve
only as doorbells for a peer that is actually asleep.  Everything here is
Python on top of C primitives that keep no pointers and no glibc state in
the segment (Segment, AtomicView, FutexLock, LockedBlock, Window): a peer
that writes garbage into any byte gets corrupted messages for its trouble,
never a crash or a write outside the segment in this process.

Shared layout (native byte order, every offset from the segment start)::

    offset size  field
    0      8     magic             b"shmipcRG" as a u64, written last at init;
                                   b"shmipcRi" while the creator initialises
    8      4     layout version    RING_VERSION
    12     4     header size       HEADER_SIZE (data starts here)
    16     8     capacity          bytes of message storage, multiple of 8
    24     8     max message size  capacity - 8
    32     4     closed            1 once a producer called close()
    36     4     removed           1 once remove() was called
    40     8     nonce             random; identifies this incarnation
    64     8     producer lock     FutexLock (holder tid + start time)
    128    8     consumer lock     FutexLock
    192    4     data doorbell     futex word bumped for a sleeping consumer
    256    4     space doorbell    futex word bumped for a sleeping producer
    320    4     consumer waiting  1 while the consumer-lock holder sleeps
    384    4     producer waiting  1 while the producer-lock holder sleeps
    448    8     tail              bytes ever written (monotonic); producers own it
    512    8     head              bytes ever consumed (monotonic); consumers own it
    576    8     messages put      ever committed (for len(); advisory)
    640    8     messages taken    ever consumed (for len(); advisory)
    4096   cap   data              records

A record starts at ``HEADER_SIZE + position % capacity``, 8-byte aligned::

    0      4     length   payload bytes (PAD: ignored)
    4      4     kind     MSG (0x4d534721) or PAD (0x50414421)
    8      len   payload, then zero to 7 bytes of padding to the next 8

A record never wraps: when one does not fit before the end of the data area,
the producer writes a PAD record that fills the rest and the message goes
at the start.  A message is *committed* when ``tail`` moves past it (one
atomic store, the last step of ``put``), and *consumed* when ``head`` moves
past it (the last step of ``get``).

Crash semantics (what a ``SIGKILL`` at any point can do):

* A producer killed inside ``put`` never publishes a partial message: the
  record becomes visible only through the final ``tail`` store.  The next
  producer gets the robust mutex back (``EOWNERDEAD``), resets the
  "producer waiting" flag and carries on; the space the dead producer was
  filling is simply reused.
* A consumer killed inside ``get`` before it advanced ``head`` leaves the
  message queued: the next consumer receives it.  Killed after advancing
  ``head`` (the copy is done, the call has not returned), what that call
  took is lost: one message for ``get``/``get_view``, the whole batch for
  ``get_many`` (up to *max_messages*).  Nothing else is ever lost,
  duplicated or reordered.
* The doorbells carry no state that matters: a lost or extra ring only
  costs a wake-up, because the indices are the truth.  Waking a peer never
  makes a committed ``put`` or a consumed ``get`` raise.
* A killed process never leaves a lock held for the others: a waiter sees
  that the holder's thread is gone (within 20 ms) and takes the lock over.
  Processes sharing a ring must share a pid namespace (the lock names its
  holder by thread id).

Exceptions (``KeyboardInterrupt``, anything a signal handler raises) at any
bytecode leave no lock held: a lock is taken and recorded in one C call
inside the ``try`` whose ``finally`` gives it back, and the blocks of
``reserve()``/``get_view()`` give theirs back in C (:class:`LockedBlock`).
Such an exception may surface after the commit point: a ``put`` that raised
it may have queued its message, a ``get`` that raised it may have consumed
one (the same holds for ``queue.Queue``).

Values read from the segment are validated before use (another process may
be buggy or hostile): a bad magic, version, size, index or record raises
:class:`~shmipc.CorruptedError` and never causes an out-of-bounds access.
"""
from __future__ import annotations

import functools
import operator
import os
import struct
import sys
import time
from typing import Any, Iterable, Iterator, List, Optional, Type

from . import _core
from .atomics import AtomicView
from .errors import CorruptedError, Empty, EndOfStream, Full, RemovedError
from .segment import INITIALISING_MODE, Segment, abandon_forked_views, stat_segment

__all__ = ["Ring", "RING_VERSION"]

RING_MAGIC = int.from_bytes(b"shmipcRG", "little")
RING_INIT_MAGIC = int.from_bytes(b"shmipcRi", "little")
RING_VERSION = 2
HEADER_SIZE = 4096

OFF_MAGIC = 0
OFF_VERSION = 8
OFF_HEADER_SIZE = 12
OFF_CAPACITY = 16
OFF_MAX_MESSAGE = 24
OFF_CLOSED = 32
OFF_REMOVED = 36
OFF_NONCE = 40
OFF_PRODUCER_LOCK = 64
OFF_CONSUMER_LOCK = 128
OFF_DATA_BELL = 192
OFF_SPACE_BELL = 256
OFF_CONSUMER_WAITING = 320
OFF_PRODUCER_WAITING = 384
OFF_TAIL = 448
OFF_HEAD = 512
OFF_PUT_COUNT = 576
OFF_TAKEN_COUNT = 640

RECORD_HEADER = 8
KIND_MSG = 0x4D534721
KIND_PAD = 0x50414421
_MSG = KIND_MSG << 32
_PAD = KIND_PAD << 32
_LEN_MASK = 0xFFFFFFFF
# No ring moves 2**62 bytes (4.6 EB) in its life: an index past this was
# written by someone else, and index + record would soon overflow the u64.
_INDEX_LIMIT = 1 << 62

# _UNLOCK_NOTE: every call that takes a lock is written
#
#     try:
#         lock.acquire(...)      # takes and records the hold in one C call
#         ...                    # the work, ending with its commit
#         lock.release()         # still inside the try
#     except BaseException:
#         lock.release()         # a no-op unless this thread holds it
#         raise
#
# and not with try/finally: CPython 3.9 and 3.10 run signal handlers when a
# try block is left normally, before an inlined finally body, so a handler
# that raised there skipped the release.  Here the normal path releases
# inside the try and the handler path releases first thing.  Those versions
# also run them when an exception reaches a handler, before its first line:
# there the calls run under FutexLock.guard, which gives back in C a hold
# the Python code left (one more C call per message, on 3.9/3.10 only).
_GUARD_CALLS = sys.version_info < (3, 11)
_GUARDED = ("put", "get", "put_many", "get_many", "_skip_leading_pad")

# How long one blocking wait lasts before the waiter looks at whether the
# segment was removed under it (bounded reaction to IPC_RMID).
_WAIT_SLICE = 0.05

_monotonic = time.monotonic
# What a timed-out call raises, by the side of the ring it waited on.
_TIMEOUT = {"producer": Full, "consumer": Empty}
_U64 = (1 << 64) - 1
# A timeout longer than this (about 30 years) waits for ever: it may be an
# int too large for a float, and no deadline that far matters.
_FOREVER = 1e9

# put_many frames its records with these (joining those under _DIRECT_BYTES
# into one write); get_many copies runs of at most _RUN_BYTES out at once.
_HEADER = struct.Struct("=Q")
_ZEROS = bytes(8)
_RUN_BYTES = 256 * 1024
_DIRECT_BYTES = 16 * 1024
_SPIN_TURNS = range(32)


class _Detached:
    """Stands in for the hot-path objects once the ring is detached, so every
    method raises ValueError without a check on the fast path."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # introspection (help(), inspect) asks these
            raise AttributeError(name)
        raise ValueError("operation on a detached ring")

    def __call__(self, *args: Any) -> Any:
        raise ValueError("operation on a detached ring")

    def __getitem__(self, item: Any) -> Any:
        raise ValueError("operation on a detached ring")

    def __setitem__(self, item: Any, value: Any) -> None:
        raise ValueError("operation on a detached ring")

    def __bool__(self) -> bool:  # pragma: no cover - never used as a flag
        raise ValueError("operation on a detached ring")


_DETACHED: Any = _Detached()


def _drop_view(view: memoryview, window: Any) -> bool:
    """Release a block's view; True if nothing made from it survives."""
    try:
        view.release()
    except BufferError:  # something exported from the memoryview itself
        return False
    return bool(window.release())


class _Reservation(_core.LockedBlock):
    """``with ring.reserve(n) as buf``: write in place, commit on exit.

    The producer lock is taken when the block starts (``_enter``) and given
    back by LockedBlock's C ``__exit__`` after ``_exit``, whatever happens
    in between."""

    __slots__ = ("_ring", "_nbytes", "_timeout", "_view", "_window", "_commit")

    def __init__(self, ring: "Ring", nbytes: int, timeout: Optional[float]) -> None:
        self._ring = ring
        self._lock = ring._plock
        self._nbytes = nbytes
        self._timeout = timeout

    def _enter(self) -> memoryview:
        self._view, self._window, self._commit = self._ring._take_space(self._nbytes, self._timeout)
        return self._view

    def _exit(self, exc_type: Any, exc: Any, tb: Any) -> None:
        ring = self._ring
        dropped = _drop_view(self._view, self._window)
        if not self._lock.held:
            # Forked inside the block: the parent's thread holds the lock and
            # commits; a commit from this copy would move tail backwards.
            if exc_type is None:
                raise RuntimeError(
                    "this reserve() block does not hold the producer lock in this process "
                    "(forked inside the block?); the message was not committed here"
                )
            return
        if not dropped:
            if exc_type is None:
                raise BufferError(
                    "a buffer made from the reserved view (a numpy array or memoryview) is still "
                    "alive; the message was discarded. Delete it inside the block"
                )
        elif exc_type is None:
            ring._av.publish64(OFF_TAIL, self._commit, OFF_CONSUMER_WAITING, OFF_DATA_BELL,
                               OFF_PUT_COUNT, 1)


class _MessageView(_core.LockedBlock):
    """``with ring.get_view() as view``: read in place, consume on exit."""

    __slots__ = ("_ring", "_timeout", "_view", "_window", "_head")

    def __init__(self, ring: "Ring", timeout: Optional[float]) -> None:
        self._ring = ring
        self._lock = ring._clock
        self._timeout = timeout

    def _enter(self) -> memoryview:
        self._view, self._window, self._head = self._ring._take_view(self._timeout)
        return self._view

    def _exit(self, exc_type: Any, exc: Any, tb: Any) -> None:
        dropped = _drop_view(self._view, self._window)
        if not self._lock.held:
            # Forked inside the block: see _Reservation._exit (head would move back).
            if exc_type is None:
                raise RuntimeError(
                    "this get_view() block does not hold the consumer lock in this process "
                    "(forked inside the block?); the message was not consumed here"
                )
            return
        if not dropped:
            raise BufferError(
                "a buffer made from the message view (a numpy array or memoryview) is still "
                "alive; the message was left in the ring. Delete it before leaving the "
                "block, or copy what you need"
            )
        self._ring._av.publish64(OFF_HEAD, self._head, OFF_PRODUCER_WAITING, OFF_SPACE_BELL,
                                 OFF_TAKEN_COUNT, 1)


class Ring:
    """A multi-producer, multi-consumer message queue in one shared segment.

    Make one with :meth:`create` and reach it from other processes with
    :meth:`attach` or by pickling it (a ``multiprocessing`` child, under
    ``fork`` or ``spawn``, gets the same ring).

    Blocking calls take ``timeout`` (``None`` waits forever, ``0`` never
    blocks) and raise :class:`~shmipc.Full` (puts) or :class:`~shmipc.Empty`
    (gets) when it expires: each is both a ``TimeoutError`` and the
    ``queue`` module's exception of that name.  ``spin`` (seconds,
    per process, default 0) busy-polls that long before sleeping, trading
    CPU for latency.

    Lifetime: ``detach()`` once per process (or leave a ``with`` block),
    ``remove()`` once overall.
    """

    # Class-level defaults so detach() is safe after a half-failed constructor.
    _seg: Any = None
    _buf: Any = _DETACHED
    _av: Any = _DETACHED
    _plock: Any = _DETACHED
    _clock: Any = _DETACHED
    _load64: Any = _DETACHED
    _load32: Any = _DETACHED
    _store64: Any = _DETACHED
    _read: Any = _DETACHED
    _write: Any = _DETACHED
    _spin: float = 0.0

    # ---- construction ----------------------------------------------------
    @classmethod
    def create(cls, capacity: int, key: Optional[int] = None, *, mode: int = 0o600,
               spin: float = 0.0) -> "Ring":
        """Create a ring with *capacity* bytes of message storage.

        Each message takes its length rounded up to 8, plus an 8-byte
        header; ``max_message_size`` is ``capacity - 8``.  ``key=None`` makes
        a private ring (reach it by ``shmid`` or pickling); a given key
        raises ``FileExistsError`` if taken.

        The segment is marked "initialising" first thing; if this process
        dies or is interrupted before the ring is ready, ``attach`` refuses
        it and ``shmipc.cleanup()`` removes it once this process is gone.
        """
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
        if capacity < 16:
            raise ValueError("capacity must be at least 16 bytes")
        spin = _check_spin(spin)
        capacity = (capacity + 7) & ~7
        # Marked "initialising" in the call that creates it: a creator
        # interrupted from here on leaves a segment cleanup() recognises.
        seg = Segment._create_marked(HEADER_SIZE + capacity, key, mode, RING_INIT_MAGIC)
        try:
            av = AtomicView(seg)
            try:
                seg.prefault()  # first touch of fresh pages costs a fault per 4 KiB
                av.store32(OFF_VERSION, RING_VERSION)
                av.store32(OFF_HEADER_SIZE, HEADER_SIZE)
                av.store64(OFF_CAPACITY, capacity)
                av.store64(OFF_MAX_MESSAGE, capacity - RECORD_HEADER)
                av.store64(OFF_NONCE, int.from_bytes(os.urandom(8), "little"))
                # Locks and doorbells are plain words: zero is free and quiet.
                av.store64_seq_cst(OFF_MAGIC, RING_MAGIC)  # the ring is ready
            finally:
                av.close()
            seg.chmod(mode)  # last: others may attach (see Segment._create_marked)
            ring = cls._from_segment(seg)
        except BaseException:
            _discard(seg)
            raise
        ring._spin = spin
        seg._keep()  # last: the create is done (see Segment._create_marked)
        return ring

    @classmethod
    def attach(cls, key: Optional[int] = None, *, shmid: Optional[int] = None,
               spin: float = 0.0, trusted_uids: Iterable[int] = ()) -> "Ring":
        """Attach an existing ring by *key* or *shmid* (exactly one).

        Raises ``FileNotFoundError`` if there is no such segment,
        ``PermissionError`` if another user owns or created it (unless
        that uid is in *trusted_uids*) and :class:`~shmipc.CorruptedError`
        if it is not a ring of this layout version (nothing is modified
        then).
        """
        spin = _check_spin(spin)
        seg = Segment.attach(key, shmid=shmid, trusted_uids=trusted_uids)
        try:
            ring = cls._from_segment(seg)
        except BaseException:
            seg.detach()
            raise
        ring._spin = spin
        return ring

    @classmethod
    def _from_segment(cls, seg: Segment) -> "Ring":
        ring = cls.__new__(cls)
        ring._seg = seg
        try:
            ring._validate_and_bind(seg)
        except BaseException:
            ring._release_views()
            ring._seg = None
            raise
        return ring

    def _validate_and_bind(self, seg: Segment) -> None:
        if seg.size < HEADER_SIZE + 16:
            raise CorruptedError(f"segment {seg.shmid} is too small to be a shmipc ring ({seg.size} bytes)")
        av = AtomicView(seg)
        self._av = av
        # A creator may still be initialising: its magic store comes last.
        deadline = _monotonic() + 1.0
        magic = av.load64(OFF_MAGIC)
        while magic in (0, RING_INIT_MAGIC) and _monotonic() < deadline:
            time.sleep(0.001)
            magic = av.load64(OFF_MAGIC)
        info = stat_segment(seg.shmid)
        if magic == RING_INIT_MAGIC or (magic == 0 and info.mode & 0o777 == INITIALISING_MODE):
            creator = info.cpid
            raise CorruptedError(
                f"segment {seg.shmid} is a shmipc ring that its creator (pid {creator}) has not finished "
                f"initialising; if that process is gone, 'shmipc cleanup' removes it"
            )
        if magic != RING_MAGIC:
            raise CorruptedError(f"segment {seg.shmid} is not a shmipc ring (bad magic {magic:#x})")
        version = av.load32(OFF_VERSION)
        if version != RING_VERSION:
            raise CorruptedError(
                f"segment {seg.shmid} holds ring layout version {version}; this shmipc speaks {RING_VERSION}"
            )
        header = av.load32(OFF_HEADER_SIZE)
        capacity = av.load64(OFF_CAPACITY)
        max_message = av.load64(OFF_MAX_MESSAGE)
        if (
            header != HEADER_SIZE
            or capacity < 16
            or capacity % 8
            or HEADER_SIZE + capacity > seg.size
            or max_message != capacity - RECORD_HEADER
        ):
            raise CorruptedError(
                f"ring header of segment {seg.shmid} is corrupted (header={header}, "
                f"capacity={capacity}, max_message_size={max_message}, segment size={seg.size})"
            )
        self.capacity = capacity
        self.max_message_size = max_message
        self._nonce = av.load64(OFF_NONCE)
        # What this process last saw of the other side's index: a lower bound,
        # refreshed only when it is not enough (saves a load per message).
        self._head_seen = 0
        self._tail_seen = 0
        self._bind(seg)

    def _bind(self, seg: Segment) -> None:
        """Make this process's handles on a validated ring's segment."""
        self._pid = os.getpid()
        if self._av is _DETACHED:
            self._av = AtomicView(seg)
        self._buf = memoryview(seg)
        self._plock = _core.FutexLock(seg, OFF_PRODUCER_LOCK)
        self._clock = _core.FutexLock(seg, OFF_CONSUMER_LOCK)
        self._bind_hot_paths()

    def _bind_hot_paths(self) -> None:
        for name in _GUARDED:
            self.__dict__.pop(name, None)
        av = self._av
        self._load64 = av.load64
        self._load32 = av.load32
        self._store64 = av.store64
        self._read = self._seg.read
        self._write = self._seg.write
        # put() and get() as closures over the objects they use: a closure
        # variable costs less than an attribute lookup on self, and these run
        # once per message.  They shadow the methods of the same names, which
        # after detach() raise ValueError.
        self.put = self._fast_put()  # type: ignore[method-assign]  # deliberate shadowing, see above
        self.get = self._fast_get()  # type: ignore[method-assign]
        if _GUARD_CALLS:  # see _UNLOCK_NOTE
            for name in _GUARDED:
                lock = self._clock if name in ("get", "get_many", "_skip_leading_pad") else self._plock
                setattr(self, name, functools.partial(lock.guard, getattr(self, name)))

    def _fast_put(self) -> Any:
        ring = self
        lock = self._plock
        acquire = lock.acquire
        release = lock.release
        load32 = self._load32
        load64 = self._load64
        store64 = self._store64
        publish = self._av.publish64
        write = self._write
        cap = self.capacity
        max_message = self.max_message_size
        deadline_of = self._deadline

        # Every line below runs once per message: each C call and each
        # attribute lookup shows in the benchmark.  Anything unusual (a
        # timeout, a busy lock, a full ring, the wrap point, a closed or
        # corrupted ring) leaves for the slow paths, which re-validate.
        # The lock is taken inside the try (acquire records the hold in the
        # same C call; release() is a no-op unless this thread holds it), so
        # an exception raised by a signal handler anywhere leaves it free.
        def put(data: Any, timeout: Optional[float] = None) -> None:
            kind = type(data)
            if kind is not bytes and kind is not bytearray:
                data = _as_bytes_view(data)
            n = len(data)
            if n > max_message:
                ring._check_size(n)
            rec = (n + 15) & ~7
            deadline = None if timeout is None else deadline_of(timeout)
            try:
                if not acquire(0):
                    ring._lock(lock, deadline, "producer", timeout == 0)
                if load32(OFF_CLOSED):
                    raise ValueError("put on a closed ring")
                tail = load64(OFF_TAIL)
                off = tail % cap
                # _head_seen is a lower bound of head: if the record fits
                # below it, it fits (head only grows).
                if tail & 7 or not 0 <= tail - ring._head_seen <= cap - rec or off + rec > cap:
                    tail = ring._make_room(tail, rec, deadline, timeout == 0)
                    off = tail % cap
                pos = HEADER_SIZE + off
                store64(pos, _MSG | n)
                write(data, pos + 8)
                publish(OFF_TAIL, tail + rec, OFF_CONSUMER_WAITING, OFF_DATA_BELL, OFF_PUT_COUNT, 1)
                release()  # inside the try: see _UNLOCK_NOTE
            except BaseException:
                release()
                raise

        put.__doc__ = Ring.put.__doc__
        return put

    def _fast_get(self) -> Any:
        ring = self
        lock = self._clock
        acquire = lock.acquire
        release = lock.release
        load64 = self._load64
        publish = self._av.publish64
        read = self._read
        cap = self.capacity
        deadline_of = self._deadline

        def get(timeout: Optional[float] = None) -> bytes:
            deadline = None if timeout is None else deadline_of(timeout)
            try:
                if not acquire(0):
                    ring._lock(lock, deadline, "consumer", timeout == 0)
                head = load64(OFF_HEAD)
                tail = ring._tail_seen
                if not 0 < tail - head <= cap:
                    # The tail this process saw last is used up: look again.
                    tail = ring._tail_seen = load64(OFF_TAIL)
                    if tail == head and timeout != 0:
                        tail = ring._tail_seen = ring._wait_tail(head, deadline)
                off = head % cap
                hdr = load64(HEADER_SIZE + off) if 0 < tail - head <= cap and not head & 7 else 0
                n = hdr & _LEN_MASK
                rec = (n + 15) & ~7
                # rec <= tail - head <= cap also bounds n by max_message_size.
                if hdr >> 32 == KIND_MSG and rec <= tail - head and off + rec <= cap:
                    pos = HEADER_SIZE + off + 8
                else:
                    head, tail, pos, n = ring._wait_message(deadline, timeout == 0)
                    rec = (n + 15) & ~7
                data = read(n, pos)
                publish(OFF_HEAD, head + rec, OFF_PRODUCER_WAITING, OFF_SPACE_BELL, OFF_TAKEN_COUNT, 1)
                release()  # inside the try: see _UNLOCK_NOTE
            except BaseException:
                release()
                raise
            return data

        get.__doc__ = Ring.get.__doc__
        return get

    def _wait_tail(self, head: int, deadline: Optional[float]) -> int:
        """get()'s quick wait on an empty ring: once here (spinning first if
        asked) before the slow path, which loops; returns the tail."""
        tail = head
        if not self._load32(OFF_CLOSED):
            if self._spin:
                tail = self._spin_on(OFF_TAIL, head, deadline)
            if tail == head:
                self._sleep(OFF_CONSUMER_WAITING, OFF_DATA_BELL, deadline, OFF_TAIL, head, False)
                tail = self._load64(OFF_TAIL)
        return tail

    def _take_view(self, timeout: Optional[float]) -> "tuple[memoryview, Any, int]":
        """get_view()'s block start: take the consumer lock and the oldest
        message; return (view, its window, the head that consumes it).  The
        lock stays held: the block's exit gives it back (in C)."""
        deadline = self._take_lock(self._clock, "consumer", timeout)
        head, tail, pos, n = self._wait_message(deadline, timeout == 0)
        window = _core.Window(self._seg, pos, n, True)
        return memoryview(window), window, head + ((n + 15) & ~7)

    def _take_space(self, nbytes: int, timeout: Optional[float]) -> "tuple[memoryview, Any, int]":
        """reserve()'s block start: take the producer lock and room for
        *nbytes*; return (view, its window, the tail that commits it)."""
        rec = (nbytes + 15) & ~7
        deadline = self._take_lock(self._plock, "producer", timeout)
        if self._load32(OFF_CLOSED):
            raise ValueError("put on a closed ring")
        cap = self.capacity
        tail = self._load64(OFF_TAIL)
        if tail & 7 or not 0 <= tail - self._head_seen <= cap - rec or tail % cap + rec > cap:
            tail = self._make_room(tail, rec, deadline, timeout == 0)
        pos = HEADER_SIZE + tail % cap
        self._store64(pos, _MSG | nbytes)
        window = _core.Window(self._seg, pos + 8, nbytes)
        return memoryview(window), window, tail + rec

    # ---- attributes ----------------------------------------------------
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
        """True once a producer called :meth:`close` (end of stream)."""
        return bool(self._av.load32(OFF_CLOSED))

    @property
    def detached(self) -> bool:
        return self._seg is None

    def _segment(self) -> Segment:
        if self._seg is None:
            raise ValueError("operation on a detached ring")
        return self._seg

    # ---- validation helpers ----------------------------------------------
    def _indices(self) -> "tuple[int, int]":
        """Read head and tail once each, validate them, return them."""
        load64 = self._load64
        head = load64(OFF_HEAD)
        tail = load64(OFF_TAIL)
        if head & 7 or tail & 7 or not 0 <= tail - head <= self.capacity or tail >= _INDEX_LIMIT:
            raise CorruptedError(
                f"ring indices are corrupted (head={head}, tail={tail}, capacity={self.capacity})"
            )
        return head, tail

    def _check_removed(self) -> None:
        """Raise RemovedError if the ring was removed under us: remove()
        raises a flag in the header; ``ipcrm`` shows in the kernel's record."""
        if self._load32(OFF_REMOVED):
            raise RemovedError("the ring was removed")
        try:
            info = _core.shm_stat(self._seg.shmid)
        except FileNotFoundError:
            raise RemovedError("the ring's segment was removed") from None
        if info[14]:  # marked for destruction
            raise RemovedError("the ring's segment was removed (IPC_RMID)")

    @staticmethod
    def _deadline(timeout: Optional[float]) -> Optional[float]:
        """The monotonic deadline of *timeout* seconds (None: no deadline).
        A timeout too large for a float waits for ever."""
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be None or a number, not {type(timeout).__name__}")
        if timeout != timeout or timeout < 0:
            raise ValueError("timeout must be None or a non-negative number")
        if timeout > _FOREVER:
            return None
        return _monotonic() + timeout

    def _lock(self, lock: Any, deadline: Optional[float], side: str, nowait: bool) -> None:
        """Slow path of taking a side's lock (the caller's try/finally gives
        it back): wait in slices, looking for removal between them.  A lock
        whose holder died is taken over by the C call itself; the ring needs
        no repair (the indices are the commits, the flags are advisory)."""
        if nowait:
            if not lock.acquire(0):
                raise _TIMEOUT[side](f"the ring's {side} side is busy")
            return
        while True:
            if deadline is None:
                wait = _WAIT_SLICE
            else:
                wait = min(_WAIT_SLICE, deadline - _monotonic())
                if wait <= 0:
                    wait = 0
            if lock.acquire(wait):
                break
            if wait == 0:
                raise _TIMEOUT[side](f"timed out waiting for the ring's {side} side")
            self._check_removed()
        # We waited: the holder may have left because the ring was removed
        # (its own wait noticed).  Check now rather than after a whole sleep
        # slice of our own, so every waiter hears of removal within one slice.
        self._check_removed()

    def _check_size(self, n: int) -> None:
        if n > self.max_message_size:
            raise ValueError(
                f"message of {n} bytes can never fit: max_message_size is {self.max_message_size}"
            )

    def _make_room(self, tail: int, rec: int, deadline: Optional[float], nowait: bool) -> int:
        """With the producer lock held: return a tail at which *rec* bytes fit
        contiguously, padding to the wrap point and waiting for consumers as
        needed.  Raises TimeoutError when the deadline passes."""
        cap = self.capacity
        if rec > cap:  # callers check sizes first; this loop would never end
            raise ValueError(f"a record of {rec} bytes can never fit a ring of {cap}")
        av = self._av
        while True:
            head = av.load64(OFF_HEAD)
            tail = av.load64(OFF_TAIL)
            if head & 7 or tail & 7 or not 0 <= tail - head <= cap or tail >= _INDEX_LIMIT:
                raise CorruptedError(
                    f"ring indices are corrupted (head={head}, tail={tail}, capacity={cap})"
                )
            self._head_seen = head
            free = cap - (tail - head)
            off = tail % cap
            if off + rec > cap:
                pad = cap - off
                if pad <= free:
                    # Fill the rest of the data area; the message goes at 0.
                    av.store64(HEADER_SIZE + off, _PAD | (pad - RECORD_HEADER))
                    self._publish_tail(tail + pad, 0)
                    continue
            elif rec <= free:
                return tail
            if head != tail and self._skip_leading_pad(head, tail):
                continue
            if self.closed:
                raise ValueError("put on a closed ring")
            if nowait:
                raise Full("ring is full")
            self._sleep(OFF_PRODUCER_WAITING, OFF_SPACE_BELL, deadline, OFF_HEAD, head)

    def _skip_leading_pad(self, head: int, tail: int) -> bool:
        """If the oldest record is padding and no consumer is busy, consume the
        padding here (taking the consumer lock), so that a producer never
        waits for a consumer just to wrap around.  True if it did."""
        cap = self.capacity
        off = head % cap
        if self._load64(HEADER_SIZE + off) >> 32 != KIND_PAD or head + (cap - off) > tail:
            return False
        lock = self._clock
        try:
            if not lock.acquire(0):
                return False
            # If a consumer moved on meanwhile, look again; else skip the pad.
            if self._load64(OFF_HEAD) == head:
                self._publish_head(head + (cap - off), 0)
            lock.release()  # inside the try: see _UNLOCK_NOTE
        except BaseException:
            lock.release()
            raise
        return True

    def _space_available(self, rec: int) -> bool:
        head, tail = self._indices()
        cap = self.capacity
        off = tail % cap
        # Wrapping needs room for the padding first; the message comes after.
        need = rec if off + rec <= cap else cap - off
        return cap - (tail - head) >= need

    @property
    def spin(self) -> float:
        """Seconds (per process) to busy-poll before sleeping; 0 never spins.
        Trades CPU for latency.  A finite number >= 0."""
        return self._spin

    @spin.setter
    def spin(self, value: float) -> None:
        self._spin = _check_spin(value)

    def _spin_on(self, watch: int, seen: int, deadline: Optional[float]) -> int:
        """Busy-poll the 64-bit word at *watch* for up to ``spin`` seconds
        (or until *deadline*) while it still holds *seen*; return its value.
        A load per turn, the clock every 32 turns."""
        load64 = self._load64
        stop = _monotonic() + self._spin
        if deadline is not None and deadline < stop:
            stop = deadline
        while True:
            for _ in _SPIN_TURNS:
                value = load64(watch)
                if value != seen:
                    return value
            if _monotonic() >= stop:
                return value

    def _sleep(self, flag_offset: int, bell_offset: int, deadline: Optional[float],
               watch: int, seen: int, spin: bool = True) -> None:
        """Wait until the 64-bit index at *watch* (the one the other side
        moves) may have left *seen*, then return: the caller looks again.

        With ``spin`` set (and *spin* true), first busy-poll it.  Then sleep
        on this side's doorbell for at most one slice (``wait_change64``:
        the flag, the bell and the index in the one order that loses no
        wake-up).  close() and remove() ring both bells whatever the flags
        say, so a sleeper also wakes for the end of the stream."""
        if spin and self._spin > 0 and self._spin_on(watch, seen, deadline) != seen:
            return
        if deadline is None:
            wait = _WAIT_SLICE
        else:
            wait = min(_WAIT_SLICE, deadline - _monotonic())
            if wait <= 0:
                if flag_offset == OFF_PRODUCER_WAITING:
                    raise Full("timed out waiting for room in the ring")
                raise Empty("timed out waiting for a message")
        if self._av.wait_change64(flag_offset, bell_offset, watch, seen, wait) == seen:
            self._check_removed()

    def _publish_tail(self, tail: int, messages: int) -> None:
        self._av.publish64(OFF_TAIL, tail, OFF_CONSUMER_WAITING, OFF_DATA_BELL, OFF_PUT_COUNT, messages)

    def _take_lock(self, lock: Any, side: str, timeout: Optional[float]) -> Optional[float]:
        """Take one side's lock (all but the per-message fast paths);
        returns the deadline.  Call it first thing inside the try whose
        handler releases (see _UNLOCK_NOTE), or from a block's _enter."""
        deadline = self._deadline(timeout)
        if not lock.acquire(0):
            self._lock(lock, deadline, side, timeout == 0)
        return deadline

    def put(self, data: Any, timeout: Optional[float] = None) -> None:
        """Queue one message (a bytes-like object).

        Blocks while the ring is full; raises :class:`~shmipc.Full` (a
        ``TimeoutError``) when *timeout*
        expires and ``ValueError`` at once for a message that can never fit.
        """
        # Attached, the instance's closure from _fast_put() shadows this
        # method; reaching it means the ring is detached (or the call went
        # through the class): delegate, or raise ValueError.
        self._segment()
        self.put(data, timeout)

    def put_nowait(self, data: Any) -> None:
        """``put(data, timeout=0)``: raise :class:`~shmipc.Full` if it would block."""
        self.put(data, 0)

    def put_many(self, messages: Iterable[Any], timeout: Optional[float] = None) -> int:
        """Queue several messages, publishing the index once per batch.

        Every message is size-checked before any is queued.  The batch is
        queued in order; other producers' messages may interleave only when
        the ring fills up mid-batch.  Returns the number queued: all of
        them, unless *timeout* expired after some were queued (then the
        first that many; :class:`~shmipc.Full` is raised only if none was).
        """
        items = [m if type(m) is bytes or type(m) is bytearray else _as_bytes_view(m) for m in messages]
        if not items:
            return 0
        sizes = set(map(len, items))
        biggest = max(sizes)
        if biggest > self.max_message_size:
            self._check_size(biggest)
        try:
            deadline = self._take_lock(self._plock, "producer", timeout)
            if self._load32(OFF_CLOSED):
                raise ValueError("put on a closed ring")
            tail = self._load64(OFF_TAIL)
            if tail & 7:
                tail = self._make_room(tail, 8, deadline, timeout == 0)
            if len(sizes) == 1 and biggest < _DIRECT_BYTES:
                queued = self._put_equal_records(items, biggest, tail, deadline, timeout == 0)
            else:
                queued = self._put_records(items, tail, deadline, timeout == 0)
            self._plock.release()  # inside the try: see _UNLOCK_NOTE
        except BaseException:
            self._plock.release()
            raise
        return queued

    def _put_equal_records(self, items: List[Any], n: int, tail: int, deadline: Optional[float],
                           nowait: bool) -> int:
        """_put_records() for messages that all have *n* bytes: a run of them
        is one join, since each record after the first is the previous one's
        padding and its own header followed by its payload."""
        cap = self.capacity
        rec = (n + 15) & ~7
        header = _MSG | n
        between = _ZEROS[: rec - n - RECORD_HEADER] + _HEADER.pack(header)
        queued = 0
        while queued < len(items):
            fit = (min(self._head_seen + cap, tail - tail % cap + cap) - tail) // rec
            if fit <= 0:
                try:
                    tail = self._make_room(tail, rec, deadline, nowait)
                except TimeoutError:
                    if queued:
                        return queued
                    raise
                continue
            run = items[queued:queued + fit] if fit < len(items) - queued or queued else items
            pos = HEADER_SIZE + tail % cap
            self._store64(pos, header)
            self._write(between.join(run), pos + RECORD_HEADER)
            tail += len(run) * rec
            queued += len(run)
            # Published per run (usually one), so _make_room() sees the truth.
            self._publish_tail(tail, len(run))
        return queued

    def _put_records(self, items: List[Any], tail: int, deadline: Optional[float], nowait: bool) -> int:
        """With the producer lock held: frame *items* as records from *tail*
        on, one write per run of records that fits before the wrap point and
        the (cached) head, publishing tail once per run.  Returns how many
        were queued (fewer only if the deadline passed)."""
        cap = self.capacity
        pack = _HEADER.pack
        zeros = _ZEROS
        parts: List[Any] = []
        append = parts.append
        start = tail  # where parts go

        def write_parts() -> None:
            if parts:
                self._write(b"".join(parts), HEADER_SIZE + start % cap)
                parts.clear()

        limit = min(self._head_seen + cap, tail - tail % cap + cap)  # no wrap inside a run
        queued = 0
        for done, data in enumerate(items):
            n = len(data)
            rec = (n + 15) & ~7
            if tail + rec > limit:
                write_parts()
                if done > queued:
                    self._publish_tail(tail, done - queued)
                    queued = done
                try:
                    tail = start = self._make_room(tail, rec, deadline, nowait)
                except TimeoutError:
                    if queued:
                        return queued
                    raise
                limit = min(self._head_seen + cap, tail - tail % cap + cap)
            if n >= _DIRECT_BYTES:
                # Joining would copy a big message once more: write it in place.
                write_parts()
                pos = HEADER_SIZE + tail % cap
                self._store64(pos, _MSG | n)
                self._write(data, pos + 8)
                tail += rec
                start = tail
                continue
            append(pack(_MSG | n))
            append(data)
            if rec - n > 8:
                append(zeros[: rec - n - 8])
            tail += rec
        write_parts()
        if len(items) > queued:
            self._publish_tail(tail, len(items) - queued)
        return len(items)

    def reserve(self, nbytes: int, timeout: Optional[float] = None) -> _Reservation:
        """Reserve *nbytes* in the ring to write a message in place.

        ``with ring.reserve(n) as buf: buf[:] = ...`` — the message is
        committed when the block exits normally and discarded if it raises.
        The producer lock is taken when the block starts (that is where a
        :class:`~shmipc.Full` comes from) and held for the duration of the block.
        The *n* bytes hold whatever was in the ring's storage before: write
        all of them.  A block is tracked on its own: arrays or memoryviews
        made from the view must be deleted inside it (``BufferError`` and
        the message discarded otherwise), whatever other threads do.
        """
        self._segment()
        if type(nbytes) is not int or not 0 <= nbytes <= self.max_message_size:
            nbytes = self._reservation_size(nbytes)
        self._deadline(timeout)  # checked now; the clock starts at the block
        return _Reservation(self, nbytes, timeout)

    def _reservation_size(self, nbytes: Any) -> int:
        """reserve()'s argument as a plain int, checked (the slow path of its
        one test).  Converted first and the result checked: an int subclass
        could answer differently each time it is asked."""
        if isinstance(nbytes, bool):
            raise TypeError("nbytes must be an int, not bool")
        try:
            n = int.__index__(operator.index(nbytes))  # an exact int
        except TypeError:
            raise TypeError(f"nbytes must be an int, not {type(nbytes).__name__}") from None
        if n < 0:
            raise ValueError("nbytes must not be negative")
        self._check_size(n)
        return n

    def close(self) -> None:
        """End of stream: consumers drain what is queued, then get
        :class:`~shmipc.EndOfStream`.  Further puts raise ``ValueError``."""
        self._av.store32_seq_cst(OFF_CLOSED, 1)
        self._ring_bells()

    def _ring_bells(self) -> None:
        """Wake every sleeper on either side so it looks at the header."""
        self._av.wake32(OFF_DATA_BELL)
        self._av.wake32(OFF_SPACE_BELL)

    # ---- consumer side ---------------------------------------------------
    def _wait_message(self, deadline: Optional[float], nowait: bool,
                      spin: bool = True) -> "tuple[int, int, int, int]":
        """With the consumer lock held: wait for a message, skip padding, and
        return (head, tail, payload position, payload length), validated.
        *spin* False: the caller already spun, go straight to sleep."""
        cap = self.capacity
        av = self._av
        while True:
            head, tail = self._indices()
            self._tail_seen = tail
            if tail != head:
                off = head % cap
                hdr = av.load64(HEADER_SIZE + off)
                kind = hdr >> 32
                n = hdr & _LEN_MASK
                if kind == KIND_PAD:
                    pad = cap - off
                    if pad > tail - head:
                        raise CorruptedError(f"ring padding record at {head} overruns the tail ({tail})")
                    self._publish_head(head + pad, 0)
                    continue
                rec = (n + 15) & ~7
                if kind != KIND_MSG or n > self.max_message_size or rec > tail - head or off + rec > cap:
                    raise CorruptedError(
                        f"ring record at position {head} is corrupted (kind={kind:#x}, length={n})"
                    )
                return head, tail, HEADER_SIZE + off + 8, n
            if av.load32(OFF_CLOSED):
                head, tail = self._indices()
                if tail == head:
                    raise EndOfStream("the ring was closed and is drained")
                continue
            if nowait:
                raise Empty("ring is empty")
            self._sleep(OFF_CONSUMER_WAITING, OFF_DATA_BELL, deadline, OFF_TAIL, tail, spin)
            spin = True

    def _publish_head(self, head: int, messages: int) -> None:
        self._av.publish64(OFF_HEAD, head, OFF_PRODUCER_WAITING, OFF_SPACE_BELL, OFF_TAKEN_COUNT, messages)

    def get(self, timeout: Optional[float] = None) -> bytes:
        """Take the oldest message, waiting for one; raises
        :class:`~shmipc.Empty` (a ``TimeoutError``) when *timeout* expires and :class:`~shmipc.EndOfStream` once a closed
        ring is drained."""
        self._segment()  # see put()
        return self.get(timeout)

    def get_nowait(self) -> bytes:
        """``get(timeout=0)``: raise :class:`~shmipc.Empty` if the ring is empty."""
        return self.get(0)

    def get_many(self, max_messages: int, timeout: Optional[float] = None) -> List[bytes]:
        """Take up to *max_messages* queued messages (at least one: waits for
        it like :meth:`get`), publishing the index once per batch."""
        if isinstance(max_messages, bool) or not isinstance(max_messages, int):
            raise TypeError("max_messages must be an int")
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        out: List[bytes] = []
        try:
            deadline = self._take_lock(self._clock, "consumer", timeout)
            head, tail, pos, n = self._wait_message(deadline, timeout == 0)
            head = self._take_records(out, max_messages, head, tail)
            self._publish_head(head, len(out))
            self._clock.release()  # inside the try: see _UNLOCK_NOTE
        except BaseException:
            self._clock.release()
            raise
        return out

    def _take_records(self, out: List[bytes], max_messages: int, head: int, tail: int) -> int:
        """With the consumer lock held and a valid record at *head*: append
        up to *max_messages* payloads to *out*, return the new head.

        A run (up to _RUN_BYTES) of equal-size records is checked and copied
        out with two read_many() calls (headers, then payloads).  Other small records are
        copied out in runs of up to _RUN_BYTES with one read and split here,
        from that private copy (each shared byte is read once); a big record
        is read on its own."""
        cap = self.capacity
        read = self._read
        read_many = self._seg.read_many
        append = out.append
        while len(out) < max_messages and head != tail:
            off = head % cap
            avail = min(tail - head, cap - off)
            hdr = self._load64(HEADER_SIZE + off)
            first = (hdr & _LEN_MASK) + 15 & ~7
            if hdr >> 32 == KIND_MSG and _RUN_BYTES < first <= avail:
                append(read(hdr & _LEN_MASK, HEADER_SIZE + off + 8))
                head += first
                continue
            # Records of one size (the common case) sit one record apart:
            # check their headers and copy their payloads out with one
            # read_many() each, when the second record looks like the first.
            count = min(min(avail, _RUN_BYTES) // first, max_messages - len(out))
            if count > 1 and hdr >> 32 == KIND_MSG and self._load64(HEADER_SIZE + off + first) == hdr:
                pos = HEADER_SIZE + off
                if read_many(count, 8, pos, first).count(_HEADER.pack(hdr)) == count:
                    out += read_many(count, hdr & _LEN_MASK, pos + 8, first)
                    head += count * first
                    continue
            # Guess the run from the first record: exact for equal sizes.
            span = min(avail, _RUN_BYTES, max(first, 8) * (max_messages - len(out)))
            run = read(span, HEADER_SIZE + off)
            words = memoryview(run).cast("Q")
            try:
                p = 0
                while p < span and len(out) < max_messages:
                    hdr = words[p >> 3]
                    n = hdr & _LEN_MASK
                    rec = (n + 15) & ~7
                    if hdr >> 32 == KIND_MSG and rec <= span - p:
                        append(run[p + 8:p + 8 + n])
                        p += rec
                    elif hdr >> 32 == KIND_MSG and p and rec <= avail - p:
                        break  # continues in the next run
                    elif hdr >> 32 == KIND_PAD and off + p + (n + RECORD_HEADER) == cap and p + n + RECORD_HEADER == avail:
                        p = avail  # padding to the wrap point
                        break
                    elif out:
                        return head + p  # deliver these; the next call reports the bad record
                    else:
                        raise CorruptedError(
                            f"ring record at position {head + p} is corrupted (kind={hdr >> 32:#x}, length={n})"
                        )
            finally:
                words.release()
            head += p
        return head

    def get_view(self, timeout: Optional[float] = None) -> _MessageView:
        """Read the oldest message in place.

        ``with ring.get_view() as view: ...`` gives a read-only memoryview of
        the message inside the ring; the space is returned when the block
        exits, and the view is released then (using it afterwards raises
        ``ValueError``).  Arrays or memoryviews made from it must be deleted
        inside the block: if one is still alive at exit, ``BufferError`` is
        raised and the message stays queued.  The consumer lock is taken
        when the block starts (where :class:`~shmipc.Empty` or ``EndOfStream``
        come from) and held for the duration of the block.  Each block is
        tracked on its own, whatever other threads do with the ring.
        """
        self._segment()
        self._deadline(timeout)  # checked now; the clock starts at the block
        return _MessageView(self, timeout)

    # ---- arrays ------------------------------------------------------------
    def put_array(self, array: Any, timeout: Optional[float] = None) -> None:
        """Queue a numpy array with its dtype and shape (one copy, into the ring)."""
        from ._arrays import array_header, encoded_size

        np_array = _numpy().asarray(array, order="C")
        header = array_header(np_array)
        with self.reserve(encoded_size(header, np_array), timeout) as buf:
            buf[: len(header)] = header
            buf[len(header):] = np_array.reshape(-1).view("u1")

    def get_array(self, timeout: Optional[float] = None) -> Any:
        """Take a message queued by :meth:`put_array`, as a new array (a copy).

        For zero copy, decode inside the view form::

            with ring.get_view() as view:
                array = shmipc.decode_array(view)
                ...            # use it, then:
                del array
        """
        from ._arrays import decode_array

        with self.get_view(timeout) as view:
            result = decode_array(view).copy()
        return result

    # ---- queries -------------------------------------------------------
    def __len__(self) -> int:
        """Messages waiting (a snapshot; other processes may change it).

        O(1): the difference of two counters kept at commit and consume,
        clamped to what the indices allow (the counters are advisory: a
        peer could write anything there)."""
        load64 = self._load64
        taken = load64(OFF_TAKEN_COUNT)
        put = load64(OFF_PUT_COUNT)
        head, tail = self._indices()
        # Each record takes at least 8 bytes: a bound no counter may pass.
        return min((put - taken) & _U64, (tail - head) // RECORD_HEADER)

    def empty(self) -> bool:
        """True when no message is waiting (a snapshot)."""
        return len(self) == 0

    def full(self) -> bool:
        """True when not even an empty message fits without waiting."""
        head, tail = self._indices()
        return not self._space_available(RECORD_HEADER)

    def __iter__(self) -> Iterator[bytes]:
        """Yield messages until end of stream."""
        while True:
            try:
                yield self.get()
            except EndOfStream:
                return

    # ---- lifetime --------------------------------------------------------
    def _release_views(self) -> None:
        for name in ("_plock", "_clock", "_av"):
            obj = self.__dict__.pop(name, None)
            if obj is not None and obj is not _DETACHED:
                obj.close()
        buf = self.__dict__.pop("_buf", None)
        if buf is not None and buf is not _DETACHED:
            buf.release()
        for name in ("_load64", "_load32", "_store64", "_read", "_write") + _GUARDED:
            self.__dict__.pop(name, None)

    def detach(self) -> None:
        """Detach this process from the ring (idempotent).  Every later call
        raises ``ValueError``.

        Refused with ``BufferError`` inside a ``reserve()``/``get_view()``
        block of this process, while another thread of it waits in the ring,
        or while a view of it is alive; the ring then stays attached and
        usable, and a later ``detach()`` works."""
        seg = self._seg
        if seg is None:
            return
        if any(lock is not _DETACHED and lock.held for lock in (self._plock, self._clock)):
            raise BufferError(
                "cannot detach the ring inside one of its reserve()/get_view() blocks; "
                "leave the block first"
            )
        try:
            self._release_views()
            try:
                seg.detach()
            except BufferError:
                if not abandon_forked_views(seg, self._pid):
                    raise
        except BaseException:
            if seg.closed:  # detached: only this bookkeeping was interrupted
                self._seg = None
            else:
                # Attached and usable again: the handles are made anew (the
                # header was validated at attach; it is not read again).
                self._bind(seg)
            raise
        self._seg = None

    def remove(self) -> None:
        """Mark the ring's segment for destruction; the kernel frees it once
        every process has detached.  Every process waiting on the ring gets
        :class:`~shmipc.RemovedError` within a wait slice (50 ms)."""
        seg = self._segment()
        self._av.store32_seq_cst(OFF_REMOVED, 1)
        self._ring_bells()
        seg.remove()

    def __enter__(self) -> "Ring":
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
        return (_attach_by_id, (type(self), seg.shmid, self._spin, tuple(seg._trusted_uids)))

    def __repr__(self) -> str:
        if self._seg is None:
            return f"<{type(self).__name__} detached>"
        return (
            f"<{type(self).__name__} shmid={self._seg.shmid} capacity={self.capacity} "
            f"messages={len(self)}>"
        )


def _attach_by_id(cls: Type[Ring], shmid: int, spin: float, trusted_uids: Iterable[int] = ()) -> Ring:
    return cls.attach(shmid=shmid, spin=spin, trusted_uids=trusted_uids)


def _discard(seg: Segment) -> None:
    """Undo a create that failed: remove first (one call, so an exception
    raised meanwhile leaves at worst a segment marked for removal), then
    detach if nothing still holds the mapping."""
    try:
        seg.remove()
    finally:
        try:
            seg.detach()
        except BufferError:
            pass  # exported still; the removed segment goes with the process


def _check_spin(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"spin must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        raise ValueError("spin must be a finite number of seconds >= 0") from None
    if not 0 <= seconds < float("inf"):
        raise ValueError("spin must be a finite number of seconds >= 0")
    return seconds


def _as_bytes_view(data: Any) -> Any:
    """A bytes-like object as something whose len() is its size in bytes."""
    if type(data) is bytearray:
        return data
    view = memoryview(data)
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        if not view.c_contiguous:
            raise ValueError("message buffers must be C-contiguous")
        view = view.cast("B")
    return view


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise ImportError("array messages need numpy: pip install numpy") from None
    return numpy
