"""shmipc.AtomicView: atomic loads, stores and read-modify-writes on a segment."""
import mmap
import multiprocessing
import sys
import time

import pytest

import shmipc
from shmipc import AtomicView, Segment, _core

CONTEXTS = ["fork", "spawn"]
SEG_SIZE = 4096

# (method name, width in bytes, extra arguments after the offset)
METHODS = [
    ("load32", 4, ()),
    ("load64", 8, ()),
    ("store32", 4, (1,)),
    ("store64", 8, (1,)),
    ("store32_seq_cst", 4, (1,)),
    ("store64_seq_cst", 8, (1,)),
    ("store64_then_load32", 8, (1, 0)),
    ("store32_then_load64", 4, (1, 0)),
    ("exchange32", 4, (1,)),
    ("exchange64", 8, (1,)),
    ("compare_exchange32", 4, (0, 1)),
    ("compare_exchange64", 8, (0, 1)),
    ("fetch_add32", 4, (1,)),
    ("fetch_add64", 8, (1,)),
]
METHOD_IDS = [m[0] for m in METHODS]


# ---- helpers and fixtures ------------------------------------------------

@pytest.fixture
def seg():
    s = Segment.create(SEG_SIZE)
    try:
        yield s
    finally:
        s.remove()
        s.detach()


@pytest.fixture
def av(seg):
    v = AtomicView(seg)
    yield v
    v.release()


def start(ctx_name, target, *args):
    p = multiprocessing.get_context(ctx_name).Process(target=target, args=args)
    p.start()
    return p


def finish(p, timeout=20.0):
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        pytest.fail(f"child process {p.pid} did not finish in {timeout} s")
    return p.exitcode


def words(seg, fmt="Q"):
    return memoryview(seg).cast(fmt)


# ---- children --------------------------------------------------------------------

def child_fetch_add(seg, offset, count):
    av = AtomicView(seg)
    add = av.fetch_add64
    for _ in range(count):
        add(offset, 1)
    av.release()


def child_cas_increment(seg, offset, count):
    av = AtomicView(seg)
    load, cas = av.load32, av.compare_exchange32
    for _ in range(count):
        while True:
            old = load(offset)
            if cas(offset, old, (old + 1) & 0xFFFFFFFF):
                break
    av.release()


def child_consumer(seg, rounds):
    # The producer writes a payload with plain stores, then publishes the
    # round number at offset 0 with a release store; after an acquire load
    # sees it, the payload must be complete.  We answer at offset 8.
    av = AtomicView(seg)
    data = memoryview(seg).cast("Q")
    try:
        for i in range(1, rounds + 1):
            deadline = time.monotonic() + 10
            spins = 0
            while av.load64(0) != i:
                spins += 1
                if spins % 1024 == 0 and time.monotonic() > deadline:
                    sys.exit(2)
            if data[2] != i * 3 or data[3] != i * 7:
                sys.exit(3)
            av.store64(8, i)
    finally:
        data.release()
        av.release()


# ---- values ------------------------------------------------------------------

def test_load_store_roundtrip_and_visibility(seg, av):
    q = words(seg, "Q")
    i = words(seg, "I")
    try:
        av.store64(8, 0x0123456789ABCDEF)
        assert av.load64(8) == 0x0123456789ABCDEF
        assert q[1] == 0x0123456789ABCDEF  # the same memory
        av.store32(4, 0xDEADBEEF)
        assert av.load32(4) == 0xDEADBEEF == i[1]
        q[5] = 42
        assert av.load64(40) == 42
        av.store64_seq_cst(48, 7)
        av.store32_seq_cst(56, 9)
        assert (q[6], i[14]) == (7, 9)
    finally:
        q.release()
        i.release()


def test_store64_then_load32_stores_then_returns_the_flag(av):
    av.store32(64, 0)
    assert av.store64_then_load32(0, 2**64 - 1, 64) == 0
    assert av.load64(0) == 2**64 - 1
    av.store32(64, 0xFFFFFFFF)
    assert av.store64_then_load32(8, 5, 64) == 0xFFFFFFFF
    assert av.load64(8) == 5


@pytest.mark.parametrize("flag_off", [2, -4, SEG_SIZE - 2, SEG_SIZE])
def test_store64_then_load32_checks_the_flag_offset_before_storing(av, flag_off):
    av.store64(0, 1)
    with pytest.raises(ValueError):
        av.store64_then_load32(0, 2, flag_off)
    assert av.load64(0) == 1  # nothing was stored


def test_store32_then_load64_stores_then_returns_the_index(av):
    av.store64(64, 2**64 - 1)
    assert av.store32_then_load64(0, 1, 64) == 2**64 - 1
    assert av.load32(0) == 1
    av.store64(64, 7)
    assert av.store32_then_load64(4, 0xFFFFFFFF, 64) == 7
    assert av.load32(4) == 0xFFFFFFFF


