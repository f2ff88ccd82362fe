"""Ring: single-process semantics, validation of shared state, and
multi-process integrity (producers x consumers with per-producer sequence
numbers and checksums)."""
import hashlib
import itertools
import multiprocessing
import os
import pickle
import random
import signal
import struct
import time

import pytest

import shmipc
from shmipc import ring as ring_mod

np = pytest.importorskip("numpy")

CONTEXTS = ["fork", "spawn"]


@pytest.fixture
def ring():
    r = shmipc.Ring.create(4096)
    try:
        yield r
    finally:
        if not r.detached:
            r.remove()
            r.detach()


def make_ring(capacity):
    return shmipc.Ring.create(capacity)


def cleanup(r):
    if not r.detached:
        r.remove()
        r.detach()


# ---- basics -----------------------------------------------------------------


def test_put_get_round_trip(ring):
    ring.put(b"hello")
    ring.put(b"")
    ring.put(bytearray(b"world"))
    ring.put(memoryview(b"view"))
    assert len(ring) == 4
    assert ring.get() == b"hello"
    assert ring.get() == b""
    assert ring.get() == b"world"
    assert ring.get() == b"view"
    assert len(ring) == 0
    assert ring.empty()


def test_attributes(ring):
    assert ring.capacity == 4096
    assert ring.max_message_size == 4096 - 8
    assert ring.shmid == ring.segment.shmid
    assert ring.key == 0
    st = ring.segment.stat()
    assert st.mode == 0o600
    assert "Ring" in repr(ring)


def test_non_byte_buffers(ring):
    arr = np.arange(10, dtype=np.int32)
    ring.put(arr)
    assert ring.get() == arr.tobytes()
    with pytest.raises(ValueError):
        ring.put(np.arange(10, dtype=np.int32)[::2])  # not contiguous


def test_oversize_raises_at_once(ring):
    start = time.monotonic()
    with pytest.raises(ValueError, match="never fit"):
        ring.put(b"x" * (ring.max_message_size + 1))
    with pytest.raises(ValueError, match="never fit"):
        ring.put_many([b"a", b"x" * (ring.max_message_size + 1)])
    with pytest.raises(ValueError):
        ring.reserve(ring.max_message_size + 1)
    assert time.monotonic() - start < 0.5
    assert len(ring) == 0  # put_many checked sizes before queueing any


def test_exact_fit_message_in_every_position():
    r = make_ring(64)
    try:
        big = bytes(range(56))
        assert r.max_message_size == 56
        for shift in range(0, 64, 8):
            # move the indices to every alignment, then send an exact fit
            for _ in range(shift // 8):
                r.put(b"")
                assert r.get() == b""
            r.put(big)
            assert r.get() == big
            assert r.empty()
    finally:
        cleanup(r)


def test_wraparound_every_message():
    r = make_ring(48)
    try:
        rng = random.Random(1)
        for i in range(2000):
            msg = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 41)))
            r.put(msg)
            assert r.get() == msg, i
    finally:
        cleanup(r)


def test_full_and_timeouts():
    r = make_ring(32)
    try:
        r.put(b"12345678")
        r.put(b"12345678")
        assert r.full()
        with pytest.raises(TimeoutError):
            r.put_nowait(b"x")
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            r.put(b"x", timeout=0.2)
        elapsed = time.monotonic() - start
        assert 0.2 <= elapsed < 0.25 + 0.05
        assert r.get() == b"12345678"
        assert r.get() == b"12345678"
        with pytest.raises(TimeoutError):
            r.get_nowait()
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            r.get(timeout=0.2)
        assert 0.2 <= time.monotonic() - start < 0.3
        with pytest.raises(TimeoutError):
            r.get_many(4, timeout=0)
    finally:
        cleanup(r)


def test_bad_arguments(ring):
    with pytest.raises(TypeError):
        ring.put("text")
    with pytest.raises(ValueError):
        ring.get(timeout=-1)
    with pytest.raises(TypeError):
        ring.get(timeout="1")
    with pytest.raises(ValueError):
        ring.get_many(0)
    with pytest.raises(TypeError):
        ring.get_many(1.5)
    with pytest.raises(ValueError):
        ring.reserve(-1)
    with pytest.raises(TypeError):
        shmipc.Ring.create("big")
    with pytest.raises(ValueError):
        shmipc.Ring.create(8)
    with pytest.raises(TypeError):
        shmipc.Ring.attach()


