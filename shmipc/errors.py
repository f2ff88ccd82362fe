"""The exceptions shmipc adds; each subclasses a built-in so ``except`` by
built-in type keeps working."""
from __future__ import annotations

import errno as _errno
import queue as _queue

from . import _core

__all__ = ["CorruptedError", "Empty", "EndOfStream", "Full", "OwnerDiedError", "RemovedError"]

#: Raised by ``RobustMutex.acquire`` when the previous owner died holding the
#: lock.  The lock *is held* when this is raised: repair the protected data,
#: call ``mark_consistent()``, then ``release()``.  (Defined in C, module state.)
OwnerDiedError = _core.OwnerDiedError


class EndOfStream(EOFError):
    """A producer closed the ring (or mailbox) and everything queued is drained."""


class CorruptedError(RuntimeError):
    """Shared state written by another process fails validation.

    Values read from shared memory are untrusted; a bad magic number, layout
    version or an index or length out of range raises this instead of being
    used.  Nothing is modified when it is raised.
    """


class RemovedError(OSError):
    """The shared object was removed (``IPC_RMID``) while in use.

    ``errno`` is ``EIDRM``, as for a System V semaphore set removed under a
    waiter.
    """

    def __init__(self, message: str) -> None:
        super().__init__(_errno.EIDRM, message)


class Full(_queue.Full, TimeoutError):
    """A put could not queue its message in time (the ring stayed full, or
    its producer side stayed busy).  Both ``queue.Full`` and
    ``TimeoutError``: code written for either catches it."""


class Empty(_queue.Empty, TimeoutError):
    """A get found no message in time.  Both ``queue.Empty`` and
    ``TimeoutError``: code written for either catches it."""
