"""What a contestant is: the small interface every mechanism implements.

A contestant makes a channel in the parent process (``setup``), opens its
sending and receiving sides in child processes (``open_tx``/``open_rx``,
returning :class:`~shmipc.bench.workloads.Endpoint` objects) and removes
what it made (``teardown``).  Channels reach the children by ``fork``
inheritance, so they need not pickle.

Availability: ``check()`` imports what the contestant needs; a missing
module raises :class:`NotInstalled` ("not installed"), anything else that
makes it unusable here raises :class:`Unavailable` ("unavailable: ...").
"""
from __future__ import annotations

import importlib
import itertools
import os
from typing import Any, FrozenSet, Optional, Tuple

from .workloads import Endpoint

__all__ = ["Contestant", "NotInstalled", "Unavailable", "unique_name"]

_counter = itertools.count()


def unique_name(prefix: str = "shmipc-bench") -> str:
    """A name no other run (or process) uses: prefix-pid-counter."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


class Unavailable(Exception):
    """The contestant cannot run on this machine; the message says why."""


class NotInstalled(Unavailable):
    """A module the contestant needs is not importable."""


class Contestant:
    #: Unique display name, e.g. "os.pipe".
    name = ""
    #: "peer" or "shmipc": ratios are computed against the best peer.
    group = "peer"
    #: Modules to import in check(); a missing one means "not installed".
    requires: Tuple[str, ...] = ()
    #: Which loop the workloads use: "single", "batch" or "view".
    mode = "single"
    #: Scenarios this contestant takes part in.
    scenarios: FrozenSet[str] = frozenset({"spsc", "pingpong"})
    #: For the "frames" scenario: "copy" or "zero-copy".
    frames: Optional[str] = None
    #: send() copies the data before returning, so a reused buffer is safe.
    mutable = True
    #: Shown under the tables: how this contestant was configured.
    note = ""

    def __init__(self) -> None:
        self.modules: dict = {}

    # ---- availability ------------------------------------------------------
    def check(self) -> None:
        """Import what is needed; raise NotInstalled / Unavailable."""
        for mod in self.requires:
            try:
                self.modules[mod] = importlib.import_module(mod)
            except ImportError as exc:
                raise NotInstalled(f"not installed ({mod}: {exc})") from None

    def max_size(self) -> Optional[int]:
        """Largest message this contestant can carry (None: no limit)."""
        return None

    def supports(self, scenario: str) -> bool:
        return scenario in self.scenarios

    # ---- parent side ---------------------------------------------------------
    def setup(self, size: int, *, kind: str = "spsc", batch: int = 1, writers: int = 1, readers: int = 1) -> Any:
        """Make a channel for messages of up to *size* bytes."""
        raise NotImplementedError

    def teardown(self, chan: Any) -> None:
        """Remove what setup() made (kernel objects, files)."""

    def end_stream(self, chan: Any) -> Optional[bool]:
        """N×M runs: all producers are done; stop one consumer.

        Must not block (it runs in the parent, which watches the deadline):
        return None if the channel is full right now (the harness tries
        again shortly), False after sending one end marker (an empty
        message, which FIFO order puts behind all data), or True if this
        call stops every consumer at once (as closing a stream does).  The
        harness asks for one marker at a time, once more each time a
        consumer has stopped, so a batched receive never takes two.

        This default sends through a sending endpoint and may block:
        contestants with bounded channels override it.
        """
        ep = self.open_tx(chan, -1)
        try:
            ep.send(b"")  # type: ignore[misc]  # Optional on Endpoint; unbounded contestants have send()
        finally:
            ep.close()
        return False

    # ---- child side ------------------------------------------------------------
    def open_tx(self, chan: Any, index: int = 0) -> Endpoint:
        raise NotImplementedError

    def open_rx(self, chan: Any, index: int = 0) -> Endpoint:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
