"""Fuzz harness (a): untrusted bytes in a Ring's or Mailbox's shared memory.

Each input picks a snapshot of a real ring or mailbox (queued messages,
padding at the wrap point, a latest-value mailbox with values), writes it
into a segment, patches header fields and record bytes with fuzz data,
then attaches it and runs a sequence of non-blocking calls (``timeout=0``)
on it.  The only exceptions allowed are the clear ones: CorruptedError,
TimeoutError, EndOfStream, ValueError; with the lock/semaphore words
patched as well, OSError and RuntimeError (a garbage pthread object) too.
Anything else, a crash, a hang or a sanitizer report is a failure.

    python fuzz/fuzz_layout.py --seconds 60            # atheris if installed
    python fuzz/fuzz_layout.py --random --runs 100000  # no atheris needed
"""
from __future__ import annotations

import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
if importlib.util.find_spec("shmipc") is None:  # PYTHONPATH may point at a sanitizer build
    sys.path.insert(1, os.path.dirname(_HERE))  # else: run from a checkout

from _driver import Reader, instrumented, run  # noqa: E402

with instrumented():
    from shmipc import CorruptedError, EndOfStream, Mailbox, RemovedError, Ring, Segment
    from shmipc import mailbox as mb
    from shmipc import ring as rg

CLEAR = (CorruptedError, TimeoutError, EndOfStream, ValueError, RemovedError)
# The locks and doorbells are plain futex words now: garbage in them gets
# the same clear errors as garbage anywhere else (glibc objects used to
# answer with OSError or RuntimeError).
GARBAGE_PRIMITIVES = CLEAR

RING_FIELDS = [rg.OFF_MAGIC, rg.OFF_VERSION, rg.OFF_HEADER_SIZE, rg.OFF_CAPACITY, rg.OFF_MAX_MESSAGE,
               rg.OFF_CLOSED, rg.OFF_REMOVED, rg.OFF_NONCE, rg.OFF_CONSUMER_WAITING,
               rg.OFF_PRODUCER_WAITING, rg.OFF_TAIL, rg.OFF_HEAD, rg.OFF_PUT_COUNT, rg.OFF_TAKEN_COUNT]
RING_PRIMS = [rg.OFF_PRODUCER_LOCK, rg.OFF_CONSUMER_LOCK, rg.OFF_DATA_BELL, rg.OFF_SPACE_BELL]
MB_FIELDS = [mb.OFF_MAGIC, mb.OFF_VERSION, mb.OFF_HEADER_SIZE, mb.OFF_MAX_SIZE, mb.OFF_MODE, mb.OFF_CLOSED,
             mb.OFF_SEQUENCE, mb.OFF_READERS_WAITING, mb.OFF_OWNER]
MB_PRIMS = [mb.OFF_MAY_WRITE, mb.OFF_MAY_READ, mb.OFF_WRITER_LOCK, mb.OFF_DOORBELL]
CAP = 4096
SIZE = rg.HEADER_SIZE + CAP


def _snapshots():
    """Images of real objects: (kind, bytes)."""
    images = []
    r = Ring.create(CAP)
    try:
        images.append(("ring", bytes(memoryview(r.segment))))  # empty
        for i in range(40):
            r.put(bytes([i]) * (i * 37 % 300))
            if i % 3:
                r.get()
        images.append(("ring", bytes(memoryview(r.segment))))  # messages, wrapped, padding
        r.close()
        images.append(("ring", bytes(memoryview(r.segment))))  # closed, not drained
    finally:
        r.remove()
        r.detach()
    for overwrite in (False, True):
        box = Mailbox.create(200, overwrite=overwrite)
        try:
            box.send(b"hello" * 10)
            if overwrite:
                box.send(b"x" * 200)
                box.send(b"")
            images.append(("mailbox", bytes(memoryview(box.segment))))
        finally:
            box.remove()
            box.detach()
    return images


IMAGES = _snapshots()
# One segment, removed at once: it lives while attached and never leaks.
SEG = Segment.create(max(SIZE, max(len(img) for _, img in IMAGES)))
SEG.remove()
VIEW = memoryview(SEG)
SHMID = SEG.shmid


