"""Mailbox: handoff and latest-value modes, across real processes."""
import multiprocessing
import os
import pickle
import signal
import struct
import time

import pytest

import shmipc
from shmipc import mailbox as mb_mod


@pytest.fixture
def box():
    b = shmipc.Mailbox.create(64)
    try:
        yield b
    finally:
        if b._seg is not None:
            b.remove()
            b.detach()


@pytest.fixture
def latest():
    b = shmipc.Mailbox.create(64, overwrite=True)
    try:
        yield b
    finally:
        if b._seg is not None:
            b.remove()
            b.detach()


def test_handoff_in_one_process(box):
    box.send(b"one")
    with pytest.raises(TimeoutError):
        box.send(b"two", timeout=0)  # slot is taken
    assert box.recv() == b"one"
    with pytest.raises(TimeoutError):
        box.recv(timeout=0.05)
    box.send(b"")
    assert box.recv() == b""
    assert box.segment.stat().mode == 0o600


def test_oversize_and_bad_args(box):
    with pytest.raises(ValueError):
        box.send(b"x" * 65)
    with pytest.raises(ValueError):
        box.recv(timeout=-1)
    with pytest.raises(TypeError):
        shmipc.Mailbox.create("64")
    with pytest.raises(ValueError):
        shmipc.Mailbox.create(-1)


def test_zero_copy_forms(box):
    with box.send_view(5) as buf:
        buf[:] = b"hello"
    with box.recv_view() as view:
        assert view.readonly and bytes(view) == b"hello"
    with pytest.raises(ValueError):
        bytes(view)
    with pytest.raises(RuntimeError):
        with box.send_view(3) as buf:
            raise RuntimeError("discard")
    box.send(b"again", timeout=0)  # the slot was freed by the discarded send
    assert box.recv(timeout=0) == b"again"


def test_use_after_detach(box):
    box.remove()
    box.detach()
    box.detach()
    for call in (lambda: box.send(b"x"), lambda: box.recv(), lambda: box.shmid, lambda: box.close(), lambda: pickle.dumps(box)):
        with pytest.raises(ValueError):
            call()


def test_attach_non_mailbox():
    with shmipc.Segment.create(4096) as seg:
        try:
            with pytest.raises(shmipc.CorruptedError):
                shmipc.Mailbox.attach(shmid=seg.shmid)
        finally:
            seg.remove()


def test_corrupted_length_is_reported(box):
    box.send(b"abc")
    with shmipc.Segment.attach(shmid=box.shmid) as seg:
        seg.write(struct.pack("=Q", 1 << 40), mb_mod.HEADER_SIZE)
    with pytest.raises(shmipc.CorruptedError):
        box.recv(timeout=1)


def _writer(box, n, base):
    for i in range(n):
        box.send(b"%d:%d" % (base, i), timeout=20)
    box.detach()


def _reader(box, n, results):
    got = [box.recv(timeout=20) for _ in range(n)]
    results.put(got)
    box.detach()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_handoff_between_processes(box, method):
    ctx = multiprocessing.get_context(method)
    results = ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(box, 50, w)) for w in range(2)]
    readers = [ctx.Process(target=_reader, args=(box, 50, results)) for _ in range(2)]
    for p in writers + readers:
        p.start()
    got = results.get(timeout=60) + results.get(timeout=60)
    for p in writers + readers:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(got) == sorted(b"%d:%d" % (w, i) for w in range(2) for i in range(50))
    # per-writer order kept within each reader
    for w in range(2):
        seqs = [int(m.split(b":")[1]) for m in got if m.startswith(b"%d:" % w)]
        assert len(seqs) == 50


def _die_after_taking_slot(box):
    with box.send_view(4) as buf:
        buf[:] = b"half"
        os.kill(os.getpid(), signal.SIGKILL)


def test_dead_writer_gives_the_slot_back(box):
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_die_after_taking_slot, args=(box,))
    p.start()
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    box.send(b"after", timeout=2)
    assert box.recv(timeout=2) == b"after"


def test_latest_value(latest):
    assert latest.latest() is None
    with pytest.raises(TimeoutError):
        latest.recv(timeout=0)
    for i in range(5):
        latest.send(b"v%d" % i, timeout=0)  # never blocks
    assert latest.sequence == 5
    assert latest.recv() == b"v4"
    assert latest.missed == 4
    with pytest.raises(TimeoutError):
        latest.recv(timeout=0.05)  # nothing newer
    latest.send(b"v5")
    assert latest.recv() == b"v5"
    assert latest.missed == 0
    with pytest.raises(ValueError):
        latest.send_view(3)