def test_batches(ring):
    msgs = [bytes([i]) * i for i in range(50)]
    assert ring.put_many(msgs) == 50
    assert ring.put_many([]) == 0
    got = []
    while len(got) < 50:
        got += ring.get_many(7)
        assert len(got) <= 50
    assert got == msgs


@pytest.mark.parametrize("max_messages", [1, 3, 64])
def test_get_many_runs_mixed_sizes_across_wraps(max_messages):
    # Small records are copied out in runs, big ones one by one; a run is
    # sized from its first record, so small-then-big exercises the refill.
    big = ring_mod._RUN_BYTES + 40
    r = make_ring(4 * big)
    try:
        rng = random.Random(max_messages)
        sizes = [rng.choice([0, 1, 7, 8, 9, 64, 1000, big]) for _ in range(300)]
        msgs = [os.urandom(n) for n in sizes]
        got = []
        pending = list(msgs)
        while len(got) < len(msgs):
            while pending:
                try:
                    queued = r.put_many(pending[:5], timeout=0)
                except TimeoutError:
                    break
                assert 1 <= queued <= 5
                del pending[:queued]
            batch = r.get_many(max_messages, timeout=0)
            assert 1 <= len(batch) <= max_messages
            got += batch
        assert got == msgs
        assert all(type(m) is bytes for m in got)
    finally:
        cleanup(r)


def test_get_many_delivers_good_records_before_a_corrupted_one(ring):
    ring.put_many([b"one", b"two", b"three"])
    with _raw(ring) as seg:
        third = ring_mod.HEADER_SIZE + 2 * 16  # each record is 8 + 8 bytes
        seg.write(struct.pack("=I", 0x1234), third + 4)
    assert ring.get_many(10) == [b"one", b"two"]
    with pytest.raises(shmipc.CorruptedError):
        ring.get_many(10)
    with pytest.raises(shmipc.CorruptedError):
        ring.get(timeout=0)


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 64, 1000])
def test_batches_of_equal_sizes_across_wraps(size):
    # Equal sizes take put_many's one-join path and get_many's strided
    # header check; a 4 KiB ring wraps every few batches, mid-run.
    r = make_ring(4096)
    try:
        msgs = [os.urandom(size) if size else b"" for _ in range(700)]
        got, pending = [], list(msgs)
        for max_messages in itertools.cycle([1, 3, 64, 1000]):
            if len(got) == len(msgs):
                break
            while pending:
                try:
                    del pending[: r.put_many(pending[:50], timeout=0)]
                except TimeoutError:
                    break
            batch = r.get_many(max_messages, timeout=0)
            assert 1 <= len(batch) <= max_messages
            got += batch
        assert got == msgs
        assert r.empty()
    finally:
        cleanup(r)


def test_get_many_equal_sizes_beyond_one_run():
    # More equal records than one run holds: one call copies them run by run.
    r = make_ring(1 << 20)
    try:
        msgs = [i.to_bytes(4, "little") * 25 for i in range(5000)]  # 5000 x 112-byte records
        assert 5000 * 112 > ring_mod._RUN_BYTES
        assert r.put_many(msgs) == 5000
        assert r.get_many(10000) == msgs
        assert r.empty()
    finally:
        cleanup(r)


def test_get_many_equal_sizes_stops_at_a_corrupted_record(ring):
    ring.put_many([b"abc"] * 5)
    with _raw(ring) as seg:
        fourth = ring_mod.HEADER_SIZE + 3 * 16
        seg.write(struct.pack("=I", 0x1234), fourth + 4)  # its kind
    assert ring.get_many(10) == [b"abc"] * 3
    with pytest.raises(shmipc.CorruptedError):
        ring.get_many(10)


def test_put_many_returns_how_many_fit_before_the_timeout():
    r = make_ring(64)  # 64 bytes of records: four 8-byte messages
    try:
        assert r.put_many([b"x" * 8] * 6, timeout=0) == 4
        with pytest.raises(TimeoutError):
            r.put_many([b"y"], timeout=0.01)
        assert r.get_many(10) == [b"x" * 8] * 4
    finally:
        cleanup(r)