def _patch(rd: Reader, kind: str, image: bytes, prims: bool) -> None:
    fields = RING_FIELDS if kind == "ring" else MB_FIELDS
    data_start = rg.HEADER_SIZE if kind == "ring" else mb.HEADER_SIZE
    for _ in range(rd.below(6) + 1):
        where = rd.below(4)
        if where == 0 or where == 1:
            off = rd.choice(fields) + rd.below(8) * (where == 1)
        elif where == 2:
            off = data_start + rd.below(len(image) - data_start)
        else:
            if not prims:
                continue
            off = rd.choice(RING_PRIMS if kind == "ring" else MB_PRIMS) + rd.below(64)
        width = rd.choice([1, 4, 8])
        if rd.int(1) & 1:
            value = rd.wild_int() & ((1 << (8 * width)) - 1)
        else:  # a plausible value: near the current one
            cur = int.from_bytes(image[off:off + width], "little")
            value = (cur + rd.int(2, signed=True)) & ((1 << (8 * width)) - 1)
        end = min(off + width, len(image))
        VIEW[off:end] = value.to_bytes(width, "little")[: end - off]


def _ring_ops(rd: Reader, allowed) -> None:
    try:
        r = Ring.attach(shmid=SHMID)
    except allowed:
        return
    try:
        for _ in range(rd.below(8) + 1):
            op = rd.below(11)
            try:
                if op == 0:
                    r.get(timeout=0)
                elif op == 1:
                    r.get_many(rd.below(10) + 1, timeout=0)
                elif op == 2:
                    with r.get_view(timeout=0) as v:
                        bytes(v)
                elif op == 3:
                    r.put(rd.bytes(rd.below(600)), timeout=0)
                elif op == 4:
                    if rd.int(1) & 1:
                        r.put_many([rd.bytes(rd.below(100)) for _ in range(rd.below(5) + 1)], timeout=0)
                    else:  # equal sizes: put_many's one-join path, get_many's read_many path
                        r.put_many([rd.bytes(rd.below(40))] * (rd.below(8) + 2), timeout=0)
                elif op == 5:
                    with r.reserve(rd.below(300), timeout=0) as buf:
                        buf[:] = bytes(len(buf))
                elif op == 6:
                    len(r), r.empty(), r.full(), r.closed, repr(r)
                elif op == 7:
                    r.close()
                elif op == 8:
                    r.get_array(timeout=0)
                elif op == 9:
                    r.put(rd.bytes(rd.below(4)), timeout=0)
                else:
                    list(zip(range(3), iter(lambda: r.get(timeout=0), None)))
            except allowed:
                pass
            if r._plock.held or r._clock.held:
                raise AssertionError("a ring lock stayed held after a call returned")
    finally:
        r.detach()


def _mailbox_ops(rd: Reader, allowed) -> None:
    try:
        box = Mailbox.attach(shmid=SHMID)
    except allowed:
        return
    try:
        for _ in range(rd.below(6) + 1):
            op = rd.below(7)
            try:
                if op == 0:
                    box.recv(timeout=0)
                elif op == 1:
                    box.send(rd.bytes(rd.below(250)), timeout=0)
                elif op == 2:
                    box.latest()
                elif op == 3:
                    with box.recv_view(timeout=0) as v:
                        bytes(v)
                elif op == 4:
                    with box.send_view(rd.below(250), timeout=0) as buf:
                        buf[:] = bytes(len(buf))
                elif op == 5:
                    box.closed, box.sequence, repr(box)
                else:
                    box.close()
            except allowed:
                pass
    finally:
        box.detach()


def one_input(data: bytes) -> None:
    rd = Reader(data)
    kind, image = IMAGES[rd.below(len(IMAGES))]
    prims = rd.int(1) % 8 == 0
    VIEW[: len(image)] = image
    _patch(rd, kind, image, prims)
    allowed = GARBAGE_PRIMITIVES if prims else CLEAR
    if kind == "ring":
        _ring_ops(rd, allowed)
    else:
        _mailbox_ops(rd, allowed)


if __name__ == "__main__":
    run(one_input, max_len=512)
