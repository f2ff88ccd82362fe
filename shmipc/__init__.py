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

# ---- System V semaphore sets and liveness tokens (semaphore.py, liveness.py)
from ._core import SEMVMX
from .liveness import Liveness, LivenessToken, SlotInUseError
from .semaphore import Op, Semaphore, SemaphoreInfo, remove_semaphore, semaphores, stat_semaphore

_SEMAPHORE_ALL = [
    "Liveness",
    "LivenessToken",
    "Op",
    "SEMVMX",
    "Semaphore",
    "SemaphoreInfo",
    "SlotInUseError",
    "remove_semaphore",
    "semaphores",
    "stat_semaphore",
]
# ---- end of semaphore block

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
    *_SEMAPHORE_ALL,
]

# ---- messaging: Ring, Mailbox and their errors (issue 4) ----
from ._arrays import decode_array  # noqa: E402
from .errors import CorruptedError, Empty, EndOfStream, Full, RemovedError  # noqa: E402
from .mailbox import Mailbox  # noqa: E402
from .ring import Ring  # noqa: E402

__all__ += [
    "CorruptedError",
    "Empty",
    "EndOfStream",
    "Full",
    "Mailbox",
    "RemovedError",
    "Ring",
    "decode_array",
]
# ---- end of messaging block ----
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

# ---- stale-object cleanup (cleanup.py)
from .cleanup import StaleObject, cleanup  # noqa: E402

__all__ += ["StaleObject", "cleanup"]
# ---- end of cleanup block

