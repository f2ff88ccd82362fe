"""System V shared-memory segments: the object everything else stands on.

A :class:`Segment` is one ``shmat()`` mapping of a kernel segment.  It is a
buffer-protocol object: ``memoryview(seg)`` and ``numpy.frombuffer(seg)``
alias the shared pages with no copy.

Lifetime contract (as in ``multiprocessing.shared_memory``):

* ``detach()`` (or leaving a ``with`` block) once per process that attached;
  it refuses with ``BufferError`` while memoryviews or arrays are alive.
* ``remove()`` once overall: the kernel destroys the segment after the last
  process detaches (``IPC_RMID`` is deferred).
"""
from __future__ import annotations

import gc
import operator
import os
import sys
from typing import Any, FrozenSet, Iterable, Iterator, NamedTuple, Optional, Tuple, Union

from . import _core
from ._trust import check_owner, normalize_trusted

__all__ = [
    "Segment",
    "SegmentInfo",
    "ftok",
    "remove_segment",
    "segments",
]

_SHM_PROC = "/proc/sysvipc/shm"


def ftok(path: Union[str, bytes, "os.PathLike[str]"], proj_id: Union[int, str]) -> int:
    """Make a System V IPC key from an existing *path* and a project id.

    *proj_id* is an int in 1..255 or a one-character str (as in C, only its
    low 8 bits are used and they must not be zero).  A missing *path* raises
    ``FileNotFoundError``.
    """
    if isinstance(proj_id, str):
        if len(proj_id) != 1:
            raise ValueError("proj_id must be a one-character str or an int in 1..255")
        proj_id = ord(proj_id)
    if isinstance(proj_id, bool) or not isinstance(proj_id, int):
        raise TypeError(f"proj_id must be an int or a one-character str, not {type(proj_id).__name__}")
    if not 1 <= proj_id <= 255:
        raise ValueError("proj_id must be in 1..255 (ftok uses its low 8 bits, which must not be 0)")
    return _core.ftok(os.fspath(path), proj_id)


class SegmentInfo(NamedTuple):
    """What the kernel knows about a segment (``struct shmid_ds``)."""

    key: int
    shmid: int
    size: int
    mode: int  #: permission bits, e.g. 0o600
    uid: int
    gid: int
    cuid: int
    cgid: int
    cpid: int  #: creator pid
    lpid: int  #: pid of the last shmat/shmdt
    nattch: int  #: current number of attaches
    atime: int  #: last attach time (seconds since the epoch, 0 = never)
    dtime: int  #: last detach time
    ctime: int  #: creation / last IPC_SET time
    marked_for_destruction: bool  #: IPC_RMID done, waiting for the last detach
    locked: bool = False  #: SHM_LOCK in effect


#: The mode a Ring or Mailbox segment is created with until it is ready:
#: read/write for the owner and execute-only for the rest, which nobody asks
#: for (execute means nothing for a segment attached without SHM_EXEC).
INITIALISING_MODE = 0o611


def _check_mode(mode: int) -> int:
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"mode must be an int, not {type(mode).__name__}")
    if not 0 <= mode <= 0o777:
        raise ValueError(f"mode must be permission bits in 0..0o777, not {mode:#o}")
    if mode == INITIALISING_MODE:
        raise ValueError(
            f"mode {mode:#o} is reserved: it marks a Ring or Mailbox that is being created "
            "(shmipc cleanup removes such segments once their creator is dead)"
        )
    return mode


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an int, not {type(size).__name__}")
    if size <= 0:
        raise ValueError(f"size must be positive, not {size}")
    if size > sys.maxsize:
        raise ValueError(f"size {size} is larger than any segment can be")
    return size


def _check_shmid(shmid: Any) -> int:
    if isinstance(shmid, bool) or not isinstance(shmid, int):
        raise TypeError(f"shmid must be an int, not {type(shmid).__name__}")
    if not 0 <= shmid < (1 << 31):
        raise ValueError(f"shmid must be in 0..2**31-1, not {shmid}")
    return shmid


def _check_key(key: Any, *, allow_private: bool) -> int:
    if isinstance(key, bool) or not isinstance(key, int):
        raise TypeError(f"key must be an int (see shmipc.ftok), not {type(key).__name__}")
    if not -(1 << 31) <= key < (1 << 32):
        raise ValueError("key must fit in 32 bits")
    if key == _core.IPC_PRIVATE and not allow_private:
        raise ValueError("IPC_PRIVATE (0) names no existing segment; attach by shmid instead")
    return key