def test_put_many_accepts_bytearrays_and_views(ring):
    arr = np.arange(5, dtype=np.int32)
    ring.put_many([bytearray(b"ba"), memoryview(b"mv"), arr])
    assert ring.get_many(3) == [b"ba", b"mv", arr.tobytes()]


def test_put_many_larger_than_ring_with_consumer_in_thread():
    import threading

    r = make_ring(256)
    try:
        msgs = [os.urandom(i % 100) for i in range(1000)]
        out = []

        def consume():
            while len(out) < len(msgs):
                out.extend(r.get_many(16, timeout=5))

        t = threading.Thread(target=consume)
        t.start()
        r.put_many(msgs, timeout=5)
        t.join(10)
        assert not t.is_alive()
        assert out == msgs
    finally:
        cleanup(r)


def test_iteration_and_end_of_stream(ring):
    for i in range(5):
        ring.put(b"%d" % i)
    ring.close()
    assert ring.closed
    assert list(ring) == [b"0", b"1", b"2", b"3", b"4"]
    with pytest.raises(shmipc.EndOfStream):
        ring.get()
    with pytest.raises(EOFError):
        ring.get_many(3)
    with pytest.raises(ValueError, match="closed"):
        ring.put(b"late")


def test_reserve_commit_and_discard(ring):
    with ring.reserve(5) as buf:
        assert isinstance(buf, memoryview) and not buf.readonly and len(buf) == 5
        buf[:] = b"abcde"
    with pytest.raises(RuntimeError):
        with ring.reserve(3) as buf:
            buf[:] = b"xyz"
            raise RuntimeError("discard me")
    with pytest.raises(ValueError):
        buf[0] = 1  # released
    assert ring.get() == b"abcde"
    assert ring.empty()