@pytest.mark.parametrize("off", [4, -8, SEG_SIZE - 4, SEG_SIZE])
def test_store32_then_load64_checks_the_index_offset_before_storing(av, off):
    av.store32(0, 1)
    with pytest.raises(ValueError):
        av.store32_then_load64(0, 2, off)
    assert av.load32(0) == 1  # nothing was stored


def test_extreme_values(av):
    av.store64(0, 2**64 - 1)
    assert av.load64(0) == 2**64 - 1
    av.store32(8, 2**32 - 1)
    assert av.load32(8) == 2**32 - 1
    av.store64(0, 0)
    assert av.load64(0) == 0


@pytest.mark.parametrize(
    "name,bad,exc",
    [
        ("store32", 2**32, OverflowError),
        ("store32", -1, OverflowError),
        ("store64", 2**64, OverflowError),
        ("store64", -1, OverflowError),
        ("store64_seq_cst", 2**64, OverflowError),
        ("store32_seq_cst", -1, OverflowError),
        ("exchange32", 2**32, OverflowError),
        ("exchange64", -1, OverflowError),
        ("store32", 1.0, TypeError),
        ("store64", "1", TypeError),
        ("exchange64", None, TypeError),
    ],
)
def test_value_errors(av, name, bad, exc):
    av.store64(0, 5)
    with pytest.raises(exc):
        getattr(av, name)(0, bad)
    assert av.load64(0) == 5  # nothing written


def test_exchange_returns_old(av):
    av.store64(0, 10)
    assert av.exchange64(0, 20) == 10
    assert av.load64(0) == 20
    av.store32(8, 1)
    assert av.exchange32(8, 2**32 - 1) == 1
    assert av.load32(8) == 2**32 - 1


def test_compare_exchange(av):
    av.store64(0, 5)
    assert av.compare_exchange64(0, 4, 9) is False
    assert av.load64(0) == 5
    assert av.compare_exchange64(0, 5, 9) is True
    assert av.load64(0) == 9
    av.store32(8, 2**32 - 1)
    assert av.compare_exchange32(8, 0, 1) is False
    assert av.compare_exchange32(8, 2**32 - 1, 0) is True
    assert av.load32(8) == 0
    with pytest.raises(OverflowError):
        av.compare_exchange32(8, 2**32, 0)
    with pytest.raises(OverflowError):
        av.compare_exchange64(0, 9, -1)
    assert av.load64(0) == 9


def test_fetch_add(av):
    assert av.fetch_add64(0, 5) == 0
    assert av.fetch_add64(0, 2**40) == 5
    assert av.load64(0) == 2**40 + 5
    assert av.fetch_add32(8, 3) == 0
    assert av.load32(8) == 3


def test_fetch_add_negative_and_wrapping(av):
    assert av.fetch_add32(0, -1) == 0
    assert av.load32(0) == 2**32 - 1
    assert av.fetch_add32(0, 1) == 2**32 - 1
    assert av.load32(0) == 0
    assert av.fetch_add32(0, 2**32 - 1) == 0  # same as -1
    assert av.load32(0) == 2**32 - 1
    assert av.fetch_add64(8, -1) == 0
    assert av.load64(8) == 2**64 - 1
    assert av.fetch_add64(8, 2) == 2**64 - 1
    assert av.load64(8) == 1
    assert av.fetch_add64(8, -(2**63)) == 1
    assert av.load64(8) == 2**63 + 1
    av.store32(16, 0)
    assert av.fetch_add32(16, -(2**31)) == 0
    assert av.load32(16) == 2**31


@pytest.mark.parametrize(
    "name,delta",
    [("fetch_add32", 2**32), ("fetch_add32", -(2**31) - 1),
     ("fetch_add64", 2**64), ("fetch_add64", -(2**63) - 1)],
)
def test_fetch_add_delta_range(av, name, delta):
    with pytest.raises(OverflowError):
        getattr(av, name)(0, delta)
    assert av.load64(0) == 0


def test_fetch_add_delta_type(av):
    with pytest.raises(TypeError):
        av.fetch_add64(0, 1.0)
    with pytest.raises(TypeError):
        av.fetch_add32(0, "1")


def test_fences():
    assert _core.fence() is None
    assert shmipc.fence is _core.fence


def test_fence_method(av):
    assert av.fence() is None


# ---- offsets --------------------------------------------------------------------

@pytest.mark.parametrize("name,width,extra", METHODS, ids=METHOD_IDS)
def test_bounds_on_every_method(av, name, width, extra):
    method = getattr(av, name)
    for off in (-width, -1, SEG_SIZE - width + 1, SEG_SIZE, SEG_SIZE + 8, 2**62, 2**80, -(2**80)):
        with pytest.raises(ValueError, match="out of range"):
            method(off, *extra)
    method(SEG_SIZE - width, *extra)  # the last slot is fine
    method(0, *extra)


