"""The loops that producers, consumers, pingers and pongers run.

Every function here runs in a child process, after the endpoint is set up
and before/after the start barrier (see :mod:`shmipc.bench.harness`).  The
loops are written once for every contestant and call the contestant's
endpoint functions directly (bound methods fetched once, outside the loop),
so each contestant pays the same Python overhead for stamping and checking.

Message layout (every size is a multiple of 8, at least 16 bytes)::

    offset 0        8-byte little-endian sequence number
    offset 8        (N×M runs only) 8-byte producer index
    ...             filler
    offset size-8   the sequence number again

The receiver checks the length and both copies of the sequence number, so a
lost, duplicated, reordered, truncated or torn message raises
:class:`SequenceError` and the contestant is reported FAILED.
"""
from __future__ import annotations

import struct
import sys
import time
from typing import Any, Callable, Dict, List, Optional

__all__ = ["SequenceError", "Endpoint"]

_Q = struct.Struct("<Q")
#: Top bit of a ping sequence number: "stop" (the ponger exits).
STOP_BIT = 1 << 63


class SequenceError(AssertionError):
    """A receiver got a message it did not expect (wrong seq, size or producer)."""


class Endpoint:
    """One process's side of a channel, as functions the loops call.

    Contestants fill in what they support:

    ``send(buf)``            send one message (bytes-like), blocking
    ``send_many(list)``      send a batch
    ``recv() -> buf``        receive one message (bytes-like), blocking;
                             may raise EOFError at end of stream
    ``recv_many() -> list``  receive at least one message (at most ``batch``)
    ``reserve(n)``           context manager: writable buffer of n bytes,
                             committed on exit (zero-copy send)
    ``get_view()``           context manager: read-only view of the next
                             message, valid inside the block
    ``send_array(a)`` / ``recv_array()``  numpy frames by copy
    ``view_producer(size, count)``   custom copy-in loop (used when the
                             contestant's commit can fail and must be redone)
    ``frame_producer(nbytes, count)`` custom zero-copy frame loop
    ``spin``                 seconds to busy-poll before blocking (shmipc)
    ``close()``              release what this process opened
    """

    send: Optional[Callable[[Any], Any]] = None
    send_many: Optional[Callable[[List[Any]], Any]] = None
    recv: Optional[Callable[[], Any]] = None
    recv_many: Optional[Callable[[], List[Any]]] = None
    reserve: Optional[Callable[[int], Any]] = None
    get_view: Optional[Callable[[], Any]] = None
    send_array: Optional[Callable[[Any], Any]] = None
    recv_array: Optional[Callable[[], Any]] = None
    view_producer: Optional[Callable[[int, int], Any]] = None
    frame_producer: Optional[Callable[[int, int], Any]] = None

    def __init__(self, close: Optional[Callable[[], Any]] = None, **functions: Any) -> None:
        for name, fn in functions.items():
            if not hasattr(Endpoint, name):
                raise TypeError(f"unknown endpoint function {name!r}")
            setattr(self, name, fn)
        self._close = close

    def close(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            close()


def _need(fn: Any, what: str) -> Any:
    if fn is None:
        raise NotImplementedError(f"this contestant's endpoint has no {what}()")
    return fn


def _checker(size: int) -> Callable[[Any], Any]:
    """unpack_from(buf) -> (head_seq, tail_seq) in one C call."""
    return struct.Struct(f"<Q{size - 16}xQ").unpack_from


def _batch_checker(size: int) -> Optional[Callable[[List[Any], int], bool]]:
    """check(batch, first) -> True when message i of *batch* has *size* bytes
    and sequence number first + i at both ends: the per-message check, for a
    whole batch in a few C calls (one join, two strided reads), so that
    checking batches costs little next to the channel measured.  False sends
    the caller to the per-message loop, which names the bad message.  None
    where it does not apply: big messages (the join would copy them once more)
    or a big-endian machine (the numbers are little-endian)."""
    if size > 4096 or sys.byteorder != "little":
        return None
    words = size // 8

    def check(batch: List[Any], first: int) -> bool:
        if set(map(len, batch)) != {size}:
            return False
        q = memoryview(b"".join(batch)).cast("Q")
        want = list(range(first, first + len(batch)))
        ok = q[::words].tolist() == want and q[words - 1::words].tolist() == want
        q.release()
        return ok

    return check


def _mismatch(expected: int, msg: Any, size: int) -> SequenceError:
    n = len(msg)
    if n != size:
        return SequenceError(f"message {expected}: got {n} bytes, expected {size}")
    head, tail = _checker(size)(msg)
    return SequenceError(f"message {expected}: got sequence numbers {head}/{tail}")


# ---- SPSC throughput -------------------------------------------------------
def produce(ep: Endpoint, mode: str, size: int, count: int, batch: int, mutable: bool) -> None:
    """Send *count* messages of *size* bytes, seq 0..count-1."""
    if mode == "single":
        send = _need(ep.send, "send")
        if mutable:
            buf = bytearray(size)
            q = memoryview(buf).cast("Q")
            last = len(q) - 1
            for seq in range(count):
                q[0] = seq
                q[last] = seq
                send(buf)
            q.release()
        else:
            pack = _Q.pack
            mid = bytes(size - 16)
            for seq in range(count):
                h = pack(seq)
                send(h + mid + h)
    elif mode == "batch":
        send_many = _need(ep.send_many, "send_many")
        if not mutable:
            pack = _Q.pack
            mid = bytes(size - 16)
            seq = 0
            while seq < count:
                n = min(batch, count - seq)
                send_many([pack(s) + mid + pack(s) for s in range(seq, seq + n)])
                seq += n
            return
        bufs = [bytearray(size) for _ in range(batch)]
        qs = [memoryview(b).cast("Q") for b in bufs]
        last = len(qs[0]) - 1
        seq = 0
        while seq < count:
            n = min(batch, count - seq)
            for i in range(n):
                q = qs[i]
                q[0] = seq
                q[last] = seq
                seq += 1
            send_many(bufs if n == batch else bufs[:n])
        for q in qs:
            q.release()
    elif mode == "view":
        if ep.view_producer is not None:
            ep.view_producer(size, count)
            return
        reserve = _need(ep.reserve, "reserve")
        src = bytearray(size)
        q = memoryview(src).cast("Q")
        last = len(q) - 1
        for seq in range(count):
            q[0] = seq
            q[last] = seq
            with reserve(size) as buf:
                buf[:] = src
        q.release()
    else:
        raise ValueError(f"unknown mode {mode!r}")


def consume(ep: Endpoint, mode: str, size: int, count: int) -> float:
    """Receive and check *count* messages; return the time of the last one."""
    unpack = _checker(size)
    if mode == "single":
        recv = _need(ep.recv, "recv")
        for expected in range(count):
            m = recv()
            if len(m) != size or unpack(m) != (expected, expected):
                raise _mismatch(expected, m, size)
    elif mode == "batch":
        recv_many = _need(ep.recv_many, "recv_many")
        check_batch = _batch_checker(size)
        expected = 0
        while expected < count:
            batch = recv_many()
            if check_batch is not None and batch and check_batch(batch, expected):
                expected += len(batch)
                continue
            for m in batch:
                if len(m) != size or unpack(m) != (expected, expected):
                    raise _mismatch(expected, m, size)
                expected += 1
        if expected != count:
            raise SequenceError(f"received {expected} messages, {count} were sent")
    elif mode == "view":
        get_view = _need(ep.get_view, "get_view")
        for expected in range(count):
            with get_view() as m:
                if len(m) != size or unpack(m) != (expected, expected):
                    raise _mismatch(expected, bytes(m), size)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return time.perf_counter()


# ---- ping-pong latency -----------------------------------------------------
def ping(ep_out: Endpoint, ep_in: Endpoint, mode: str, size: int, duration: float, max_count: int) -> Dict[str, Any]:
    """Send a message, wait for its echo, repeat for *duration* seconds.

    Returns the list of round-trip times in microseconds.  The last message
    carries STOP_BIT so the ponger exits.
    """
    unpack = _checker(size)
    src = bytearray(size)
    q = memoryview(src).cast("Q")
    last = len(q) - 1
    clock = time.perf_counter
    samples: List[float] = []
    append = samples.append
    deadline = clock() + duration
    view = mode == "view"
    # Optional on Endpoint; _need() below checks what this mode calls.
    send: Any = ep_out.send
    recv: Any = ep_in.recv
    reserve = ep_out.reserve
    get_view: Any = ep_in.get_view
    if view:
        _need(reserve or ep_out.send, "reserve")
        _need(get_view, "get_view")
    else:
        _need(send, "send")
        _need(recv, "recv")
    seq = 0
    for seq in range(max_count):
        q[0] = seq
        q[last] = seq
        t0 = clock()
        if view:
            if reserve is not None:
                with reserve(size) as buf:
                    buf[:] = src
            else:
                send(src)
            with get_view() as m:
                ok = len(m) == size and unpack(m) == (seq, seq)
                if not ok:
                    raise _mismatch(seq, bytes(m), size)
        else:
            send(src)
            m = recv()
            if len(m) != size or unpack(m) != (seq, seq):
                raise _mismatch(seq, m, size)
        t1 = clock()
        append((t1 - t0) * 1e6)
        if t1 > deadline:
            break
    q[0] = STOP_BIT
    q[last] = STOP_BIT
    if view and reserve is not None:
        with reserve(size) as buf:
            buf[:] = src
    else:
        send(src)
    q.release()
    return {"samples": samples}


def pong(ep_in: Endpoint, ep_out: Endpoint, mode: str, size: int) -> int:
    """Echo every message back until one carries STOP_BIT; return the count."""
    unpack = _checker(size)
    n = 0
    if mode == "view":
        get_view = _need(ep_in.get_view, "get_view")
        reserve = ep_out.reserve
        send = ep_out.send
        while True:
            with get_view() as m:
                head = unpack(m)[0] if len(m) == size else None
                if head is not None and head & STOP_BIT:
                    return n
                if reserve is not None:
                    with reserve(len(m)) as buf:
                        buf[:] = m
                else:
                    _need(send, "send")(m)
            n += 1
    send = _need(ep_out.send, "send")
    recv = _need(ep_in.recv, "recv")
    while True:
        m = recv()
        if len(m) == size and unpack(m)[0] & STOP_BIT:
            return n
        send(m)
        n += 1


# ---- N×M ---------------------------------------------------------------------
def mpmc_produce(
    ep: Endpoint, mode: str, size: int, count: int, batch: int, producer: int, mutable: bool = True
) -> None:
    """Producer *producer* sends *count* messages tagged with its index."""
    if not mutable:
        pack = _Q.pack
        tag = pack(producer)
        mid = bytes(size - 24)

        def make(seq: int) -> bytes:
            h = pack(seq)
            return h + tag + mid + h

        if mode == "single":
            send = _need(ep.send, "send")
            for seq in range(count):
                send(make(seq))
        elif mode == "batch":
            send_many = _need(ep.send_many, "send_many")
            for start in range(0, count, batch):
                send_many([make(s) for s in range(start, min(count, start + batch))])
        else:
            raise ValueError(f"mode {mode!r} has no N×M loop")
        return
    buf_count = batch if mode == "batch" else 1
    bufs = [bytearray(size) for _ in range(buf_count)]
    qs = [memoryview(b).cast("Q") for b in bufs]
    last = len(qs[0]) - 1
    for q in qs:
        q[1] = producer
    try:
        if mode == "single":
            send = _need(ep.send, "send")
            q = qs[0]
            buf = bufs[0]
            for seq in range(count):
                q[0] = seq
                q[last] = seq
                send(buf)
        elif mode == "batch":
            send_many = _need(ep.send_many, "send_many")
            seq = 0
            while seq < count:
                n = min(batch, count - seq)
                for i in range(n):
                    q = qs[i]
                    q[0] = seq
                    q[last] = seq
                    seq += 1
                send_many(bufs if n == batch else bufs[:n])
        else:
            raise ValueError(f"mode {mode!r} has no N×M loop")
    finally:
        for q in qs:
            q.release()


def mpmc_consume(ep: Endpoint, mode: str, size: int, n_producers: int) -> Dict[str, Any]:
    """Receive until an empty message or EOFError (end of stream).

    Checks that each producer's messages arrive in increasing order; returns
    per-producer counts and sums so the parent can check that every message
    arrived exactly once across all consumers.
    """
    unpack = struct.Struct(f"<QQ{size - 24}xQ").unpack_from
    last_seen = [-1] * n_producers
    counts = [0] * n_producers
    sums = [0] * n_producers
    t_end = time.perf_counter()

    def check(m: Any) -> bool:
        if len(m) == 0:
            return False
        if len(m) != size:
            raise SequenceError(f"got a message of {len(m)} bytes, expected {size}")
        seq, prod, tail = unpack(m)
        if prod >= n_producers or tail != seq or seq <= last_seen[prod]:
            raise SequenceError(
                f"producer {prod}: sequence {seq}/{tail} after {last_seen[prod] if prod < n_producers else '?'}"
            )
        last_seen[prod] = seq
        counts[prod] += 1
        sums[prod] += seq
        return True

    try:
        if mode == "single":
            recv = _need(ep.recv, "recv")
            while True:
                if not check(recv()):
                    break
                t_end = time.perf_counter()
        elif mode == "batch":
            recv_many = _need(ep.recv_many, "recv_many")
            done = False
            while not done:
                for m in recv_many():
                    if not check(m):
                        done = True  # the rest of this batch must be empty too
                    elif done:
                        raise SequenceError("data after the end-of-stream marker")
                if not done:
                    t_end = time.perf_counter()
        else:
            raise ValueError(f"mode {mode!r} has no N×M loop")
    except EOFError:
        pass
    return {"counts": counts, "sums": sums, "t_end": t_end}


# ---- numpy frames ------------------------------------------------------------
def frames_produce(ep: Endpoint, zero_copy: bool, nbytes: int, count: int) -> None:
    """Hand over *count* uint64 frames of *nbytes*, frame number at both ends."""
    import numpy

    if zero_copy:
        if ep.frame_producer is not None:
            ep.frame_producer(nbytes, count)
            return
        reserve = _need(ep.reserve, "reserve")
        n = nbytes // 8
        for i in range(count):
            with reserve(nbytes) as buf:
                a = numpy.frombuffer(buf, dtype=numpy.uint64, count=n)
                a[0] = i  # the frame is produced in place: stamp both ends
                a[-1] = i
                del a
    else:
        send_array = _need(ep.send_array, "send_array")
        a = numpy.ones(nbytes // 8, dtype=numpy.uint64)
        for i in range(count):
            a[0] = i
            a[-1] = i
            send_array(a)


def frames_consume(ep: Endpoint, zero_copy: bool, nbytes: int, count: int) -> float:
    import numpy

    n = nbytes // 8
    if zero_copy:
        get_view = _need(ep.get_view, "get_view")
        for i in range(count):
            with get_view() as v:
                a = numpy.frombuffer(v, dtype=numpy.uint64)
                if a.shape != (n,) or a[0] != i or a[-1] != i:
                    got = (a.shape, int(a[0]), int(a[-1])) if a.size else (a.shape,)
                    del a
                    raise SequenceError(f"frame {i}: got shape/stamps {got}")
                del a
    else:
        recv_array = _need(ep.recv_array, "recv_array")
        for i in range(count):
            a = recv_array()
            if a.shape != (n,) or a[0] != i or a[-1] != i:
                got = (a.shape, int(a[0]), int(a[-1])) if a.size else (a.shape,)
                raise SequenceError(f"frame {i}: got shape/stamps {got}")
    return time.perf_counter()