def _latest_writer(box, n, size):
    for i in range(n):
        box.send(struct.pack("=Q", i) * (size // 8))
    box.detach()


def _latest_reader(box, seconds, results):
    torn = 0
    count = 0
    last = -1
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        try:
            value = box.recv(timeout=0.5)
        except TimeoutError:
            break
        words = struct.unpack("=%dQ" % (len(value) // 8), value)
        if len(set(words)) != 1 or words[0] <= last:
            torn += 1
        last = words[0]
        count += 1
    results.put((torn, count))
    box.detach()


def test_latest_value_never_torn():
    ctx = multiprocessing.get_context("fork")
    box = shmipc.Mailbox.create(4096, overwrite=True)
    try:
        results = ctx.Queue()
        w = ctx.Process(target=_latest_writer, args=(box, 20000, 4096))
        readers = [ctx.Process(target=_latest_reader, args=(box, 3, results)) for _ in range(2)]
        for p in readers + [w]:
            p.start()
        w.join(60)
        assert w.exitcode == 0
        outcomes = [results.get(timeout=30) for _ in readers]
        for p in readers:
            p.join(10)
            assert p.exitcode == 0
        assert all(torn == 0 for torn, _ in outcomes)
        assert all(count > 0 for _, count in outcomes)
    finally:
        box.remove()
        box.detach()


def _wait_newer(box, ready, results):
    ready.set()
    results.put(box.recv(timeout=10))
    box.detach()


def test_latest_reader_waits_for_newer():
    ctx = multiprocessing.get_context("fork")
    box = shmipc.Mailbox.create(16, overwrite=True)
    try:
        results = ctx.Queue()
        ready = ctx.Event()
        p = ctx.Process(target=_wait_newer, args=(box, ready, results))
        p.start()
        assert ready.wait(10)
        time.sleep(0.1)
        box.send(b"fresh")
        assert results.get(timeout=10) == b"fresh"
        p.join(10)
        assert p.exitcode == 0
    finally:
        box.remove()
        box.detach()


def test_close_ends_receivers(box, latest):
    box.close()
    with pytest.raises(shmipc.EndOfStream):
        box.recv(timeout=1)
    latest.close()
    with pytest.raises(shmipc.EndOfStream):
        latest.recv(timeout=1)


def test_pickle_by_reference(box):
    clone = pickle.loads(pickle.dumps(box))
    try:
        clone.send(b"through clone")
        assert box.recv(timeout=1) == b"through clone"
        assert clone.shmid == box.shmid
    finally:
        clone.detach()


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("offset", [mb_mod.OFF_MAY_WRITE, mb_mod.OFF_MAY_READ, mb_mod.OFF_SLOT_LOCK,
                                    mb_mod.OFF_WRITER_LOCK, mb_mod.OFF_SEQUENCE - 8])
def test_garbage_header_words_are_clear_errors(overwrite, offset):
    # Layout 1 kept sem_t and a robust mutex here, and attach() validated
    # them (ValueError).  Layout 2 keeps plain words: attach() succeeds, and
    # garbage shows up as CorruptedError or TimeoutError at use, never as a
    # crash, and detach() still works.
    box = shmipc.Mailbox.create(64, overwrite=overwrite)
    try:
        seg = box.segment
        seg.write(b"\xff" * 64, offset=offset)
        other = shmipc.Mailbox.attach(shmid=box.shmid)
        try:
            for call in (lambda: other.send(b"x", timeout=0.1), lambda: other.recv(timeout=0.1)):
                try:
                    call()
                except (shmipc.CorruptedError, TimeoutError):
                    pass
        finally:
            other.detach()
        assert seg.stat().nattch == 1
    finally:
        box.remove()
        box.detach()


def test_latest_value_corrupted_sequence_is_a_clear_error(latest):
    # Found by fuzz/fuzz_layout.py (atheris): a sequence near 2**64 made
    # send() fail with OverflowError from the atomic store.
    from shmipc.atomics import AtomicView

    with AtomicView(latest.segment) as av:
        av.store64(mb_mod.OFF_SEQUENCE, 2**64 - 2)
    with pytest.raises(shmipc.CorruptedError):
        latest.send(b"x")
    with AtomicView(latest.segment) as av:
        assert av.load64(mb_mod.OFF_SEQUENCE) == 2**64 - 2  # nothing was modified
        av.store64(mb_mod.OFF_SEQUENCE, 0)
    latest.send(b"ok")  # the writer lock was released
    assert latest.recv(timeout=0) == b"ok"
