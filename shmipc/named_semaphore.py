"""Named POSIX semaphores (``sem_open``), as in the classic shm + semaphores
pattern.

A named semaphore is a small file in ``/dev/shm`` (``sem.<name>``) that any
process knowing the name (and allowed by its mode) can open.  Its wait and
post are user-space atomics when uncontended.

Crash behaviour: the kernel does **not** give a POSIX semaphore back when
the process that took it dies.  A holder killed between ``acquire()`` and
``release()`` leaves the value one lower for good; every later waiter times
out (or blocks forever without a timeout).  Use a :class:`shmipc.RobustMutex`
for a lock that must survive a crashed holder.

Trust: for peers that trust each other only.  :meth:`NamedSemaphore.open`
refuses a file owned by a uid that is neither ours nor in ``trusted_uids``
(so another user cannot squat the name), but glibc's ``sem_t`` lives in the
shared file: a trusted peer with write access can still make this process
abort (a garbage futex word) or, by truncating the file after we mapped it,
die of ``SIGBUS``.  Between mutually untrusting processes use the System V
:class:`shmipc.Semaphore`.

Lifetime: ``close()`` once per handle (or let it be garbage collected);
``unlink()`` once overall, when no new process needs to open the name (open
handles keep working after it).
"""
from __future__ import annotations

import os
from typing import Any, FrozenSet, Iterable, Type

from . import _core
from ._trust import check_owner, normalize_trusted

__all__ = ["NamedSemaphore", "unlink_semaphore"]

#: Longest name, in bytes after the leading slash (NAME_MAX - 4 on Linux:
#: glibc opens ``/dev/shm/sem.<name>``).
NAME_MAX = _core.SEM_NAME_MAX
#: Largest value a POSIX semaphore can hold.
SEM_VALUE_MAX = getattr(_core, "SEM_VALUE_MAX", 2**31 - 1)


def _normalize_name(name: Any) -> str:
    """*name* with a leading slash, checked: non-empty, no other ``/``, no
    NUL, at most :data:`NAME_MAX` bytes after the slash."""
    if not isinstance(name, str):
        raise TypeError(f"semaphore name must be a str, not {type(name).__name__}")
    if not name.startswith("/"):
        name = "/" + name
    body = name[1:]
    if not body:
        raise ValueError("semaphore name must not be empty")
    if "/" in body:
        raise ValueError(f"semaphore name {name!r} may contain no '/' after the leading one")
    if "\0" in body:
        raise ValueError("semaphore name must not contain NUL characters")
    size = len(os.fsencode(body))
    if size > NAME_MAX:
        raise ValueError(f"semaphore name too long: {size} bytes after the slash, at most {NAME_MAX} allowed")
    return name


def _check_value(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"value must be an int, not {type(value).__name__}")
    if not 0 <= value <= SEM_VALUE_MAX:
        raise ValueError(f"value must be in 0..{SEM_VALUE_MAX}, not {value}")
    return value


def unlink_semaphore(name: str) -> None:
    """Remove the named semaphore *name* (``sem_unlink``).

    Processes that have it open keep using it; the name is free at once.  A
    missing name raises ``FileNotFoundError``.
    """
    _core.sem_unlink(_normalize_name(name))


class NamedSemaphore(_core.NamedSemaphore):
    """A handle on a named POSIX semaphore.

    Make one with :meth:`create` or :meth:`open`.  ``acquire(timeout=None)``
    returns ``True`` once taken and ``False`` on timeout (``timeout=0`` never
    blocks); ``release()`` posts; ``value`` reads the count; ``with sem:``
    acquires and releases.  Pickling sends the name: the receiving process
    opens the same semaphore.

    ``close()`` is idempotent; any other use after it raises ``ValueError``.
    It raises ``RuntimeError`` while another thread of this process is
    blocked in ``acquire()`` on this handle (closing would unmap the
    semaphore under it): release the semaphore, or let the wait time out,
    first.

    For trusted peers only (see the module documentation): :meth:`open`
    refuses a semaphore whose file another uid owns unless *trusted_uids*
    lists it, but a trusted peer that can write the file can still crash
    this process (truncating it gives ``SIGBUS``).
    """

    __slots__ = ("_trusted_uids",)
    #: The uids besides our own accepted as the file's owner at open time
    #: (unset on a handle made by calling the class directly).
    _trusted_uids: FrozenSet[int]

    @classmethod
    def create(cls, name: str, value: int = 0, *, mode: int = 0o600) -> "NamedSemaphore":
        """Create the semaphore *name* with initial *value* (``O_CREAT|O_EXCL``).

        ``FileExistsError`` if the name is taken.  *mode* is filtered by the
        process umask, as for any new file.
        """
        name = _normalize_name(name)
        _check_value(value)
        if isinstance(mode, bool) or not isinstance(mode, int):
            raise TypeError(f"mode must be an int, not {type(mode).__name__}")
        if not 0 <= mode <= 0o777:
            raise ValueError(f"mode must be permission bits in 0..0o777, not {mode:#o}")
        sem = cls(name, _core.O_CREAT | _core.O_EXCL, mode, value)
        sem._trusted_uids = frozenset()
        return sem

    @classmethod
    def open(cls, name: str, *, trusted_uids: Iterable[int] = ()) -> "NamedSemaphore":
        """Open the existing semaphore *name* (``FileNotFoundError`` if none).

        The file ``/dev/shm/sem.<name>`` is opened without following a
        symbolic link and checked on its descriptor (``fstat``): it must be
        a regular file large enough for a ``sem_t`` (else ``OSError``
        ``EINVAL``), and its owner uid must be this process's effective uid
        or one of *trusted_uids* (an iterable of ints), else the handle is
        closed and ``PermissionError`` names the semaphore, the uid and the
        ``trusted_uids`` that would accept it.  Root is not exempt.
        """
        name = _normalize_name(name)
        trusted = normalize_trusted(trusted_uids)
        sem = cls(name)
        try:
            owner = sem.owner_uid
            if owner is not None:  # None: no file to check on this platform
                check_owner("named semaphore", repr(name), owner, owner, trusted)
        except BaseException:
            sem.close()
            raise
        sem._trusted_uids = trusted
        return sem

    def unlink(self) -> None:
        """Remove this semaphore's name (see :func:`unlink_semaphore`).

        Works on a closed handle too.
        """
        _core.sem_unlink(self.name)

    def __reduce__(self) -> Any:
        if self.closed:
            raise ValueError("cannot pickle a closed semaphore")
        trusted: FrozenSet[int] = getattr(self, "_trusted_uids", frozenset())
        return (_reopen, (type(self), self.name, trusted))

    def __repr__(self) -> str:
        if self.closed:
            return f"<{type(self).__name__} {self.name!r} closed>"
        return f"<{type(self).__name__} {self.name!r} value={self.value}>"


def _reopen(cls: Type[NamedSemaphore], name: str, trusted_uids: Iterable[int] = frozenset()) -> NamedSemaphore:
    # Pickles made before trusted_uids existed carry two arguments.
    return cls.open(name, trusted_uids=trusted_uids)

