"""System V semaphore sets (``semget``/``semop``/``semctl``).

A :class:`Semaphore` is a handle on one kernel semaphore set of ``count``
semaphores, each a counter in ``0..SEMVMX`` (32767).  It is not tied to the
process that made it: any process can attach it by key or id, and pickling
sends the id, so a child process re-attaches.  The set lives until
:meth:`Semaphore.remove` (or ``ipcrm``); removing it wakes every waiter with
``FileNotFoundError`` (errno ``EIDRM``).

Crash behaviour, the reason to pick a System V semaphore:

- An operation made with ``undo=True`` (``SEM_UNDO``) is reverted by the
  kernel when the process exits, however it exits (even ``SIGKILL``, and
  before the dead process is reaped).  That is right for **locks**: a
  holder's death gives the lock back.  It is **wrong for counters**: a
  ``release(undo=True)`` that posts "one item available" is taken back
  when the poster exits, so the item becomes invisible.
- Without ``undo``, nothing is reverted: a lock held by a dead process stays
  taken forever.

``with sem:`` is the lock form: ``acquire(undo=True)`` then
``release(undo=True)``, both on semaphore 0, by the same process.

Owner check: attaching or opening an existing set refuses (``PermissionError``)
a set whose owner or creator uid is neither this process's effective uid nor
in the call's ``trusted_uids`` (see docs/security.md).

Lifetime contract: a handle needs no closing; ``remove()`` once overall.
"""
from __future__ import annotations

import time
from typing import Any, FrozenSet, Iterable, Iterator, NamedTuple, Optional, Sequence, Tuple, Union

from . import _core
from ._trust import check_owner, normalize_trusted

__all__ = [
    "Op",
    "Semaphore",
    "SemaphoreInfo",
    "remove_semaphore",
    "semaphores",
    "stat_semaphore",
]

SEMVMX: int = _core.SEMVMX
_SEM_PROC = "/proc/sysvipc/sem"
_SEM_LIMITS = "/proc/sys/kernel/sem"
_DEFAULT_LIMITS = (32000, 1024000000, 500, 32000)  # Linux defaults


class SemaphoreInfo(NamedTuple):
    """What the kernel knows about a semaphore set (``struct semid_ds``)."""

    key: int  #: the IPC key as ``ipcs`` shows it (0 = IPC_PRIVATE)
    semid: int
    mode: int  #: permission bits, e.g. 0o600
    uid: int
    gid: int
    cuid: int  #: creator uid
    cgid: int  #: creator gid
    nsems: int  #: number of semaphores in the set
    otime: int  #: last semop time (seconds since the epoch, 0 = never)
    ctime: int  #: creation / last IPC_SET / SETVAL / SETALL time


class Op(NamedTuple):
    """One operation of :meth:`Semaphore.apply`.

    *delta* < 0 waits until the value can be lowered by ``-delta``; > 0 adds
    (never waits); 0 waits until the value is zero.  *undo* adds
    ``SEM_UNDO``; *nowait* (``IPC_NOWAIT``) makes the whole call give up at
    once (``apply`` returns False) if this operation would wait.
    """

    index: int  # type: ignore[assignment]  # a field named like tuple.index(): public, kept
    delta: int
    undo: bool = False
    nowait: bool = False


OpLike = Union[Op, Tuple[int, int], Tuple[int, int, int]]


# ---- validation -------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_mode(mode: Any) -> int:
    if not _is_int(mode):
        raise TypeError(f"mode must be an int, not {type(mode).__name__}")
    if not 0 <= mode <= 0o777:
        raise ValueError(f"mode must be permission bits in 0..0o777, not {mode:#o}")
    return int(mode)


def _check_key(key: Any, *, allow_private: bool) -> int:
    if not _is_int(key):
        raise TypeError(f"key must be an int (see shmipc.ftok), not {type(key).__name__}")
    if not -(1 << 31) <= key < (1 << 32):
        raise ValueError("key must fit in 32 bits")
    if key == _core.IPC_PRIVATE and not allow_private:
        raise ValueError("IPC_PRIVATE (0) names no existing semaphore set; attach by semid instead")
    return int(key)


def _check_semid(semid: Any) -> int:
    if not _is_int(semid):
        raise TypeError(f"semid must be an int, not {type(semid).__name__}")
    if not 0 <= semid < (1 << 31):
        raise ValueError(f"semid must be in 0..2**31-1, not {semid}")
    return int(semid)