@pytest.mark.parametrize("name,width,extra", METHODS, ids=METHOD_IDS)
def test_alignment_on_every_method(av, name, width, extra):
    method = getattr(av, name)
    for off in range(1, width):
        with pytest.raises(ValueError, match="aligned"):
            method(off, *extra)
    with pytest.raises(ValueError, match="aligned"):
        method(SEG_SIZE - width - 1, *extra)


@pytest.mark.parametrize("name,width,extra", METHODS, ids=METHOD_IDS)
def test_argument_count_and_type_on_every_method(av, name, width, extra):
    method = getattr(av, name)
    with pytest.raises(TypeError):
        method()
    with pytest.raises(TypeError):
        method(0, *extra, 0)
    with pytest.raises(TypeError):
        method("0", *extra)
    with pytest.raises(TypeError):
        method(0.0, *extra)
    with pytest.raises(TypeError):
        method(off=0)


def test_unaligned_buffer_address(seg):
    mv = memoryview(seg)[1:]  # starts one byte past a page boundary
    av = AtomicView(mv)
    try:
        assert len(av) == SEG_SIZE - 1
        with pytest.raises(ValueError, match="aligned"):
            av.load32(0)
        with pytest.raises(ValueError, match="aligned"):
            av.load64(0)
        av.store32(3, 77)  # address 4: aligned
        assert av.load32(3) == 77
        av.store64(7, 88)  # address 8
        assert av.load64(7) == 88
    finally:
        av.release()
        mv.release()
    q = words(seg, "Q")
    try:
        assert q[1] == 88
    finally:
        q.release()


def test_small_buffer():
    m = mmap.mmap(-1, 4096)
    mv = memoryview(m)[:6]
    av = AtomicView(mv)
    try:
        assert len(av) == 6
        av.store32(4 - 4, 1)
        with pytest.raises(ValueError, match="out of range"):
            av.load64(0)
        with pytest.raises(ValueError, match="out of range"):
            av.load32(4)
    finally:
        av.release()
        mv.release()
        m.close()


def test_read_only_buffers_refused(seg):
    with pytest.raises((BufferError, TypeError)):
        AtomicView(bytes(16))
    ro = Segment.attach(shmid=seg.shmid, readonly=True)
    try:
        with pytest.raises(BufferError):
            AtomicView(ro)
    finally:
        ro.detach()
    with pytest.raises(TypeError):
        AtomicView(12)


# ---- lifetime ----------------------------------------------------------------------

def test_segment_cannot_detach_while_open(seg):
    av = AtomicView(seg)
    assert len(av) == SEG_SIZE and av.obj is seg
    with pytest.raises(BufferError):
        seg.detach()
    av.release()
    seg.detach()
    assert seg.closed


def test_dealloc_drops_the_export(seg):
    av = AtomicView(seg)
    assert seg.exports == 1
    del av
    assert seg.exports == 0


@pytest.mark.parametrize("name,width,extra", METHODS, ids=METHOD_IDS)
def test_use_after_release_on_every_method(av, name, width, extra):
    av.release()
    with pytest.raises(ValueError, match="released"):
        getattr(av, name)(0, *extra)


def test_use_after_release_misc(av):
    av.close()
    av.release()  # idempotent, and close is the same
    assert av.closed and av.obj is None
    with pytest.raises(ValueError):
        len(av)
    with pytest.raises(ValueError):
        av.fence()
    with pytest.raises(ValueError):
        with av:
            pass
    assert "released" in repr(av)


def test_context_manager_releases(seg):
    with AtomicView(seg) as av:
        av.store64(0, 1)
        assert seg.exports == 1
    assert av.closed
    assert seg.exports == 0


def test_not_picklable(av):
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(av)


# ---- across processes ------------------------------------------------------------

@pytest.mark.parametrize("ctx", CONTEXTS)
def test_two_processes_lose_no_fetch_add(seg, ctx):
    per_child = 500_000
    procs = [start(ctx, child_fetch_add, seg, 64, per_child) for _ in range(2)]
    for p in procs:
        assert finish(p, 60) == 0
    with AtomicView(seg) as av:
        assert av.load64(64) == 2 * per_child


def test_two_processes_compare_exchange_increment(seg):
    per_child = 50_000
    procs = [start("fork", child_cas_increment, seg, 128, per_child) for _ in range(2)]
    for p in procs:
        assert finish(p, 60) == 0
    with AtomicView(seg) as av:
        assert av.load32(128) == 2 * per_child


@pytest.mark.parametrize("ctx", CONTEXTS)
def test_release_acquire_publication(seg, av, ctx):
    rounds = 2000
    data = words(seg)
    try:
        p = start(ctx, child_consumer, seg, rounds)
        for i in range(1, rounds + 1):
            data[2] = i * 3
            data[3] = i * 7
            av.store64(0, i)  # publish (release)
            deadline = time.monotonic() + 10
            while av.load64(8) != i:  # wait for the answer (acquire)
                if time.monotonic() > deadline:
                    break
            assert av.load64(8) == i
        assert finish(p) == 0
    finally:
        data.release()


def test_reexported_from_package():
    assert shmipc.AtomicView is AtomicView