def _index(value: Any, what: str) -> int:
    # Any integer (numpy's too), but not a bool.
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(value).__name__}") from None


def stat_segment(shmid: int) -> SegmentInfo:
    """``shmctl(IPC_STAT)`` of any segment by id."""
    return SegmentInfo(*_core.shm_stat(_check_shmid(shmid)))


def remove_segment(shmid: int) -> None:
    """``shmctl(IPC_RMID)``: mark segment *shmid* for destruction.

    The kernel destroys it once the last process detaches.  A missing id
    raises ``FileNotFoundError``.
    """
    _core.shm_remove(_check_shmid(shmid))


def segments() -> list[SegmentInfo]:
    """The system's segments (what ``ipcs -m`` shows), from /proc/sysvipc/shm."""
    return list(_iter_proc_segments())


def _iter_proc_segments() -> Iterator[SegmentInfo]:
    try:
        with open(_SHM_PROC) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:  # not Linux, or /proc not mounted
        return
    if not lines:
        return
    names = lines[0].split()
    for line in lines[1:]:
        values = line.split()
        if len(values) != len(names):
            continue
        row = dict(zip(names, values))
        perms = int(row["perms"], 8)
        yield SegmentInfo(
            key=int(row["key"]) & 0xFFFFFFFF,
            shmid=int(row["shmid"]),
            size=int(row["size"]),
            mode=perms & 0o777,
            uid=int(row["uid"]),
            gid=int(row["gid"]),
            cuid=int(row["cuid"]),
            cgid=int(row["cgid"]),
            cpid=int(row["cpid"]),
            lpid=int(row["lpid"]),
            nattch=int(row["nattch"]),
            atime=int(row["atime"]),
            dtime=int(row["dtime"]),
            ctime=int(row["ctime"]),
            marked_for_destruction=bool(perms & _core.SHM_DEST),
            locked=bool(perms & _core.SHM_LOCKED),
        )


