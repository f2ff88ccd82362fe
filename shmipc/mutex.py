"""A robust process-shared mutex living inside shared memory.

:class:`RobustMutex` is a ``pthread_mutex_t`` with ``PTHREAD_PROCESS_SHARED``,
``PTHREAD_MUTEX_ROBUST`` and ``PTHREAD_MUTEX_ERRORCHECK``, at an offset of a
writable buffer (in practice a :class:`shmipc.Segment`).

Crash behaviour: when the owner dies holding the lock (killed, crashed, or a
thread that exits without releasing), the kernel marks the lock, and the next
``acquire()`` raises :class:`OwnerDiedError` **with the lock held**.  The
caller repairs the data the lock protects, calls :meth:`mark_consistent`, then
``release()``.  Releasing without ``mark_consistent()`` makes the mutex
permanently unrecoverable: every later ``acquire()`` raises ``OSError``
(``errno.ENOTRECOVERABLE``) and the mutex must be created again.

The lock belongs to a thread: the thread that acquired it must release it
(``RuntimeError`` otherwise), and acquiring it twice from one thread raises
``RuntimeError`` instead of deadlocking.
"""
from __future__ import annotations

from typing import Any, Type

from . import _core
from .segment import Segment

__all__ = ["OwnerDiedError", "RobustMutex"]

OwnerDiedError = _core.OwnerDiedError


class RobustMutex(_core.RobustMutex):
    """A robust process-shared mutex inside a writable buffer.

    Make one with :meth:`create` (initialise) or :meth:`attach`.  ``SIZE``
    and ``ALIGN`` give the room and alignment it needs; the offset is checked
    against both (``ValueError``).

    ``acquire(timeout=None) -> bool``: ``True`` when locked, ``False`` on
    timeout (``timeout=0`` never blocks); raises :class:`OwnerDiedError`
    with the lock held when the previous owner died.  A blocked ``acquire``
    wakes every 20 ms to run signal handlers, so Ctrl-C interrupts it.
    ``with mutex:`` acquires and releases; after an owner death
    ``__enter__`` marks the mutex consistent, releases it and raises
    ``OwnerDiedError`` (the body does not run, nothing stays held): to
    repair the protected state while holding the lock, use ``acquire()``.

    A glibc robust mutex links pointers into its holder's thread through the
    shared memory: use it between **trusting peers only** (a peer that can
    write it can make its holder write anywhere).  Ring and Mailbox use
    :class:`shmipc._core.FutexLock` instead (docs/security.md).

    ``close()`` drops the buffer export.  It is idempotent and raises
    ``RuntimeError`` while the lock is held through this object (release
    first: a held robust mutex sits on the thread's robust list, and its
    memory must stay mapped) or while a thread is blocked in ``acquire()``.
    Dropping the last reference to an object that holds the lock releases
    it.  Any use after ``close()`` raises ``ValueError``.  Pickling works
    when the buffer is a :class:`shmipc.Segment`.
    """

    __slots__ = ()

    @classmethod
    def create(cls, buffer: Any, offset: int) -> "RobustMutex":
        """Initialise an unlocked mutex at *offset* of *buffer*.

        Do this once, before other processes attach; re-initialising a mutex
        that someone holds or waits on is undefined behaviour.
        """
        return cls(buffer, offset, True)

    @classmethod
    def attach(cls, buffer: Any, offset: int) -> "RobustMutex":
        """Use the mutex already initialised at *offset* of *buffer*.

        ``ValueError`` if the memory does not hold one (e.g. still zeroed).
        """
        return cls(buffer, offset, False)

    def __reduce__(self) -> Any:
        if self.closed:
            raise ValueError("cannot pickle a closed mutex")
        if not isinstance(self.obj, Segment):
            raise TypeError("only a RobustMutex inside a shmipc.Segment can be pickled")
        return (_reattach, (type(self), self.obj, self.offset))

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("held" if self._held else "not held here")
        return f"<{type(self).__name__} offset={self.offset} {state}>"


def _reattach(cls: Type[RobustMutex], buffer: Any, offset: int) -> RobustMutex:
    return cls.attach(buffer, offset)