def _check_count(count: Any) -> int:
    if not _is_int(count):
        raise TypeError(f"count must be an int, not {type(count).__name__}")
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    return int(count)


def _initial_values(value: Any, count: int) -> list:
    """*value* as one int per semaphore."""
    if _is_int(value):
        values = [value] * count
    elif isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"value must be an int or a sequence of ints, not {type(value).__name__}")
    else:
        values = list(value)
        if len(values) != count:
            raise ValueError(f"value has {len(values)} items; the set has count={count} semaphores")
    for v in values:
        if not _is_int(v):
            raise TypeError(f"initial values must be ints, not {type(v).__name__}")
        if not 0 <= v <= SEMVMX:
            raise ValueError(f"initial value {v} is out of range: a semaphore holds 0..{SEMVMX} (SEMVMX)")
    return values


def _limits() -> Tuple[int, int, int, int]:
    """The kernel's (SEMMSL, SEMMNS, SEMOPM, SEMMNI) from /proc/sys/kernel/sem."""
    try:
        with open(_SEM_LIMITS) as f:
            semmsl, semmns, semopm, semmni = (int(v) for v in f.read().split()[:4])
        return semmsl, semmns, semopm, semmni
    except (OSError, ValueError):
        return _DEFAULT_LIMITS


def _check_new_count(count: Any) -> int:
    """A count for a new set: at least 1, at most SEMMSL."""
    count = _check_count(count)
    semmsl = _limits()[0]
    if count > semmsl:
        raise ValueError(f"count {count} is more than a set may hold on this system (SEMMSL = {semmsl})")
    return count


def _normalise_op(i: int, op: Any, count: int) -> Tuple[int, int, int]:
    if isinstance(op, Op):
        index, delta, flags = op.index, op.delta, 0
        if op.undo:
            flags |= _core.SEM_UNDO
        if op.nowait:
            flags |= _core.IPC_NOWAIT
    elif isinstance(op, (tuple, list)) and len(op) in (2, 3):
        index, delta = op[0], op[1]
        flags = op[2] if len(op) == 3 else 0
        if not _is_int(flags):
            raise TypeError(f"ops[{i}]: flags must be an int (SEM_UNDO | IPC_NOWAIT), not {type(flags).__name__}")
        if flags & ~(_core.SEM_UNDO | _core.IPC_NOWAIT):
            raise ValueError(f"ops[{i}]: flags may only combine shmipc.SEM_UNDO and shmipc.IPC_NOWAIT, not {flags:#x}")
    else:
        raise TypeError(f"ops[{i}] must be an Op or an (index, delta[, flags]) tuple, not {op!r}")
    if not _is_int(index):
        raise TypeError(f"ops[{i}]: index must be an int, not {type(index).__name__}")
    if not 0 <= index < count:
        raise ValueError(f"ops[{i}]: index {index} is out of range for a set of {count} semaphore(s)")
    if not _is_int(delta):
        raise TypeError(f"ops[{i}]: delta must be an int, not {type(delta).__name__}")
    if not -SEMVMX <= delta <= SEMVMX:
        raise ValueError(f"ops[{i}]: delta {delta} is out of range -{SEMVMX}..{SEMVMX} (SEMVMX)")
    return (index, delta, flags)


# ---- module functions -------------------------------------------------------

def stat_semaphore(semid: int) -> SemaphoreInfo:
    """``semctl(IPC_STAT)`` of any semaphore set by id."""
    return SemaphoreInfo(*_core.sem_stat(_check_semid(semid)))


def remove_semaphore(semid: int) -> None:
    """``semctl(IPC_RMID)``: destroy semaphore set *semid* now.

    Every process waiting on it wakes with ``FileNotFoundError`` (errno
    ``EIDRM``).  A missing id raises ``FileNotFoundError``.
    """
    _core.sem_remove(_check_semid(semid))


def semaphores() -> list:
    """The system's semaphore sets (what ``ipcs -s`` shows), from /proc/sysvipc/sem."""
    return list(_iter_proc_semaphores())


def _iter_proc_semaphores() -> Iterator[SemaphoreInfo]:
    try:
        with open(_SEM_PROC) as f:
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
        yield SemaphoreInfo(
            key=int(row["key"]) & 0xFFFFFFFF,
            semid=int(row["semid"]),
            mode=int(row["perms"], 8) & 0o777,
            uid=int(row["uid"]),
            gid=int(row["gid"]),
            cuid=int(row["cuid"]),
            cgid=int(row["cgid"]),
            nsems=int(row["nsems"]),
            otime=int(row["otime"]),
            ctime=int(row["ctime"]),
        )