class Segment(_core.Segment):
    """One attachment of a System V shared-memory segment.

    Make one with :meth:`create`, :meth:`attach` or :meth:`open`.  The object
    supports the buffer protocol (format ``'B'``, one dimension, read-only
    exactly when attached ``SHM_RDONLY``), ``len()``, ``with`` (detaches on
    exit) and pickling (a child process re-attaches by id with the same
    access mode and the same ``trusted_uids``).

    Owner check: :meth:`attach`, and :meth:`open` when the segment already
    exists, refuse with ``PermissionError`` a segment whose owner uid or
    creator uid is neither this process's effective uid nor in
    *trusted_uids* (root included: another user may have created the
    segment under the key first).  See docs/security.md.
    """

    #: True when this attachment created the segment (set by the constructors).
    created = False
    #: The uids besides our own accepted as owner/creator at attach time.
    _trusted_uids: FrozenSet[int] = frozenset()

    # ---- constructors -------------------------------------------------
    @classmethod
    def create(cls, size: int, key: Optional[int] = None, *, mode: int = 0o600) -> "Segment":
        """Create a new segment of *size* bytes and attach it read-write.

        ``key=None`` (or ``IPC_PRIVATE``) makes a private segment, reachable by
        its ``shmid`` or by pickling; a given key uses ``IPC_CREAT|IPC_EXCL``
        and raises ``FileExistsError`` if a segment already has it.
        """
        return cls._create_marked(size, key, mode, 0)

    @classmethod
    def _create_marked(cls, size: int, key: Optional[int], mode: int, mark: int) -> "Segment":
        """create(), storing *mark* (a u64, 0 for none) at offset 0 in the
        same C call that creates and attaches: no exception can fall
        between the segment existing and this object holding it.

        A marked segment is born with INITIALISING_MODE, which the creator
        replaces with *mode* (``chmod``) once the object is ready: a creator
        killed even before its mark store leaves a segment that
        ``shmipc.cleanup()`` recognises by that mode.  Until the creator
        calls ``seg._keep()``, dropping the object removes the segment (an
        exception anywhere in the create leaves nothing behind)."""
        _check_size(size)
        _check_mode(mode)
        key = _core.IPC_PRIVATE if key is None else _check_key(key, allow_private=True)
        born = INITIALISING_MODE if mark else mode
        seg = cls._create(key, size, _core.IPC_CREAT | _core.IPC_EXCL | born, mark)
        seg.created = True
        return seg

    @classmethod
    def open(
        cls, key: int, size: int, *, mode: int = 0o600, trusted_uids: Iterable[int] = ()
    ) -> "Segment":
        """Open the segment with *key*, creating it (``IPC_CREAT``) if needed.

        If it exists and is smaller than *size*, raise ``ValueError``; if
        its owner or creator uid is neither ours nor in *trusted_uids*,
        raise ``PermissionError`` (see :meth:`attach`).  ``seg.created``
        tells whether this call made it.
        """
        _check_key(key, allow_private=False)
        _check_size(size)
        _check_mode(mode)
        trusted = normalize_trusted(trusted_uids)
        try:
            shmid = _core.shmget(key, size, _core.IPC_CREAT | _core.IPC_EXCL | mode)
        except FileExistsError:
            pass
        else:
            return cls._attach_new(shmid)
        try:
            shmid = _core.shmget(key, 0, 0)
        except FileNotFoundError:  # removed between our two calls: try again once
            return cls.open(key, size, mode=mode, trusted_uids=trusted)
        seg = cls._attach_checked(shmid, False, trusted, key)
        if seg.size < size:
            existing = seg.size
            seg.detach()
            raise ValueError(
                f"segment with key {key:#x} exists with {existing} bytes, smaller than the {size} requested"
            )
        return seg

    @classmethod
    def attach(
        cls,
        key: Optional[int] = None,
        *,
        shmid: Optional[int] = None,
        readonly: bool = False,
        trusted_uids: Iterable[int] = (),
    ) -> "Segment":
        """Attach an existing segment by *key* or by *shmid* (exactly one).

        A missing segment raises ``FileNotFoundError``, no permission
        ``PermissionError``; ``readonly=True`` maps it ``SHM_RDONLY``.

        The segment's owner uid and creator uid (``shm_perm.uid`` and
        ``cuid``) must each be this process's effective uid or one of
        *trusted_uids* (an iterable of ints, e.g. ``{1000}``); otherwise
        the segment is detached again and ``PermissionError`` names the
        segment, the uid, and the ``trusted_uids`` that would accept it.
        The check runs on the attached segment, before any byte is read.
        """
        if (key is None) == (shmid is None):
            raise TypeError("attach() needs exactly one of key or shmid")
        trusted = normalize_trusted(trusted_uids)
        if key is not None:
            _check_key(key, allow_private=False)
            shmid = _core.shmget(key, 0, 0)
        else:
            shmid = _check_shmid(shmid)
        return cls._attach_checked(shmid, bool(readonly), trusted, key)

    @classmethod
    def _attach_checked(
        cls, shmid: int, readonly: bool, trusted: FrozenSet[int], key: Optional[int] = None
    ) -> "Segment":
        # shmat first, then IPC_STAT on that id: while we are attached the
        # id names the segment we mapped, so the one checked is the one used.
        seg = cls(shmid, readonly=readonly)
        try:
            info = _core.shm_stat(shmid)
            ident = f"shmid {shmid}" if key is None else f"key {key & 0xFFFFFFFF:#010x} (shmid {shmid})"
            check_owner("segment", ident, info[4], info[6], trusted)
        except BaseException:
            seg.detach()
            raise
        seg._trusted_uids = trusted
        return seg

    @classmethod
    def _attach_new(cls, shmid: int) -> "Segment":
        # A constructor that fails after creating something removes it.
        try:
            seg = cls(shmid)
        except BaseException:
            try:
                _core.shm_remove(shmid)
            except OSError:
                pass
            raise
        seg.created = True
        return seg

    # ---- data access -----------------------------------------------------
    def ndarray(self, dtype: Any = "uint8", shape: Union[int, Tuple[int, ...], None] = None, offset: int = 0) -> Any:
        """A zero-copy numpy array over the segment, starting at *offset*.

        *shape* ``None`` covers as many whole items as fit.  The array keeps
        a buffer export alive: delete it before ``detach()``.
        """
        try:
            import numpy
        except ImportError:
            raise ImportError(
                "Segment.ndarray() needs numpy: pip install numpy (or shmipc[numpy])"
            ) from None
        if self.closed:
            raise ValueError("operation on a detached segment")
        dt = numpy.dtype(dtype)
        offset = _index(offset, "offset")
        if offset < 0 or offset > self.size:
            raise ValueError(f"offset {offset} is outside the segment ({self.size} bytes)")
        if dt.itemsize == 0:
            raise ValueError("dtype must have a non-zero item size")
        if shape is None:
            count = (self.size - offset) // dt.itemsize
            shape_t: Tuple[int, ...] = (count,)
        else:
            try:
                shape_t = (_index(shape, "shape"),)
            except TypeError:
                if isinstance(shape, (str, bytes)):
                    raise
                try:
                    shape_t = tuple(_index(dim, "shape") for dim in shape)  # type: ignore[union-attr]  # not an int
                except TypeError:
                    raise TypeError(f"shape must be an int or a sequence of ints, not {shape!r}") from None
            count = 1
            for dim in shape_t:
                if dim < 0:
                    raise ValueError(f"shape must not have negative dimensions, not {shape!r}")
                count *= dim
            if count * dt.itemsize > self.size - offset:
                raise ValueError(
                    f"an array of shape {shape_t} and dtype {dt} needs {count * dt.itemsize} bytes; "
                    f"only {self.size - offset} are left after offset {offset}"
                )
        # Before 3.12 numpy's stubs list buffer types by name; a Segment is one too.
        arr = numpy.frombuffer(self, dtype=dt, count=count, offset=offset)  # type: ignore[call-overload, unused-ignore]
        return arr.reshape(shape_t)

    # ---- kernel object -------------------------------------------------
    def stat(self) -> SegmentInfo:
        """``shmctl(IPC_STAT)``: every ``shmid_ds`` field, as a record."""
        return stat_segment(self.shmid)

    def chmod(self, mode: int) -> None:
        """Change the permission bits (``IPC_SET``)."""
        _core.shm_set(self.shmid, -1, -1, _check_mode(mode))

    def chown(self, uid: Optional[int] = None, gid: Optional[int] = None) -> None:
        """Change the owner uid and/or gid (``IPC_SET``); ``None`` keeps one."""
        _core.shm_set(self.shmid, -1 if uid is None else uid, -1 if gid is None else gid, -1)

    def remove(self) -> None:
        """Mark the segment for destruction (``IPC_RMID``).

        The mapping stays usable here and in every other attached process;
        the kernel frees the memory after the last detach.
        """
        _core.shm_remove(self.shmid)

    # ---- protocol ------------------------------------------------------
    def __enter__(self) -> "Segment":
        if self.closed:
            raise ValueError("operation on a detached segment")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    def __reduce__(self) -> Any:
        if self.closed:
            raise ValueError("cannot pickle a detached segment")
        return (_reattach, (type(self), self.shmid, self.readonly, self._trusted_uids))

    def __repr__(self) -> str:
        if self.closed:
            return f"<{type(self).__name__} shmid={self.shmid} detached>"
        mode = "ro" if self.readonly else "rw"
        return f"<{type(self).__name__} shmid={self.shmid} key={self.key:#010x} size={self.size} {mode}>"


def _reattach(
    cls: Any, shmid: int, readonly: bool, trusted_uids: Iterable[int] = frozenset()
) -> Segment:
    # Pickles made before trusted_uids existed carry three arguments.
    return cls._attach_checked(shmid, readonly, normalize_trusted(trusted_uids))  # type: ignore[no-any-return]


def abandon_forked_views(seg: Segment, pid: int) -> bool:
    """In a process forked from *pid*: if every buffer still exported from
    *seg* is a view of a block that a thread of the parent had open (a
    thread that does not exist here, so nothing will ever release it),
    detach anyway, leaving those views private zero pages (Segment._abandon).
    Returns whether it did."""
    if os.getpid() == pid:
        return False
    windows = [w for w in gc.get_objects() if type(w) is _core.Window and w.obj is seg]
    held = sum(1 for w in windows if not w.release())  # the unexported ones let go
    if held == 0 or seg.exports != held:
        return False  # something else (the user's own arrays) still uses it
    seg._abandon()
    return True
