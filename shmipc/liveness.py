"""Liveness tokens: learn at once that a peer process died.

A :class:`Liveness` is a System V semaphore set with one semaphore per
*slot*.  A participant registers on a slot by adding 1 with ``SEM_UNDO``;
the kernel undoes that addition when the process exits, however it exits
(``SIGKILL`` included), and it does so while the process dies, before a
parent reaps it: a zombie is already "gone".  Others can then ask
:meth:`Liveness.is_alive` (one ``semctl``, never blocks) or wait in
:meth:`Liveness.wait_gone` (a ``semop`` waiting for zero, with timeout).

    live = Liveness.create(slots=4)          # in the parent; pickles by id
    token = live.register(1)                 # in worker 1
    ...
    live.is_alive(1)  -> True until worker 1 unregisters or dies
    live.wait_gone(1, timeout=5.0) -> True once it is gone

A slot holds one registration at a time: registering a slot that a live
process holds raises :class:`SlotInUseError`.  A registration belongs to the
process that made it (a ``fork()`` child does not inherit it) and lasts
until :meth:`LivenessToken.unregister` or the process's exit; dropping the
token object does not end it.  Threads of one process share it.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, List, Optional

from . import _core
from .semaphore import Semaphore, _is_int

__all__ = ["Liveness", "LivenessToken", "SlotInUseError"]


class SlotInUseError(RuntimeError):
    """The slot is held by a live registration."""


def _check_slots(slots: Any) -> int:
    if not _is_int(slots):
        raise TypeError(f"slots must be an int, not {type(slots).__name__}")
    if slots < 1:
        raise ValueError(f"a liveness table needs at least 1 slot, not {slots}")
    return int(slots)


class Liveness:
    """A table of *slots* liveness tokens on one System V semaphore set.

    Make one with :meth:`create`, :meth:`open` or :meth:`attach`; pickling
    sends the set's id, so child processes re-attach.  :meth:`remove` once
    overall (waiters in :meth:`wait_gone` then raise ``FileNotFoundError``).

    :meth:`open` of an existing table and :meth:`attach` apply the
    semaphore set's owner check (:meth:`Semaphore.attach`): its owner and
    creator uid must be ours or in *trusted_uids*, else ``PermissionError``.
    Pickling carries the *trusted_uids*.
    """

    __slots__ = ("_sem",)

    def __init__(self, semaphore: Semaphore) -> None:
        if not isinstance(semaphore, Semaphore):
            raise TypeError(f"Liveness needs a shmipc.Semaphore, not {type(semaphore).__name__}")
        self._sem = semaphore

    # ---- constructors -------------------------------------------------
    @classmethod
    def create(cls, slots: int, key: Optional[int] = None, *, mode: int = 0o600) -> "Liveness":
        """A new table of *slots* free slots (``key=None``: private, by id)."""
        return cls(Semaphore.create(0, key, count=_check_slots(slots), mode=mode))

    @classmethod
    def open(
        cls, key: int, slots: int, *, mode: int = 0o600, trusted_uids: Iterable[int] = ()
    ) -> "Liveness":
        """Open the table with *key*, creating it race-free if needed.

        An existing table owned or created by a uid that is neither ours
        nor in *trusted_uids* raises ``PermissionError``.
        """
        return cls(Semaphore.open(key, 0, count=_check_slots(slots), mode=mode, trusted_uids=trusted_uids))

    @classmethod
    def attach(
        cls, key: Optional[int] = None, *, semid: Optional[int] = None, trusted_uids: Iterable[int] = ()
    ) -> "Liveness":
        """Attach an existing table by *key* or *semid* (exactly one).

        Its owner and creator uid must be ours or in *trusted_uids*, else
        ``PermissionError``.
        """
        return cls(Semaphore.attach(key, semid=semid, trusted_uids=trusted_uids))

    # ---- identity -----------------------------------------------------
    @property
    def semaphore(self) -> Semaphore:
        """The underlying semaphore set (one semaphore per slot)."""
        return self._sem

    @property
    def semid(self) -> int:
        return self._sem.semid

    @property
    def key(self) -> int:
        return self._sem.key

    @property
    def slots(self) -> int:
        return self._sem.count

    def _check_slot(self, slot: Any) -> int:
        if not _is_int(slot):
            raise TypeError(f"slot must be an int, not {type(slot).__name__}")
        if not 0 <= slot < self._sem.count:
            raise ValueError(f"slot {slot} is out of range: this table has slots 0..{self._sem.count - 1}")
        return int(slot)

    # ---- registering --------------------------------------------------
    def register(self, slot: int) -> "LivenessToken":
        """Mark this process alive on *slot* until it unregisters or exits.

        Atomically checks that the slot is free and adds 1 with
        ``SEM_UNDO``; raises :class:`SlotInUseError` if a live process holds
        it.
        """
        slot = self._check_slot(slot)
        taken = self._sem.semop(
            [(slot, 0, _core.IPC_NOWAIT), (slot, 1, _core.SEM_UNDO | _core.IPC_NOWAIT)], 0
        )
        if not taken:
            raise SlotInUseError(
                f"liveness slot {slot} is held by a live process (pid {self._sem.last_pid_of(slot)})"
            )
        return LivenessToken(self, slot)

    def register_any(self) -> "LivenessToken":
        """Register on the first free slot; :class:`SlotInUseError` if none is."""
        for slot in range(self._sem.count):
            try:
                return self.register(slot)
            except SlotInUseError:
                continue
        raise SlotInUseError(f"all {self._sem.count} liveness slots are held by live processes")

    # ---- observing ----------------------------------------------------
    def is_alive(self, slot: int) -> bool:
        """True while a live process holds *slot* (never blocks)."""
        return self._sem.value_of(self._check_slot(slot)) > 0

    def alive(self) -> List[int]:
        """The slots held by live processes, read in one ``GETALL``."""
        return [slot for slot, value in enumerate(self._sem.get_values()) if value > 0]

    def pid_of(self, slot: int) -> Optional[int]:
        """The pid that registered *slot* while it is held, else None.

        This is the kernel's "last process to operate on the slot", so it is
        only meaningful while the slot is held (and racy by nature).
        """
        slot = self._check_slot(slot)
        if self._sem.value_of(slot) == 0:
            return None
        return self._sem.last_pid_of(slot)

    def wait_gone(self, slot: int, timeout: Optional[float] = None) -> bool:
        """Wait until *slot* is free (its holder unregistered or died).

        True once it is (at once if it already is), False if *timeout*
        seconds ran out.  Interruptible like every blocking call.
        """
        return self._sem.wait_zero(timeout, index=self._check_slot(slot))

    # ---- lifetime -----------------------------------------------------
    def remove(self) -> None:
        """Destroy the table (``IPC_RMID``); idempotent on this handle."""
        self._sem.remove()

    def __reduce__(self) -> Any:
        return (type(self), (self._sem,))

    def __repr__(self) -> str:
        if self._sem.removed:
            return f"<{type(self).__name__} semid={self._sem.semid} removed>"
        return f"<{type(self).__name__} semid={self._sem.semid} slots={self._sem.count}>"


class LivenessToken:
    """This process's registration on one slot of a :class:`Liveness`.

    ``with token:`` unregisters on exit.  Tokens do not pickle: a
    registration belongs to the process that made it.
    """

    __slots__ = ("_live", "_slot", "_pid", "_registered")

    def __init__(self, live: Liveness, slot: int) -> None:
        self._live = live
        self._slot = slot
        self._pid = os.getpid()
        self._registered = True

    @property
    def liveness(self) -> Liveness:
        return self._live

    @property
    def slot(self) -> int:
        return self._slot

    @property
    def pid(self) -> int:
        """The process that registered (and must unregister)."""
        return self._pid

    @property
    def registered(self) -> bool:
        return self._registered and os.getpid() == self._pid

    def unregister(self) -> None:
        """Free the slot now (idempotent).  Only the registering process may."""
        if not self._registered:
            return
        if os.getpid() != self._pid:
            raise RuntimeError(
                f"this liveness token belongs to process {self._pid}; a forked child "
                "does not hold its parent's registration"
            )
        # -1 with SEM_UNDO cancels the +1's pending undo.  IPC_NOWAIT: if
        # someone reset the slot to 0 (SETVAL), there is nothing to give back.
        self._live.semaphore.semop([(self._slot, -1, _core.SEM_UNDO | _core.IPC_NOWAIT)], 0)
        self._registered = False

    def __enter__(self) -> "LivenessToken":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unregister()

    def __reduce__(self) -> Any:
        raise TypeError("a LivenessToken cannot be pickled: it belongs to the process that registered")

    def __repr__(self) -> str:
        state = "registered" if self.registered else "unregistered"
        return f"<LivenessToken slot={self._slot} pid={self._pid} {state}>"