# ---- the Semaphore ----------------------------------------------------------

class Semaphore(_core.Semaphore):
    """A System V semaphore set of ``count`` semaphores.

    Make one with :meth:`create`, :meth:`attach` or :meth:`open`.
    Operations take ``index=`` (default 0) to pick a semaphore of the set.

    - ``acquire(timeout=None, *, n=1, undo=False, index=0) -> bool``:
      subtract *n*, waiting as long as needed; False on timeout
      (``timeout=0`` never blocks).
    - ``release(n=1, *, undo=False, index=0)``: add *n*; never blocks.
      Past ``SEMVMX`` (32767): ``ValueError``.
    - ``wait_zero(timeout=None, *, index=0) -> bool``: wait for zero.
    - :meth:`apply`: several operations atomically, in one system call.
    - ``value_of(index)``, ``set_value(value, index=0)``, ``get_values()``,
      ``set_values(values)``, ``waiting_of(index)``,
      ``zero_waiting_of(index)``, ``last_pid_of(index)``: ``semctl``
      queries; the properties below are the same for semaphore 0.

    Blocking calls release the GIL and are interruptible: a signal handler
    runs during the wait, and Ctrl-C raises ``KeyboardInterrupt``.  If the
    set is removed while waiting, they raise ``FileNotFoundError`` with
    ``errno.EIDRM`` ("semaphore set N was removed").  After this handle's
    own :meth:`remove`, every operation raises ``ValueError``.

    ``undo=True`` (``SEM_UNDO``) makes the kernel revert the operation when
    this process exits, however it dies: use it for locks, never for counts
    of available items (see the module documentation).  An undo-acquire
    must be undone by the same process (release with ``undo=True`` there).
    ``SETVAL``/``SETALL`` (``set_value``, ``set_values``) clear every
    process's pending undo for the semaphores they set.

    :meth:`attach`, and :meth:`open` of an existing set, check its owner
    and creator uid (``sem_perm.uid``, ``cuid``): each must be this
    process's effective uid or in *trusted_uids*, else ``PermissionError``
    (root is not exempt).  Pickling carries the ``trusted_uids``.
    """

    #: True when this call created the set (set by the constructors).
    created = False
    #: The uids besides our own accepted as owner/creator at attach time.
    _trusted_uids: FrozenSet[int] = frozenset()

    # ---- constructors -------------------------------------------------
    @classmethod
    def create(
        cls,
        value: Union[int, Sequence[int]] = 0,
        key: Optional[int] = None,
        *,
        count: int = 1,
        mode: int = 0o600,
    ) -> "Semaphore":
        """Create a new set of *count* semaphores, each starting at *value*.

        *value* is an int for every semaphore or one int per semaphore.
        ``key=None`` (``IPC_PRIVATE``) makes a private set, reachable by its
        ``semid`` or by pickling; a given key uses ``IPC_CREAT|IPC_EXCL``
        and raises ``FileExistsError`` if a set already has it.
        """
        count = _check_new_count(count)
        values = _initial_values(value, count)
        mode = _check_mode(mode)
        key = _core.IPC_PRIVATE if key is None else _check_key(key, allow_private=True)
        # The owner needs read/alter to initialise; the final mode is set after.
        semid = _core.semget(key, count, _core.IPC_CREAT | _core.IPC_EXCL | mode | 0o600)
        return cls._initialise_new(semid, values, mode)

    @classmethod
    def open(
        cls,
        key: int,
        value: Union[int, Sequence[int]] = 0,
        *,
        count: int = 1,
        mode: int = 0o600,
        init_timeout: float = 2.0,
        trusted_uids: Iterable[int] = (),
    ) -> "Semaphore":
        """Open the set with *key*, creating and initialising it if needed.

        Race-free between processes: the creator sets the values
        (``SETALL``) and then performs one ``semop``, so ``sem_otime``
        becomes non-zero only once the values are in place; a process that
        finds the set already there waits (up to *init_timeout* seconds) for
        that before returning, and raises ``TimeoutError`` if it never
        happens (the creator died half-way: remove the set and retry).
        *value* applies only when this call creates the set; ``created``
        tells whether it did.  An existing set with fewer than *count*
        semaphores raises ``ValueError``; one whose owner or creator uid is
        neither ours nor in *trusted_uids* raises ``PermissionError`` (see
        :meth:`attach`).
        """
        key = _check_key(key, allow_private=False)
        trusted = normalize_trusted(trusted_uids)
        count = _check_new_count(count)
        values = _initial_values(value, count)
        mode = _check_mode(mode)
        if isinstance(init_timeout, bool) or not isinstance(init_timeout, (int, float)):
            raise TypeError(f"init_timeout must be a number of seconds, not {type(init_timeout).__name__}")
        if not init_timeout >= 0:
            raise ValueError("init_timeout must be a non-negative number of seconds")
        for _ in range(10):
            try:
                semid = _core.semget(key, count, _core.IPC_CREAT | _core.IPC_EXCL | mode | 0o600)
            except FileExistsError:
                pass
            else:
                return cls._initialise_new(semid, values, mode)
            try:
                semid = _core.semget(key, 0, 0)
                sem = cls._attach_checked(semid, trusted, key)
                _wait_initialised(semid, key, init_timeout)
            except FileNotFoundError:
                continue  # removed meanwhile (e.g. a creator failed): try again
            if sem.count < count:
                raise ValueError(
                    f"semaphore set with key {key & 0xFFFFFFFF:#010x} exists with {sem.count} "
                    f"semaphore(s), fewer than the {count} requested"
                )
            return sem
        raise FileNotFoundError(
            f"semaphore set with key {key & 0xFFFFFFFF:#010x} kept disappearing while being opened"
        )

    @classmethod
    def attach(
        cls,
        key: Optional[int] = None,
        *,
        semid: Optional[int] = None,
        trusted_uids: Iterable[int] = (),
    ) -> "Semaphore":
        """Attach an existing set by *key* or by *semid* (exactly one).

        A missing set raises ``FileNotFoundError``; a set this user may not
        read raises ``PermissionError``.  Unlike :meth:`open`, this does not
        wait for a creator to finish initialising the set.

        The set's owner uid and creator uid must each be this process's
        effective uid or one of *trusted_uids* (an iterable of ints, e.g.
        ``{1000}``); otherwise ``PermissionError`` names the set, the uid
        and the ``trusted_uids`` that would accept it.
        """
        if (key is None) == (semid is None):
            raise TypeError("attach() needs exactly one of key or semid")
        trusted = normalize_trusted(trusted_uids)
        if key is not None:
            key = _check_key(key, allow_private=False)
            semid = _core.semget(key, 0, 0)
        return cls._attach_checked(_check_semid(semid), trusted, key)

    @classmethod
    def _attach_checked(cls, semid: int, trusted: FrozenSet[int], key: Optional[int] = None) -> "Semaphore":
        # IPC_STAT on the id we hold, before any operation on the set.
        sem = cls(semid)
        info = _core.sem_stat(semid)
        ident = f"semid {semid}" if key is None else f"key {key & 0xFFFFFFFF:#010x} (semid {semid})"
        check_owner("semaphore set", ident, info[3], info[5], trusted)
        sem._trusted_uids = trusted
        return sem

    @classmethod
    def _initialise_new(cls, semid: int, values: list, mode: int) -> "Semaphore":
        # A constructor that fails after creating something removes it.
        try:
            sem = cls(semid)
            sem.set_values(values)
            # One semop so that sem_otime != 0 marks the set initialised:
            # a net-zero operation on semaphore 0, which cannot block.
            if values[0] > 0:
                touch = [(0, -1, _core.IPC_NOWAIT), (0, 1, _core.IPC_NOWAIT)]
            else:
                touch = [(0, 0, _core.IPC_NOWAIT)]
            if not sem.semop(touch, 0):
                raise RuntimeError(f"semaphore set {semid} changed while being initialised")
            if mode & 0o600 != 0o600:
                _core.sem_set(semid, -1, -1, mode)
        except BaseException:
            try:
                _core.sem_remove(semid)
            except OSError:
                pass
            raise
        sem.created = True
        return sem

    # ---- values -------------------------------------------------------
    @property
    def value(self) -> int:
        """The value of semaphore 0 (``GETVAL``); assigning sets it (``SETVAL``)."""
        return self.value_of(0)

    @value.setter
    def value(self, value: int) -> None:
        self.set_value(value, 0)

    @property
    def values(self) -> Tuple[int, ...]:
        """Every value (``GETALL``); assigning a sequence sets them all (``SETALL``)."""
        return self.get_values()

    @values.setter
    def values(self, values: Sequence[int]) -> None:
        self.set_values(values)

    @property
    def waiting(self) -> int:
        """Processes waiting to decrement semaphore 0 (``GETNCNT``, semncnt)."""
        return self.waiting_of(0)

    @property
    def zero_waiting(self) -> int:
        """Processes waiting for semaphore 0 to be zero (``GETZCNT``, semzcnt)."""
        return self.zero_waiting_of(0)

    @property
    def last_pid(self) -> int:
        """Pid of the last process to operate on semaphore 0 (``GETPID``)."""
        return self.last_pid_of(0)

    # ---- several operations at once ---------------------------------------
    def apply(self, ops: Iterable[OpLike], timeout: Optional[float] = None) -> bool:
        """Apply several operations atomically, in one ``semop`` call.

        *ops* holds :class:`Op` records or ``(index, delta)`` /
        ``(index, delta, flags)`` tuples, *flags* combining
        ``shmipc.SEM_UNDO`` and ``shmipc.IPC_NOWAIT``.  Either all are
        applied, or none: the call waits until all can be.  Returns True
        once applied; False if *timeout* ran out or an operation flagged
        *nowait* would have to wait.  At most SEMOPM (usually 500)
        operations per call.
        """
        if isinstance(ops, (str, bytes)) or not isinstance(ops, Iterable):
            raise TypeError(f"ops must be a sequence of operations, not {type(ops).__name__}")
        ops = list(ops)
        if not ops:
            raise ValueError("ops must not be empty")
        # More than SEMOPM operations: the kernel refuses (E2BIG -> ValueError).
        count = self.count
        return self.semop([_normalise_op(i, op, count) for i, op in enumerate(ops)], timeout)

    # ---- kernel object ------------------------------------------------
    def _check_usable(self) -> None:
        if self.removed:
            raise ValueError(f"operation on a removed semaphore set (semid {self.semid})")

    def stat(self) -> SemaphoreInfo:
        """``semctl(IPC_STAT)``: every ``semid_ds`` field, as a record."""
        self._check_usable()
        return stat_semaphore(self.semid)

    def chmod(self, mode: int) -> None:
        """Change the permission bits (``IPC_SET``)."""
        self._check_usable()
        _core.sem_set(self.semid, -1, -1, _check_mode(mode))

    def chown(self, uid: Optional[int] = None, gid: Optional[int] = None) -> None:
        """Change the owner uid and/or gid (``IPC_SET``); ``None`` keeps one."""
        self._check_usable()
        for name, v in (("uid", uid), ("gid", gid)):
            if v is not None and not _is_int(v):
                raise TypeError(f"{name} must be an int or None, not {type(v).__name__}")
        _core.sem_set(self.semid, -1 if uid is None else uid, -1 if gid is None else gid, -1)

    # remove() comes from the C type: IPC_RMID, idempotent on this handle.

    # ---- protocol -----------------------------------------------------
    def __enter__(self) -> "Semaphore":
        """Take semaphore 0 as a lock: ``acquire(undo=True)``.

        ``undo=True`` means the kernel gives the lock back if this process
        dies inside the ``with`` block.
        """
        self.acquire(undo=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release(undo=True)

    def __reduce__(self) -> Any:
        if self.removed:
            raise ValueError(f"cannot pickle a removed semaphore set (semid {self.semid})")
        return (_reattach, (type(self), self.semid, self._trusted_uids))

    def __repr__(self) -> str:
        name = type(self).__name__
        if self.removed:
            return f"<{name} semid={self.semid} removed>"
        return f"<{name} semid={self.semid} key={self.key:#010x} count={self.count}>"


def _wait_initialised(semid: int, key: int, timeout: float) -> None:
    """Wait until the creator of *semid* has run its first semop (sem_otime != 0)."""
    deadline = time.monotonic() + timeout
    nap = 0.0005
    while _core.sem_stat(semid)[8] == 0:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(
                f"semaphore set {semid} (key {key & 0xFFFFFFFF:#010x}) exists but was not "
                f"initialised within {timeout} s (sem_otime is still 0): its creator may "
                "have died while creating it; remove it (shmipc.remove_semaphore) and retry"
            )
        time.sleep(min(nap, left))
        nap = min(nap * 2, 0.05)


def _reattach(cls: Any, semid: int, trusted_uids: Iterable[int] = frozenset()) -> Semaphore:
    # Pickles made before trusted_uids existed carry two arguments.
    return cls._attach_checked(semid, normalize_trusted(trusted_uids))  # type: ignore[no-any-return]
