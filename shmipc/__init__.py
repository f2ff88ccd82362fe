"""shmipc: zero-copy inter-process communication over System V shared memory."""
from . import _core
from ._core import (
    IPC_CREAT,
    IPC_EXCL,
    IPC_NOWAIT,
    IPC_PRIVATE,
    IPC_RMID,
    IPC_SET,
    IPC_STAT,
    PAGE_SIZE,
    SEM_UNDO,
    SHM_RDONLY,
    SHM_RND,
    SHMLBA,
)
from .segment import Segment, SegmentInfo, ftok, remove_segment, segments, stat_segment

# The other SHM_* flags this platform defines (SHM_HUGETLB, SHM_EXEC, ...).
_SHM_FLAGS = [name for name in dir(_core) if name.startswith("SHM_")]
globals().update({name: getattr(_core, name) for name in _SHM_FLAGS})

__version__ = "0.1.0"

__all__ = [
    "IPC_CREAT",
    "IPC_EXCL",
    "IPC_NOWAIT",
    "IPC_PRIVATE",
    "IPC_RMID",
    "IPC_SET",
    "IPC_STAT",
    "PAGE_SIZE",
    "SEM_UNDO",
    "SHMLBA",
    "Segment",
    "SegmentInfo",
    "__version__",
    "ftok",
    "remove_segment",
    "segments",
    "stat_segment",
    *_SHM_FLAGS,
]

# ---- POSIX semaphores, robust mutex, atomics (issue 3, items 2, 3, 4, 6) ----
from .atomics import AtomicView, fence  # noqa: E402
from .mutex import OwnerDiedError, RobustMutex  # noqa: E402
from .named_semaphore import NamedSemaphore, unlink_semaphore  # noqa: E402
from .shared_semaphore import SharedSemaphore  # noqa: E402

__all__ += [
    "AtomicView",
    "NamedSemaphore",
    "OwnerDiedError",
    "RobustMutex",
    "SharedSemaphore",
    "fence",
    "unlink_semaphore",
]
# ---- end of issue 3 block ----
