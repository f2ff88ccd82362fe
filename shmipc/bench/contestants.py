"""shmipc's own contestants: Ring, Mailbox and the seed's raw pattern.

They use only the public API (``shmipc.Ring``, ``shmipc.Mailbox``,
``shmipc.Segment``, ``shmipc.NamedSemaphore``).  Where a name is missing
from the installed shmipc the contestant reports "unavailable: ..." instead
of failing the benchmark.
"""
from __future__ import annotations

import functools
import types
from typing import Any, List

from .base import Contestant, NotInstalled, Unavailable, unique_name
from .workloads import Endpoint

__all__ = ["all_shmipc"]

KiB = 1024
MiB = 1024 * 1024


def _shmipc(*names: str) -> Any:
    try:
        import shmipc
    except ImportError as exc:  # pragma: no cover - we are inside shmipc
        raise NotInstalled(f"not installed (shmipc: {exc})") from None
    missing = [name for name in names if not hasattr(shmipc, name)]
    if missing:
        raise Unavailable(f"unavailable: this shmipc has no {', '.join('shmipc.' + m for m in missing)}")
    return shmipc


def ring_capacity(size: int) -> int:
    """Ring storage for messages of *size* bytes: at least 4 MiB, 4 messages."""
    return max(4 * MiB, 4 * (size + 4 * KiB))


class Ring(Contestant):
    """shmipc.Ring through one of its APIs (mode), optionally spinning."""

    group = "shmipc"

    def __init__(self, mode: str, *, spin: float = 0.0) -> None:
        super().__init__()
        self.mode = mode
        self.spin = spin
        frames_note = ""
        if mode == "single":
            self.name = "shmipc.Ring put/get"
            # Ring is multi-producer/multi-consumer by design (issue 4).
            self.scenarios = frozenset({"spsc", "pingpong", "mpmc", "frames"})
            self.frames = "copy"
            self.note = "Ring.put/get"
            frames_note = "; frames: put_array/get_array (copies)"
        elif mode == "batch":
            self.name = "shmipc.Ring put_many/get_many"
            self.scenarios = frozenset({"spsc", "mpmc"})
            self.note = "batches of up to 256 messages / 256 KiB"
        elif mode == "view":
            self.name = "shmipc.Ring reserve/get_view"
            self.scenarios = frozenset({"spsc", "pingpong", "frames"})
            self.frames = "zero-copy"
            self.note = "copy in through reserve(), read in place through get_view()"
            frames_note = "; frames: written and read in place (numpy.frombuffer on the views)"
        else:
            raise ValueError(mode)
        if spin:
            self.name += f" spin={spin * 1e6:g}µs"
            self.scenarios = frozenset({"spsc", "pingpong"})  # no frames, so no frames note
            self.note += f"; ring.spin = {spin * 1e6:g} µs in both processes (busy-polls before blocking)"
        else:
            self.note += frames_note
        self.note += "; capacity max(4 MiB, 4 messages)"

    def check(self) -> None:
        self.modules["shmipc"] = _shmipc("Ring")

    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        ring = self.modules["shmipc"].Ring.create(ring_capacity(size))
        try:
            if ring.max_message_size < size:
                raise Unavailable(f"Ring.max_message_size is {ring.max_message_size}, below {size}")
        except BaseException:
            self._destroy(ring)
            raise
        return types.SimpleNamespace(ring=ring, batch=batch)

    @staticmethod
    def _destroy(ring: Any) -> None:
        try:
            ring.remove()
        finally:
            ring.detach()

    def teardown(self, chan):
        self._destroy(chan.ring)

    def end_stream(self, chan) -> bool:
        chan.ring.close()  # consumers drain, then get EndOfStream (an EOFError)
        return True

    def open_tx(self, chan, index=0):
        ring = chan.ring
        ring.spin = self.spin
        return Endpoint(send=ring.put, send_many=ring.put_many, reserve=ring.reserve, send_array=ring.put_array)

    def open_rx(self, chan, index=0):
        ring = chan.ring
        ring.spin = self.spin
        return Endpoint(
            recv=ring.get,
            recv_many=functools.partial(ring.get_many, chan.batch),
            get_view=ring.get_view,
            recv_array=ring.get_array,
        )


class Mailbox(Contestant):
    name = "shmipc.Mailbox send/recv"
    group = "shmipc"
    scenarios = frozenset({"spsc", "pingpong"})
    note = "one-slot Mailbox, send/recv"

    def check(self) -> None:
        self.modules["shmipc"] = _shmipc("Mailbox")

    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        return self.modules["shmipc"].Mailbox.create(size)

    def teardown(self, mb):
        try:
            mb.remove()
        finally:
            mb.detach()

    def open_tx(self, mb, index=0):
        return Endpoint(send=mb.send)

    def open_rx(self, mb, index=0):
        return Endpoint(recv=mb.recv)


class SeedPattern(Contestant):
    """The seed program's handoff on shmipc's raw primitives.

    One Segment holding [0:8] length, [8:] data, and two named POSIX
    semaphores: "may write" (starts at 1) and "may read" (starts at 0).
    """

    name = "shmipc Segment+2 NamedSemaphore"
    group = "shmipc"
    scenarios = frozenset({"spsc", "pingpong", "frames"})
    frames = "copy"
    note = "the seed's pattern on shmipc.Segment and two shmipc.NamedSemaphore"

    def check(self) -> None:
        self.modules["shmipc"] = _shmipc("Segment", "NamedSemaphore")

    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        shmipc = self.modules["shmipc"]
        base = "/" + unique_name()
        made: List[Any] = []
        try:
            seg = shmipc.Segment.create(size + 8)
            made.append(seg)
            may_write = shmipc.NamedSemaphore.create(base + "-w", 1)
            made.append(may_write)
            may_read = shmipc.NamedSemaphore.create(base + "-r", 0)
            made.append(may_read)
        except BaseException:
            self._destroy(made)
            raise
        return made

    @staticmethod
    def _destroy(made: List[Any]) -> None:
        errors = []
        for obj in made:
            try:
                obj.remove() if hasattr(obj, "remove") else obj.unlink()
            except Exception as exc:
                errors.append(exc)
            try:
                obj.detach() if hasattr(obj, "detach") else obj.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def teardown(self, made):
        self._destroy(made)

    def open_tx(self, made, index=0):
        seg, may_write, may_read = made
        mem = memoryview(seg)
        hdr = mem[:8].cast("Q")
        acquire, release = may_write.acquire, may_read.release

        def send(data: Any) -> None:
            n = len(data)
            acquire()
            mem[8 : 8 + n] = data
            hdr[0] = n
            release()

        def send_array(a: Any) -> None:
            n = a.nbytes
            acquire()
            mem[8 : 8 + n] = memoryview(a).cast("B")
            hdr[0] = n
            release()

        def close() -> None:
            hdr.release()
            mem.release()

        return Endpoint(send=send, send_array=send_array, close=close)

    def open_rx(self, made, index=0):
        seg, may_write, may_read = made
        mem = memoryview(seg)
        hdr = mem[:8].cast("Q")
        acquire, release = may_read.acquire, may_write.release

        def recv() -> bytes:
            acquire()
            data = mem[8 : 8 + hdr[0]].tobytes()
            release()
            return data

        def close() -> None:
            hdr.release()
            mem.release()

        return Endpoint(recv=recv, close=close)


def all_shmipc() -> List[Contestant]:
    return [
        Ring("single"),
        Ring("batch"),
        Ring("view"),
        Ring("single", spin=50e-6),
        Ring("view", spin=50e-6),
        Mailbox(),
        SeedPattern(),
    ]