def test_reserve_and_get_view_across_wraps():
    # Sizes that land on, before and past the wrap point of a small ring,
    # mixed with put/get so both paths see each other's records.
    r = make_ring(256)
    try:
        rng = random.Random(7)
        for i in range(500):
            n = rng.choice([0, 1, 7, 8, 9, 63, r.max_message_size // 2, r.max_message_size])
            payload = bytes((i + k) & 0xFF for k in range(n))
            if i % 3:
                with r.reserve(n) as buf:
                    assert len(buf) == n and not buf.readonly
                    buf[:] = payload
            else:
                r.put(payload)
            if i % 2:
                with r.get_view() as view:
                    assert view.readonly and bytes(view) == payload
            else:
                assert r.get() == payload
            assert r.empty()
    finally:
        cleanup(r)


def _enter(block):
    with block:
        pass


def test_reserve_and_get_view_refusals(ring):
    for bad in ("3", 3.0, True, None):
        with pytest.raises(TypeError):
            ring.reserve(bad)
    with pytest.raises(ValueError):
        ring.reserve(ring.max_message_size + 1)
    # The blocks take their lock when they start: that is where they wait.
    with pytest.raises(TimeoutError):
        _enter(ring.get_view(timeout=0))
    with pytest.raises(TimeoutError):
        _enter(ring.get_view(timeout=0.01))
    # A slice of the reserved view outliving the block: discarded, not committed.
    with pytest.raises(BufferError):
        with ring.reserve(4) as buf:
            keep = buf[1:3]
    keep.release()
    assert ring.empty()
    with ring.reserve(ring.max_message_size) as buf:
        buf[:] = bytes(len(buf))
    with pytest.raises(TimeoutError):
        _enter(ring.reserve(0, timeout=0))
    with pytest.raises(TimeoutError):
        _enter(ring.reserve(1, timeout=0.01))
    ring.close()
    with pytest.raises(ValueError, match="closed"):
        _enter(ring.reserve(1))
    with ring.get_view() as view:
        assert len(view) == ring.max_message_size
    with pytest.raises(shmipc.EndOfStream):
        _enter(ring.get_view())
    # The locks were released on every refusal: the other side still works.
    assert ring.empty() and ring.closed


def test_get_view_zero_copy_and_release(ring):
    ring.put(b"in place")
    with ring.get_view() as view:
        assert view.readonly
        assert bytes(view) == b"in place"
        # the view aliases the ring's data area
        ring_addr = ring.segment.address
        view_addr = np.frombuffer(view, dtype=np.uint8).ctypes.data
        assert ring_addr + ring_mod.HEADER_SIZE <= view_addr < ring_addr + ring.segment.size
    with pytest.raises(ValueError):
        bytes(view)  # released: no reading of reused memory
    assert ring.empty()


def test_get_view_refuses_to_free_with_live_export(ring):
    ring.put(b"abcdefgh")
    with pytest.raises(BufferError):
        with ring.get_view() as view:
            arr = np.frombuffer(view, dtype=np.uint8)
    del arr
    assert ring.get() == b"abcdefgh"  # left in the ring, not lost


def test_arrays(ring):
    a = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    ring.put_array(a)
    b = ring.get_array()
    assert b.dtype == a.dtype and b.shape == a.shape and (a == b).all()
    ring.put_array(np.array(7, dtype=np.int16))
    c = ring.get_array()
    assert c.shape == () and c == 7
    ring.put_array(a[:, ::2])  # non-contiguous input is copied in
    with ring.get_view() as view:
        z = shmipc.decode_array(view)
        assert z.shape == (2, 2, 4) and not z.flags.writeable
        assert (z == a[:, ::2]).all()
        del z
    with pytest.raises(TypeError):
        ring.put_array(np.array([object()]))


def test_decode_array_rejects_garbage():
    for bad in (b"", b"SAR1", b"XXXX\x01\x03\x00\x00<f8\x00\x00\x00\x00\x00", b"SAR1\x01\x03\x00\x00<f8" + b"\0" * 5 + struct.pack("Q", 10) + b"\0" * 8):
        with pytest.raises(ValueError):
            shmipc.decode_array(bad)


def test_use_after_detach(ring):
    ring.put(b"x")
    ring.remove()
    ring.detach()
    ring.detach()  # idempotent
    for call in (
        lambda: ring.put(b"x"),
        lambda: ring.get(),
        lambda: ring.put_many([b"x"]),
        lambda: ring.get_many(1),
        lambda: ring.reserve(1),
        lambda: ring.get_view(),
        lambda: len(ring),
        lambda: ring.empty(),
        lambda: ring.full(),
        lambda: ring.close(),
        lambda: ring.shmid,
        lambda: ring.remove(),
        lambda: pickle.dumps(ring),
    ):
        with pytest.raises(ValueError):
            call()
    assert "detached" in repr(ring)


def test_context_manager_and_detach_with_live_view():
    r = make_ring(1024)
    shmid = r.shmid
    r.remove()
    with r:
        r.put(b"a")
    assert r.detached
    with pytest.raises(FileNotFoundError):
        shmipc.Segment.attach(shmid=shmid)


def test_attach_by_key_and_pickle():
    key = 0x5E000000 | (os.getpid() & 0xFFFFF)
    r = shmipc.Ring.create(1024, key)
    try:
        with pytest.raises(FileExistsError):
            shmipc.Ring.create(1024, key)
        other = shmipc.Ring.attach(key)
        other.put(b"by key")
        assert r.get() == b"by key"
        clone = pickle.loads(pickle.dumps(r))
        clone.put(b"by pickle")
        assert other.get() == b"by pickle"
        other.detach()
        clone.detach()
    finally:
        cleanup(r)


# ---- validation of shared state ------------------------------------------------


def test_attach_non_ring_segment():
    with shmipc.Segment.create(8192) as seg:
        try:
            before = seg.read()
            with pytest.raises(shmipc.CorruptedError, match="not a shmipc ring"):
                shmipc.Ring.attach(shmid=seg.shmid)
            assert seg.read() == before  # touched nothing
            small = shmipc.Segment.create(100)
            try:
                with pytest.raises(shmipc.CorruptedError, match="too small"):
                    shmipc.Ring.attach(shmid=small.shmid)
            finally:
                small.remove()
                small.detach()
        finally:
            seg.remove()


def _raw(r):
    return shmipc.Segment.attach(shmid=r.shmid)


def test_attach_wrong_version(ring):
    with _raw(ring) as seg:
        seg.write(struct.pack("=I", 99), ring_mod.OFF_VERSION)
        before = seg.read()
        with pytest.raises(shmipc.CorruptedError, match="version 99"):
            shmipc.Ring.attach(shmid=ring.shmid)
        assert seg.read() == before


@pytest.mark.parametrize(
    "offset,fmt,value",
    [
        (ring_mod.OFF_CAPACITY, "Q", 1 << 40),
        (ring_mod.OFF_CAPACITY, "Q", 4097),
        (ring_mod.OFF_MAX_MESSAGE, "Q", 1 << 33),
        (ring_mod.OFF_HEADER_SIZE, "I", 0),
    ],
)
def test_attach_garbage_header(ring, offset, fmt, value):
    with _raw(ring) as seg:
        seg.write(struct.pack("=" + fmt, value), offset)
        with pytest.raises(shmipc.CorruptedError):
            shmipc.Ring.attach(shmid=ring.shmid)


@pytest.mark.parametrize(
    "field,value",
    [
        ("tail", 1 << 60),
        ("tail", 3),
        ("head", 1 << 60),
        ("record_len", 0xFFFFFFF0),
        ("record_kind", 0x1234),
    ],
)
def test_corrupted_live_state_is_reported(ring, field, value):
    ring.put(b"payload!")
    with _raw(ring) as seg:
        if field == "tail":
            seg.write(struct.pack("=Q", value), ring_mod.OFF_TAIL)
        elif field == "head":
            seg.write(struct.pack("=Q", value), ring_mod.OFF_HEAD)
        elif field == "record_len":
            seg.write(struct.pack("=I", value), ring_mod.HEADER_SIZE)
        else:
            seg.write(struct.pack("=I", value), ring_mod.HEADER_SIZE + 4)
        fresh = shmipc.Ring.attach(shmid=ring.shmid)
        try:
            with pytest.raises(shmipc.CorruptedError):
                fresh.get(timeout=0.5)
            with pytest.raises(shmipc.CorruptedError):
                fresh.get_many(4, timeout=0.5)
        finally:
            fresh.detach()


def test_indices_near_the_top_of_u64_are_corrupted(ring):
    # Aligned, equal and close to 2**64: the ring looks empty, but the next
    # record would overflow the index. A clear error, not OverflowError.
    top = (1 << 64) - 64
    with _raw(ring) as seg:
        seg.write(struct.pack("=Q", top), ring_mod.OFF_TAIL)
        seg.write(struct.pack("=Q", top), ring_mod.OFF_HEAD)
        fresh = shmipc.Ring.attach(shmid=ring.shmid)
        try:
            for call in (lambda: fresh.put(b"x" * 100, timeout=0), lambda: fresh.put_many([b"x"] * 3, timeout=0),
                         lambda: _enter(fresh.reserve(8, timeout=0)), lambda: fresh.get(timeout=0),
                         lambda: fresh.get_many(2, timeout=0)):
                with pytest.raises(shmipc.CorruptedError):
                    call()
        finally:
            fresh.detach()


def test_reserve_takes_the_size_once():
    # An int subclass may answer differently each time: the size is
    # converted once and that value is checked and used.
    class Shifty(int):
        def __int__(self):
            return 7  # fits too: a regression fails the length check, not hangs

        def __index__(self):
            return 5

    r = make_ring(4096)
    try:
        with r.reserve(Shifty(5), timeout=1) as buf:
            assert len(buf) == 5
            buf[:] = b"12345"
        with r.reserve(np.int64(3), timeout=1) as buf:  # numpy integers are ints too
            buf[:] = b"abc"
        assert r.get_many(2) == [b"12345", b"abc"]
    finally:
        cleanup(r)


# ---- multi-process --------------------------------------------------------------

HDR = struct.Struct("=IQ16s")  # producer id, sequence, md5 of payload


def _producer(r, pid, count, seed, batch):
    rng = random.Random(seed)
    pending = []
    for seq in range(count):
        payload = os.urandom(rng.randrange(0, 200))
        msg = HDR.pack(pid, seq, hashlib.md5(payload).digest()) + payload
        if batch:
            pending.append(msg)
            if len(pending) == 8:
                r.put_many(pending, timeout=20)
                pending = []
        else:
            r.put(msg, timeout=20)
    if pending:
        r.put_many(pending, timeout=20)
    r.detach()


def _consumer(r, results, batch):
    last = {}
    count = 0
    errors = 0
    try:
        while True:
            msgs = r.get_many(16, timeout=20) if batch else [r.get(timeout=20)]
            for msg in msgs:
                pid, seq, digest = HDR.unpack_from(msg)
                payload = msg[HDR.size:]
                if hashlib.md5(payload).digest() != digest or seq <= last.get(pid, -1):
                    errors += 1
                last[pid] = seq
                count += 1
    except shmipc.EndOfStream:
        pass
    results.put((count, errors, last))
    r.detach()


@pytest.mark.parametrize("producers,consumers", [(1, 1), (1, 4), (4, 1), (4, 4)])
@pytest.mark.parametrize("capacity", [256, 4096])
def test_producers_consumers(producers, consumers, capacity):
    ctx = multiprocessing.get_context("fork")
    r = make_ring(capacity)
    per = 500
    try:
        results = ctx.Queue()
        procs = [ctx.Process(target=_producer, args=(r, i, per, i, i % 2 == 1)) for i in range(producers)]
        cons = [ctx.Process(target=_consumer, args=(r, results, i % 2 == 0)) for i in range(consumers)]
        for p in procs + cons:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        r.close()
        totals = [results.get(timeout=60) for _ in cons]
        for p in cons:
            p.join(30)
            assert p.exitcode == 0
        assert sum(t[0] for t in totals) == producers * per  # nothing lost or duplicated
        assert sum(t[1] for t in totals) == 0  # nothing corrupted or reordered
        seen_last = {}
        for _, _, last in totals:
            for pid, seq in last.items():
                seen_last[pid] = max(seen_last.get(pid, -1), seq)
        assert seen_last == {i: per - 1 for i in range(producers)}
    finally:
        cleanup(r)


def _echo(r_in, r_out, n):
    for _ in range(n):
        r_out.put(r_in.get(timeout=10))
    r_in.detach()
    r_out.detach()


@pytest.mark.parametrize("method", CONTEXTS)
def test_ping_pong_across_start_methods(method):
    ctx = multiprocessing.get_context(method)
    a, b = make_ring(1024), make_ring(1024)
    try:
        p = ctx.Process(target=_echo, args=(a, b, 50))
        p.start()
        for i in range(50):
            a.put(b"ping %d" % i)
            assert b.get(timeout=10) == b"ping %d" % i
        p.join(30)
        assert p.exitcode == 0
    finally:
        cleanup(a)
        cleanup(b)


@pytest.mark.parametrize("method", CONTEXTS)
def test_spinning_ping_pong(method):
    # spin travels with the pickled ring; both sides busy-poll before sleeping.
    ctx = multiprocessing.get_context(method)
    a = shmipc.Ring.create(1024, spin=0.002)
    b = shmipc.Ring.create(1024, spin=0.002)
    try:
        p = ctx.Process(target=_echo, args=(a, b, 300))
        p.start()
        for i in range(300):
            if i % 100 == 99:
                time.sleep(0.01)  # longer than the spin: the peer goes to sleep
            a.put(b"ping %d" % i)
            assert b.get(timeout=10) == b"ping %d" % i
        p.join(30)
        assert p.exitcode == 0
    finally:
        cleanup(a)
        cleanup(b)


def test_spin_never_outlasts_the_timeout():
    r = shmipc.Ring.create(64, spin=5.0)
    try:
        for call in (lambda: r.get(timeout=0.05), lambda: r.get_many(2, timeout=0.05)):
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                call()
            assert time.monotonic() - t0 < 2.0
        r.put_many([b"x" * 8] * 4)  # full
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            r.put(b"y", timeout=0.05)
        assert time.monotonic() - t0 < 2.0
    finally:
        cleanup(r)


def test_spinning_producer_and_consumer_threads():
    import threading

    r = shmipc.Ring.create(256, spin=0.0005)
    try:
        msgs = [b"%d" % i * (i % 7) for i in range(400)]
        out = []

        def consume():
            while len(out) < len(msgs):
                out.extend(r.get_many(3, timeout=10))

        t = threading.Thread(target=consume)
        t.start()
        for m in msgs:
            r.put(m, timeout=10)
        t.join(20)
        assert not t.is_alive()
        assert out == msgs
    finally:
        cleanup(r)


def _blocked_get(r, ready):
    ready.set()
    try:
        r.get()
    except shmipc.RemovedError:
        os._exit(3)
    except BaseException:
        os._exit(4)
    os._exit(5)


def test_removal_wakes_blocked_consumer():
    ctx = multiprocessing.get_context("fork")
    r = make_ring(1024)
    try:
        ready = ctx.Event()
        p = ctx.Process(target=_blocked_get, args=(r, ready))
        p.start()
        assert ready.wait(10)
        time.sleep(0.1)
        r.remove()
        p.join(5)
        assert p.exitcode == 3
    finally:
        if p.is_alive():
            p.kill()
        r.detach()


def _interrupted_get(r, ready):
    ready.set()
    try:
        r.get()
    except KeyboardInterrupt:
        os._exit(7)
    os._exit(1)


def test_keyboard_interrupt_during_blocking_get():
    ctx = multiprocessing.get_context("fork")
    r = make_ring(1024)
    try:
        ready = ctx.Event()
        p = ctx.Process(target=_interrupted_get, args=(r, ready))
        p.start()
        assert ready.wait(10)
        time.sleep(0.2)
        os.kill(p.pid, signal.SIGINT)
        p.join(2)
        assert p.exitcode == 7
        # the consumer lock came back with the interrupted call
        r.put(b"after")
        assert r.get(timeout=1) == b"after"
    finally:
        if p.is_alive():
            p.kill()
        cleanup(r)


def _die_holding_producer_lock(r):
    r._plock.acquire()
    r._store64(ring_mod.HEADER_SIZE, 0xDEADBEEF)  # half-written garbage
    os.kill(os.getpid(), signal.SIGKILL)


def test_producer_killed_holding_lock_blocks_nobody():
    ctx = multiprocessing.get_context("fork")
    r = make_ring(1024)
    try:
        p = ctx.Process(target=_die_holding_producer_lock, args=(r,))
        p.start()
        p.join(10)
        assert p.exitcode == -signal.SIGKILL
        r.put(b"after crash", timeout=2)
        assert r.get(timeout=2) == b"after crash"
        assert r.empty()
    finally:
        cleanup(r)


def test_get_array_of_a_non_array_message_raises_valueerror(ring):
    # Found by fuzz/fuzz_layout.py: decode_array's failed attempt kept an
    # export of the message view alive, so get_view()'s exit raised
    # BufferError instead of the ValueError and the ring could not detach.
    ring.put(b"not an array at all")
    with pytest.raises(ValueError, match="not an array"):
        ring.get_array(timeout=0)
    ring.put(b"next")
    assert ring.get(timeout=0) == b"next"
    # (the fixture's detach() fails with BufferError if an export leaked)


def test_timeouts_are_queue_full_and_empty(ring):
    # queue.Queue code and TimeoutError code both catch them.
    import queue

    with pytest.raises(queue.Empty):
        ring.get_nowait()
    with pytest.raises(shmipc.Empty) as empty:
        ring.get(timeout=0.01)
    assert isinstance(empty.value, TimeoutError)
    with pytest.raises(queue.Empty):
        with ring.get_view(timeout=0):
            pass
    ring.put(b"x" * (ring.max_message_size - 8))
    with pytest.raises(queue.Full):
        ring.put_nowait(b"y" * 64)
    with pytest.raises(shmipc.Full) as full:
        ring.put(b"y" * 64, timeout=0.01)
    assert isinstance(full.value, TimeoutError)
    with pytest.raises(shmipc.Full):
        ring.put_many([b"y" * 64], timeout=0)
    with pytest.raises(shmipc.Full):
        with ring.reserve(64, timeout=0):
            pass
    assert not issubclass(shmipc.Full, queue.Empty) and not issubclass(shmipc.Empty, queue.Full)
