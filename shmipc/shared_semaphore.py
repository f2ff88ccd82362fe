"""Process-shared unnamed POSIX semaphores living inside shared memory.

A :class:`SharedSemaphore` is a ``sem_t`` initialised with
``sem_init(pshared=1)`` at an offset of a writable buffer, in practice a
:class:`shmipc.Segment`.  Every process attached to the segment uses the same
semaphore; uncontended ``acquire``/``release`` cost no system call.

Crash behaviour: as for any POSIX semaphore, nothing is given back when a
holder dies; a killed process's unposted count is lost for good.

The object holds a writable buffer export of the segment for as long as it
is open, so the segment cannot be detached under it (``detach()`` raises
``BufferError`` until ``close()``).
"""
from __future__ import annotations

from typing import Any, Type

from . import _core
from .segment import Segment

__all__ = ["SharedSemaphore"]


class SharedSemaphore(_core.SharedSemaphore):
    """A ``sem_t`` inside a writable buffer.

    Make one with :meth:`create` (initialise) or :meth:`attach` (use one that
    another process created).  ``SIZE`` and ``ALIGN`` give the room and
    alignment a semaphore needs; the offset is checked against both
    (``ValueError``).

    ``acquire(timeout=None) -> bool`` (``False`` on timeout, ``timeout=0``
    never blocks), ``release(n=1)``, ``value``, ``with sem:``.
    ``close()`` drops the buffer export; it is idempotent and raises
    ``RuntimeError`` while another thread of this process is blocked in
    ``acquire()`` on this object.  Any other use after ``close()`` raises
    ``ValueError``.  Pickling works when the buffer is a
    :class:`shmipc.Segment`: the receiver re-attaches the segment and the
    semaphore.
    """

    __slots__ = ()

    @classmethod
    def create(cls, buffer: Any, offset: int, value: int = 0) -> "SharedSemaphore":
        """Initialise a semaphore with *value* at *offset* of *buffer*.

        Do this exactly once, before any other process attaches:
        re-initialising a semaphore that someone waits on is undefined
        behaviour.
        """
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"value must be an int, not {type(value).__name__}")
        return cls(buffer, offset, value)

    @classmethod
    def attach(cls, buffer: Any, offset: int) -> "SharedSemaphore":
        """Use the semaphore already initialised at *offset* of *buffer*.

        ``ValueError`` if the memory does not hold one (e.g. still zeroed).
        """
        return cls(buffer, offset, None)

    def __reduce__(self) -> Any:
        if self.closed:
            raise ValueError("cannot pickle a closed semaphore")
        if not isinstance(self.obj, Segment):
            raise TypeError("only a SharedSemaphore inside a shmipc.Segment can be pickled")
        return (_reattach, (type(self), self.obj, self.offset))

    def __repr__(self) -> str:
        if self.closed:
            return f"<{type(self).__name__} offset={self.offset} closed>"
        return f"<{type(self).__name__} offset={self.offset} value={self.value}>"


def _reattach(cls: Type[SharedSemaphore], buffer: Any, offset: int) -> SharedSemaphore:
    return cls.attach(buffer, offset)
