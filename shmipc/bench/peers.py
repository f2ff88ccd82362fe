"""The peers: other ways to move messages between Python processes.

Each one is configured as a careful user would (bigger buffers where the
library lets an ordinary user raise them, the library's own batch or
zero-copy APIs where it has them) and its settings are stated in ``note``.
Peers that need a PyPI package report "not installed" when it is missing;
``pip install shmipc[bench]`` installs them.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import mmap
import multiprocessing
import os
import select
import struct
import sys
from typing import Any, List, Optional

from .base import Contestant, Unavailable, unique_name
from .workloads import Endpoint

__all__ = ["all_peers"]

KiB = 1024
MiB = 1024 * 1024
_LEN = struct.Struct("<Q")


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _ns(**kw: Any) -> Any:
    import types

    return types.SimpleNamespace(**kw)


# ---- multiprocessing.Queue -----------------------------------------------------
class MpQueue(Contestant):
    name = "multiprocessing.Queue"
    scenarios = frozenset({"spsc", "pingpong", "mpmc", "frames"})
    frames = "copy"
    # put() hands the object to a feeder thread that pickles it later, so a
    # buffer reused by the producer would be sent after it changed.
    mutable = False
    note = "put/get of bytes (frames: a fresh array per put, pickled by the feeder thread)"

    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        return multiprocessing.get_context("fork").Queue()

    def teardown(self, q):
        q.close()
        q.join_thread()  # the parent fed end markers: no feeder thread across the next fork

    def end_stream(self, q) -> bool:
        q.put(b"")
        return False

    def open_tx(self, q, index=0):
        def close():
            q.close()
            q.join_thread()

        def send_array(a: Any) -> None:
            q.put(a.copy())

        return Endpoint(send=q.put, send_array=send_array, close=close)

    def open_rx(self, q, index=0):
        return Endpoint(recv=q.get, recv_array=q.get)


# ---- multiprocessing.Pipe ------------------------------------------------------
class MpPipe(Contestant):
    name = "multiprocessing.Pipe"
    scenarios = frozenset({"spsc", "pingpong", "frames"})
    frames = "copy"
    note = "Pipe(duplex=False), send_bytes/recv_bytes"

    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        r, w = multiprocessing.get_context("fork").Pipe(duplex=False)
        return (r, w)

    def teardown(self, chan):
        chan[0].close()
        chan[1].close()

    def open_tx(self, chan, index=0):
        return Endpoint(send=chan[1].send_bytes)

    def open_rx(self, chan, index=0):
        return Endpoint(recv=chan[0].recv_bytes)


# ---- os.pipe -----------------------------------------------------------------------
PIPE_SIZE = MiB


class OsPipe(Contestant):
    name = "os.pipe"
    scenarios = frozenset({"spsc", "pingpong", "frames"})
    frames = "copy"
    note = "raw os.write/os.read of fixed-size frames; pipe buffer raised to 1 MiB with F_SETPIPE_SZ where allowed"

    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        r, w = os.pipe()
        pipe_size = None
        setpipe = getattr(fcntl, "F_SETPIPE_SZ", 1031)
        getpipe = getattr(fcntl, "F_GETPIPE_SZ", 1032)
        if sys.platform.startswith("linux"):
            try:
                fcntl.fcntl(w, setpipe, PIPE_SIZE)
            except OSError:
                pass  # above /proc/sys/fs/pipe-max-size for this user: keep the default
            try:
                pipe_size = fcntl.fcntl(w, getpipe)
            except OSError:
                pass
        return _ns(r=r, w=w, size=size, pipe_size=pipe_size)

    def teardown(self, chan):
        for fd in (chan.r, chan.w):
            try:
                os.close(fd)
            except OSError:
                pass

    def open_tx(self, chan, index=0):
        w = chan.w
        if chan.size <= select.PIPE_BUF:
            # Writes up to PIPE_BUF are atomic: one call sends the frame.
            return Endpoint(send=functools.partial(os.write, w))
        write = os.write

        def send(data: Any) -> None:
            view = memoryview(data).cast("B")
            n = write(w, view)
            while n < len(view):  # only after a signal: blocking writes are whole
                n += write(w, view[n:])
            view.release()

        return Endpoint(send=send)

    def open_rx(self, chan, index=0):
        r, size = chan.r, chan.size
        if size <= select.PIPE_BUF:
            # Every write was one whole frame, so a read of `size` bytes
            # returns exactly one frame (or b"" at EOF).
            return Endpoint(recv=functools.partial(os.read, r, size))
        buf = bytearray(size)
        view = memoryview(buf)
        readv = os.readv

        def read_into(target: Any) -> None:
            n, total = 0, len(target)
            while n < total:
                got = readv(r, [target[n:]])
                if got == 0:
                    raise EOFError("pipe closed mid-frame")
                n += got

        def recv() -> Any:
            read_into(view)
            return view

        def recv_array() -> Any:
            import numpy

            a = numpy.empty(size // 8, dtype=numpy.uint64)
            read_into(a.data.cast("B"))
            return a

        return Endpoint(recv=recv, recv_array=recv_array, close=view.release)


# ---- multiprocessing.shared_memory + Lock ------------------------------------------
class SharedMemoryLock(Contestant):
    name = "shared_memory+Lock"
    scenarios = frozenset({"spsc", "pingpong", "frames"})
    frames = "zero-copy"
    note = (
        "multiprocessing.shared_memory one-slot handoff: a full/empty flag guarded by a "
        "multiprocessing.Lock, polled with sched_yield(); frames written and read in place"
    )
    requires = ("multiprocessing.shared_memory",)

    # Layout: [0:8] state (0 empty, 1 full) [8:16] length [16:] data
    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        from multiprocessing import shared_memory

        shm = shared_memory.SharedMemory(create=True, size=16 + size)
        shm.buf[:16] = bytes(16)
        return _ns(shm=shm, lock=multiprocessing.get_context("fork").Lock())

    def teardown(self, chan):
        chan.shm.close()
        chan.shm.unlink()

    def _views(self, chan):
        buf = chan.shm.buf
        return buf, buf[:16].cast("Q")

    def open_tx(self, chan, index=0):
        buf, hdr = self._views(chan)
        lock = chan.lock
        yield_ = os.sched_yield

        def send(data: Any) -> None:
            n = len(data)
            while True:
                with lock:
                    if hdr[0] == 0:
                        buf[16 : 16 + n] = data
                        hdr[1] = n
                        hdr[0] = 1
                        return
                yield_()

        @contextlib.contextmanager
        def reserve(n: int) -> Any:
            while True:
                with lock:
                    if hdr[0] == 0:
                        break
                yield_()
            view = buf[16 : 16 + n]
            try:
                yield view
            finally:
                view.release()
            with lock:
                hdr[1] = n
                hdr[0] = 1

        def close() -> None:
            hdr.release()
            buf.release()

        return Endpoint(send=send, reserve=reserve, close=close)

    def open_rx(self, chan, index=0):
        buf, hdr = self._views(chan)
        lock = chan.lock
        yield_ = os.sched_yield

        def recv() -> bytes:
            while True:
                with lock:
                    if hdr[0] == 1:
                        data = bytes(buf[16 : 16 + hdr[1]])
                        hdr[0] = 0
                        return data
                yield_()

        @contextlib.contextmanager
        def get_view() -> Any:
            while True:
                with lock:
                    if hdr[0] == 1:
                        n = hdr[1]
                        break
                yield_()
            view = buf[16 : 16 + n].toreadonly()
            try:
                yield view
            finally:
                view.release()
                with lock:
                    hdr[0] = 0

        def close() -> None:
            hdr.release()
            buf.release()

        return Endpoint(recv=recv, get_view=get_view, close=close)


# ---- sysv_ipc ------------------------------------------------------------------------
class SysvMessageQueue(Contestant):
    name = "sysv_ipc.MessageQueue"
    requires = ("sysv_ipc",)
    scenarios = frozenset({"spsc", "pingpong", "mpmc"})
    note = "send/receive; messages up to kernel.msgmax, queue of kernel.msgmnb bytes"

    def max_size(self):
        return _read_int("/proc/sys/kernel/msgmax") or 8192

    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        sysv_ipc = self.modules["sysv_ipc"]
        mq = sysv_ipc.MessageQueue(sysv_ipc.IPC_PRIVATE, sysv_ipc.IPC_CREX, 0o600, self.max_size())
        try:
            mq.max_size = max(mq.max_size, MiB)  # only with CAP_SYS_RESOURCE
        except Exception:
            pass
        return mq

    def teardown(self, mq):
        mq.remove()

    def end_stream(self, mq):
        try:
            mq.send(b"", block=False)
        except self.modules["sysv_ipc"].BusyError:
            return None
        return False

    def open_tx(self, mq, index=0):
        return Endpoint(send=mq.send)

    def open_rx(self, mq, index=0):
        receive = mq.receive

        def recv() -> bytes:
            return receive()[0]

        return Endpoint(recv=recv)


class _SeedPattern(Contestant):
    """The seed's handoff: one slot, "may write" and "may read" semaphores.

    Slot layout: [0:8] length, [8:] data.
    """

    scenarios = frozenset({"spsc", "pingpong", "frames"})
    frames = "copy"


class SysvSeed(_SeedPattern):
    name = "sysv_ipc shm+2 semaphores"
    requires = ("sysv_ipc",)
    note = "the seed's pattern: SharedMemory.write/read, two SysV semaphores (no SEM_UNDO)"

    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        sysv_ipc = self.modules["sysv_ipc"]
        made: List[Any] = []
        try:
            made.append(sysv_ipc.SharedMemory(sysv_ipc.IPC_PRIVATE, sysv_ipc.IPC_CREX, 0o600, size + 8))
            made.append(sysv_ipc.Semaphore(sysv_ipc.IPC_PRIVATE, sysv_ipc.IPC_CREX, 0o600, 1))
            made.append(sysv_ipc.Semaphore(sysv_ipc.IPC_PRIVATE, sysv_ipc.IPC_CREX, 0o600, 0))
        except BaseException:
            self.teardown(_ns(shm=made[0] if made else None, sems=made[1:]))
            raise
        return _ns(shm=made[0], sems=made[1:])

    def teardown(self, chan):
        if chan.shm is not None:
            chan.shm.detach()
            chan.shm.remove()
        for sem in chan.sems:
            sem.remove()

    def open_tx(self, chan, index=0):
        shm, (may_write, may_read) = chan.shm, chan.sems
        write, pack = shm.write, _LEN.pack

        def send(data: Any) -> None:
            may_write.acquire()
            write(data, 8)
            write(pack(len(data)), 0)
            may_read.release()

        def send_array(a: Any) -> None:
            may_write.acquire()
            write(a, 8)
            write(pack(a.nbytes), 0)
            may_read.release()

        return Endpoint(send=send, send_array=send_array)

    def open_rx(self, chan, index=0):
        shm, (may_write, may_read) = chan.shm, chan.sems
        read, unpack = shm.read, _LEN.unpack

        def recv() -> bytes:
            may_read.acquire()
            data = read(unpack(read(8, 0))[0], 8)
            may_write.release()
            return data

        return Endpoint(recv=recv)


# ---- posix_ipc -------------------------------------------------------------------
class PosixMessageQueue(Contestant):
    name = "posix_ipc.MessageQueue"
    requires = ("posix_ipc",)
    scenarios = frozenset({"spsc", "pingpong", "mpmc"})
    note = "send/receive; queue depth fs.mqueue.msg_max, messages up to fs.mqueue.msgsize_max"

    def max_size(self):
        return _read_int("/proc/sys/fs/mqueue/msgsize_max") or 8192

    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        posix_ipc = self.modules["posix_ipc"]
        depth = _read_int("/proc/sys/fs/mqueue/msg_max") or 10
        return posix_ipc.MessageQueue(
            "/" + unique_name(), posix_ipc.O_CREX, 0o600, max_messages=depth, max_message_size=max(size, 1)
        )

    def teardown(self, mq):
        mq.unlink()
        mq.close()

    def end_stream(self, mq):
        try:
            mq.send(b"", timeout=0)
        except self.modules["posix_ipc"].BusyError:
            return None
        return False

    def open_tx(self, mq, index=0):
        return Endpoint(send=mq.send)

    def open_rx(self, mq, index=0):
        receive = mq.receive

        def recv() -> bytes:
            return receive()[0]

        return Endpoint(recv=recv)


class PosixSeed(_SeedPattern):
    name = "posix_ipc shm+2 semaphores"
    requires = ("posix_ipc",)
    note = "the seed's pattern with POSIX shm (mmap) and two named POSIX semaphores"

    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        posix_ipc = self.modules["posix_ipc"]
        base = "/" + unique_name()
        made: List[Any] = []
        try:
            shm = posix_ipc.SharedMemory(base, posix_ipc.O_CREX, 0o600, size=size + 8)
            made.append(shm)
            mem = mmap.mmap(shm.fd, size + 8)
            shm.close_fd()
            made.append(posix_ipc.Semaphore(base + "-w", posix_ipc.O_CREX, 0o600, 1))
            made.append(posix_ipc.Semaphore(base + "-r", posix_ipc.O_CREX, 0o600, 0))
        except BaseException:
            for obj in made:
                obj.unlink()
            raise
        return _ns(shm=shm, mem=mem, sems=made[1:])

    def teardown(self, chan):
        chan.mem.close()
        chan.shm.unlink()
        for sem in chan.sems:
            sem.unlink()
            sem.close()

    def open_tx(self, chan, index=0):
        mem, (may_write, may_read) = chan.mem, chan.sems
        pack_into = _LEN.pack_into

        def send(data: Any) -> None:
            view = memoryview(data).cast("B")
            n = len(view)
            may_write.acquire()
            mem[8 : 8 + n] = view
            pack_into(mem, 0, n)
            may_read.release()
            view.release()

        return Endpoint(send=send)

    def open_rx(self, chan, index=0):
        mem, (may_write, may_read) = chan.mem, chan.sems
        unpack_from = _LEN.unpack_from

        def recv() -> bytes:
            may_read.acquire()
            data = mem[8 : 8 + unpack_from(mem, 0)[0]]
            may_write.release()
            return data

        return Endpoint(recv=recv)


# ---- faster-fifo ---------------------------------------------------------------
class FasterFifo(Contestant):
    requires = ("faster_fifo",)
    scenarios = frozenset({"spsc", "pingpong", "mpmc", "frames"})
    frames = "copy"

    def __init__(self, batched: bool) -> None:
        super().__init__()
        self.batched = batched
        self.mode = "batch" if batched else "single"
        self.name = "faster-fifo put_many/get_many" if batched else "faster-fifo put/get"
        self.note = "faster_fifo.Queue, circular buffer of max(4 MiB, 4 messages)"
        if batched:
            self.scenarios = frozenset({"spsc", "mpmc"})
            self.note += "; batches of up to 256 messages / 256 KiB"

    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        q = self.modules["faster_fifo"].Queue(max_size_bytes=max(4 * MiB, 4 * (size + 256)))
        return _ns(q=q, batch=batch)

    def end_stream(self, chan):
        import queue

        try:
            chan.q.put(b"", block=False)
        except queue.Full:
            return None
        return False

    # faster-fifo's blocking calls give up after 10 s by default: wait as
    # long as the harness allows instead (it kills a hung run itself).
    FOREVER = 24 * 3600.0

    def open_tx(self, chan, index=0):
        q = chan.q
        put = functools.partial(q.put, block=True, timeout=self.FOREVER)
        put_many = functools.partial(q.put_many, block=True, timeout=self.FOREVER)
        return Endpoint(send=put, send_many=put_many)

    def open_rx(self, chan, index=0):
        q = chan.q
        get = functools.partial(q.get, block=True, timeout=self.FOREVER)
        get_many = functools.partial(q.get_many, block=True, timeout=self.FOREVER, max_messages_to_get=chan.batch)
        return Endpoint(recv=get, recv_many=get_many, recv_array=get)


# ---- ZeroMQ ------------------------------------------------------------------------
class ZmqPair(Contestant):
    name = "pyzmq PAIR ipc://"
    requires = ("zmq",)
    scenarios = frozenset({"spsc", "pingpong", "frames"})
    frames = "copy"
    note = "PAIR over ipc://, send(copy=True); recv(copy=False) from 64 KiB; HWM of at most 64 MiB in flight"

    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        path = os.path.join("/tmp", unique_name() + ".ipc")
        return _ns(addr="ipc://" + path, path=path, size=size, hwm=max(4, min(1000, 64 * MiB // max(size, 1))))

    def teardown(self, chan):
        try:
            os.unlink(chan.path)
        except FileNotFoundError:
            pass

    def _socket(self, chan):
        zmq = self.modules["zmq"]
        sock = zmq.Context.instance().socket(zmq.PAIR)
        sock.setsockopt(zmq.SNDHWM, chan.hwm)
        sock.setsockopt(zmq.RCVHWM, chan.hwm)
        sock.setsockopt(zmq.LINGER, 0)
        return sock

    def open_tx(self, chan, index=0):
        sock = self._socket(chan)
        sock.connect(chan.addr)
        sock.send(b"hello")  # the connection is up before the clock starts
        return Endpoint(send=sock.send, close=sock.close)

    def open_rx(self, chan, index=0):
        sock = self._socket(chan)
        sock.bind(chan.addr)
        if sock.recv() != b"hello":
            raise RuntimeError("zmq handshake failed")
        if chan.size < 64 * KiB:
            return Endpoint(recv=sock.recv, close=sock.close)

        def recv() -> Any:
            return sock.recv(copy=False).buffer

        return Endpoint(recv=recv, close=sock.close)


# ---- iceoryx2 --------------------------------------------------------------------------
class Iceoryx2(Contestant):
    name = "iceoryx2 (copy in, read in place)"
    requires = ("iceoryx2",)
    mode = "view"
    scenarios = frozenset({"spsc", "pingpong", "frames"})
    frames = "zero-copy"
    note = (
        "publish/subscribe of Slice[c_uint8], safe overflow off, subscriber buffer of at most "
        "64 MiB; send() drops when that buffer is full, so the sender loans and sends again until "
        "delivered; the receiver busy-polls receive() (sched_yield() after 100 empty polls)"
    )

    def check(self) -> None:
        super().check()
        iox2 = self.modules["iceoryx2"]
        for attr in ("NodeBuilder", "ServiceName", "Slice", "ServiceType"):
            if not hasattr(iox2, attr):
                raise Unavailable(f"unavailable: iceoryx2 {getattr(iox2, '__version__', '')} has no {attr}")

    def setup(self, size, *, kind="spsc", batch=1, writers=1, readers=1):
        return _ns(name=unique_name("shmipc-bench-iox2"), size=size, depth=max(2, min(64, 64 * MiB // max(size, 1))))

    def _open(self, chan):
        iox2 = self.modules["iceoryx2"]
        try:
            iox2.set_log_level(iox2.LogLevel.Fatal)
        except Exception:
            pass
        node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        service = (
            node.service_builder(iox2.ServiceName.new(chan.name))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .enable_safe_overflow(False)
            .subscriber_max_buffer_size(chan.depth)
            .history_size(0)
            .max_publishers(1)
            .max_subscribers(1)
            .open_or_create()
        )
        return node, service

    def open_tx(self, chan, index=0):
        node, service = self._open(chan)
        publisher = service.publisher_builder().initial_max_slice_len(chan.size).create()
        loan = publisher.loan_slice_uninit
        yield_ = os.sched_yield
        byte_array = ctypes.c_uint8 * chan.size

        def send(data: Any) -> None:
            n = len(data)
            array_type = byte_array if n == chan.size else ctypes.c_uint8 * n
            while True:
                sample = loan(n)
                raw = memoryview(array_type.from_address(sample.payload_ptr))
                dst = raw.cast("B")
                dst[:] = data
                dst.release()
                raw.release()
                if sample.assume_init().send():
                    return
                yield_()  # dropped: the subscriber's buffer is full

        def view_producer(size: int, count: int) -> None:
            src = bytearray(size)
            q = memoryview(src).cast("Q")
            last = len(q) - 1
            for seq in range(count):
                q[0] = seq
                q[last] = seq
                send(src)
            q.release()

        def frame_producer(nbytes: int, count: int) -> None:
            import numpy

            for i in range(count):
                while True:
                    sample = loan(nbytes)
                    a = numpy.frombuffer(byte_array.from_address(sample.payload_ptr), dtype=numpy.uint64)
                    a[0] = i  # produced in place: stamp both ends
                    a[-1] = i
                    del a
                    if sample.assume_init().send():
                        break
                    yield_()

        state = [node, service, publisher]

        def close() -> None:
            state[2].delete()
            state.clear()

        return Endpoint(send=send, view_producer=view_producer, frame_producer=frame_producer, close=close)

    def open_rx(self, chan, index=0):
        node, service = self._open(chan)
        subscriber = service.subscriber_builder().buffer_size(chan.depth).create()
        receive = subscriber.receive
        yield_ = os.sched_yield
        byte_array = ctypes.c_uint8 * chan.size
        c_uint8 = ctypes.c_uint8

        class View:
            __slots__ = ("sample", "view")

            def __enter__(self) -> memoryview:
                sample = receive()
                if sample is None:
                    polls = 0
                    while sample is None:
                        polls += 1
                        if polls > 100:
                            yield_()  # let a producer on this core run
                        sample = receive()
                n = sample.header.number_of_elements
                array_type = byte_array if n == chan.size else c_uint8 * n
                self.sample = sample
                raw = memoryview(array_type.from_address(sample.payload_ptr))
                self.view = raw.cast("B").toreadonly()  # ctypes says "<B"; plain bytes here
                raw.release()
                return self.view

            def __exit__(self, *exc: Any) -> None:
                self.view.release()
                self.sample.delete()
                self.sample = None

        view = View()

        def get_view() -> Any:
            return view

        state = [node, service, subscriber]

        def close() -> None:
            state[2].delete()
            state.clear()

        return Endpoint(get_view=get_view, close=close)


def all_peers() -> List[Contestant]:
    """Every peer, in the order the tables list them."""
    return [
        MpQueue(),
        MpPipe(),
        OsPipe(),
        SharedMemoryLock(),
        SysvMessageQueue(),
        SysvSeed(),
        PosixMessageQueue(),
        PosixSeed(),
        FasterFifo(batched=False),
        FasterFifo(batched=True),
        ZmqPair(),
        Iceoryx2(),
    ]
