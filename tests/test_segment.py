"""Segments in one process: constructors and shmget flags, attributes,
read/write, stat/chmod/chown/remove, lifetime, bad arguments, ftok."""
from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import time

import pytest

import shmipc
from shmipc import Segment, SegmentInfo, _core

PAGE = os.sysconf("SC_PAGESIZE")


def gone(shmid: int) -> bool:
    try:
        shmipc.stat_segment(shmid)
    except FileNotFoundError:
        return True
    return False


# ---- constants -------------------------------------------------------------


def test_constants_have_the_linux_values():
    assert shmipc.IPC_PRIVATE == 0
    assert shmipc.IPC_CREAT == 0o1000
    assert shmipc.IPC_EXCL == 0o2000
    assert shmipc.IPC_NOWAIT == 0o4000
    assert (shmipc.IPC_RMID, shmipc.IPC_SET, shmipc.IPC_STAT) == (0, 1, 2)
    assert shmipc.SHM_RDONLY == 0o10000
    assert shmipc.SHM_RND == 0o20000
    assert shmipc.SHM_DEST == 0o1000 and shmipc.SHM_LOCKED == 0o2000
    assert shmipc.PAGE_SIZE == PAGE
    for name in ("SHM_RDONLY", "SHM_RND", "SHM_HUGETLB", "SHM_EXEC", "SHM_REMAP"):
        assert name in shmipc.__all__


# ---- create / attach / open -----------------------------------------------


def test_create_private(shm):
    seg = shm.segment(100)
    assert isinstance(seg, Segment) and isinstance(seg, _core.Segment)
    assert seg.key == 0 == shmipc.IPC_PRIVATE
    assert seg.size == len(seg) == 100  # the requested size, not page-rounded
    assert seg.readonly is False and seg.closed is False
    assert seg.created is True
    assert seg.exports == 0
    assert seg.address % PAGE == 0
    assert seg.read() == bytes(100)  # new segments are zero-filled
    assert seg.stat().mode == 0o600  # secure default


def test_private_segments_are_distinct(shm):
    a, b = shm.segment(64), shm.segment(64)
    assert a.shmid != b.shmid
    a.write(b"a")
    assert b.read(1) == b"\0"


def test_create_with_key_and_mode(shm, key):
    seg = shm.add(Segment.create(PAGE, key, mode=0o640))
    assert seg.key == key
    assert seg.stat().mode == 0o640
    assert seg.stat().key == key


def test_create_existing_key_raises_file_exists(shm, key):
    shm.add(Segment.create(64, key))
    with pytest.raises(FileExistsError):
        Segment.create(64, key)


def test_create_with_ipc_private_key_is_private(shm):
    seg = shm.add(Segment.create(64, shmipc.IPC_PRIVATE))
    assert seg.key == 0


def test_keys_above_2_31_are_unsigned_and_negative_aliases_work(shm, key):
    key |= 0x80000000
    seg = shm.add(Segment.create(64, key))
    assert seg.key == key
    other = shm.add(Segment.attach(key - 2**32))  # same 32 bits, signed
    assert other.shmid == seg.shmid
    assert other.key == key


def test_attach_by_key_and_by_shmid(shm, key):
    seg = shm.add(Segment.create(PAGE, key))
    seg.write(b"hello")
    by_key = shm.add(Segment.attach(key))
    by_id = shm.add(Segment.attach(shmid=seg.shmid))
    for other in (by_key, by_id):
        assert other.shmid == seg.shmid
        assert other.created is False
        assert other.address != seg.address  # its own mapping of the same pages
        assert other.read(5) == b"hello"
    by_id.write(b"J")
    assert seg.read(5) == b"Jello"


def test_attach_missing_key_raises_file_not_found(key):
    with pytest.raises(FileNotFoundError):
        Segment.attach(key)


def test_attach_missing_shmid_raises_file_not_found(shm):
    seg = shm.segment(64)
    shmid = seg.shmid
    seg.remove()
    seg.detach()
    assert gone(shmid)
    with pytest.raises(FileNotFoundError, match=str(shmid)):
        Segment.attach(shmid=shmid)
    with pytest.raises(FileNotFoundError):
        Segment.attach(shmid=2**31 - 1)


def test_attach_needs_exactly_one_of_key_and_shmid(seg):
    with pytest.raises(TypeError):
        Segment.attach()
    with pytest.raises(TypeError):
        Segment.attach(1234, shmid=seg.shmid)


def test_attach_ipc_private_key_is_refused():
    with pytest.raises(ValueError, match="IPC_PRIVATE"):
        Segment.attach(shmipc.IPC_PRIVATE)
    with pytest.raises(ValueError):
        Segment.open(shmipc.IPC_PRIVATE, 64)


def test_attach_readonly(shm, seg):
    seg.write(b"data")
    ro = shm.add(Segment.attach(shmid=seg.shmid, readonly=True))
    assert ro.readonly is True
    assert ro.read(4) == b"data"
    with pytest.raises(TypeError, match="read-only"):
        ro.write(b"x")
    seg.write(b"DATA")
    assert ro.read(4) == b"DATA"


def test_open_creates_when_missing(shm, key):
    seg = shm.add(Segment.open(key, 1000, mode=0o604))
    assert seg.created is True
    assert seg.size == 1000 and seg.key == key
    assert seg.stat().mode == 0o604


def test_open_existing(shm, key):
    first = shm.add(Segment.create(2 * PAGE, key))
    first.write(b"abc")
    same = shm.add(Segment.open(key, 2 * PAGE, mode=0o666))
    assert same.created is False
    assert same.shmid == first.shmid
    assert same.read(3) == b"abc"
    assert same.stat().mode == 0o600  # mode only applies when creating
    smaller = shm.add(Segment.open(key, 10))  # existing and bigger: fine
    assert smaller.size == 2 * PAGE  # the kernel's size, not the one asked


def test_open_existing_smaller_raises_value_error(shm, key):
    shm.add(Segment.create(100, key))
    with pytest.raises(ValueError, match="smaller"):
        Segment.open(key, 101)


# Every shmget flag combination, against a missing key, an existing key and
# IPC_PRIVATE.  (expected: "new" = a new segment, "same" = the existing one,
# or the exception.)
CREAT, EXCL = _core.IPC_CREAT, _core.IPC_EXCL
SHMGET_CASES = [
    ("missing", 0, FileNotFoundError),
    ("missing", EXCL, FileNotFoundError),
    ("missing", CREAT, "new"),
    ("missing", CREAT | EXCL, "new"),
    ("existing", 0, "same"),
    ("existing", EXCL, "same"),  # IPC_EXCL without IPC_CREAT is ignored
    ("existing", CREAT, "same"),
    ("existing", CREAT | EXCL, FileExistsError),
    ("private", 0, "new"),  # IPC_PRIVATE always creates
    ("private", CREAT, "new"),
    ("private", CREAT | EXCL, "new"),
]


@pytest.mark.parametrize("which,flags,expected", SHMGET_CASES)
def test_shmget_flag_combinations(shm, key, which, flags, expected):
    existing = None
    if which == "existing":
        existing = shm.add(Segment.create(PAGE, key))
    k = 0 if which == "private" else key
    if isinstance(expected, type):
        with pytest.raises(expected):
            _core.shmget(k, PAGE, flags | 0o600)
        return
    shmid = shm.add(_core.shmget(k, PAGE, flags | 0o600))
    if expected == "same":
        assert shmid == existing.shmid
    else:
        assert existing is None
        info = shmipc.stat_segment(shmid)
        assert info.size == PAGE and info.nattch == 0 and info.key == k
        assert info.cpid == os.getpid()


def test_shmget_size_errors(shm, key):
    with pytest.raises(OSError) as exc:
        _core.shmget(key, 0, CREAT | 0o600)  # size 0 can't be created
    assert exc.value.errno == 22 and "shmget" in str(exc.value)
    shm.add(Segment.create(PAGE, key))
    with pytest.raises(OSError) as exc:
        _core.shmget(key, 2 * PAGE, 0)  # existing is smaller than asked
    assert exc.value.errno == 22
    with pytest.raises(ValueError):
        _core.shmget(key, -1, 0)
    with pytest.raises(OverflowError):
        _core.shmget(key, 2**64, 0)


def test_huge_size_is_refused_by_the_kernel_or_us():
    # Beyond what the machine can back: the kernel says ENOMEM/ENOSPC/EINVAL.
    with pytest.raises(OSError) as exc:
        shmipc.Segment.create(2**62)
    assert exc.value.errno in (12, 22, 28)
    with pytest.raises(ValueError):
        shmipc.Segment.create(2**63)
    with pytest.raises(ValueError):
        shmipc.Segment.create(2**200)


def test_os_errors_are_raised_as_their_subclass(key, tmp_path):
    # `except FileNotFoundError` must match, and the raised type (not only
    # the instance) must be the subclass: on 3.9/3.10 an error set as
    # PyErr_SetObject(PyExc_OSError, args) slips past such except clauses.
    for fail in (lambda: Segment.attach(key), lambda: Segment.attach(shmid=2**31 - 1),
                 lambda: shmipc.remove_segment(2**31 - 1), lambda: shmipc.ftok(tmp_path / "nope", 1)):
        try:
            fail()
        except FileNotFoundError:
            assert sys.exc_info()[0] is FileNotFoundError
        else:
            raise AssertionError("no FileNotFoundError")


# ---- bad arguments -----------------------------------------------------------

BAD_SIZES = [(0, ValueError), (-1, ValueError), (-(2**70), ValueError), (1.5, TypeError),
             ("10", TypeError), (None, TypeError), (True, TypeError), (b"1", TypeError)]
BAD_KEYS = [("1", TypeError), (1.0, TypeError), (True, TypeError), (False, TypeError),
            (2**32, ValueError), (-(2**31) - 1, ValueError), (2**100, ValueError), ([1], TypeError)]
BAD_MODES = [(0o1000, ValueError), (-1, ValueError), (0o4777, ValueError), ("600", TypeError),
             (True, TypeError), (6.0, TypeError), (None, TypeError)]
BAD_SHMIDS = [(-1, ValueError), (2**31, ValueError), (2**64, ValueError), ("1", TypeError),
              (1.0, TypeError), (True, TypeError)]


@pytest.mark.parametrize("size,exc", BAD_SIZES)
def test_create_bad_size(size, exc):
    with pytest.raises(exc):
        Segment.create(size)


@pytest.mark.parametrize("size,exc", BAD_SIZES)
def test_open_bad_size(key, size, exc):
    with pytest.raises(exc):
        Segment.open(key, size)


@pytest.mark.parametrize("bad,exc", BAD_KEYS)
def test_bad_keys(bad, exc):
    with pytest.raises(exc):
        Segment.create(64, bad)
    with pytest.raises(exc):
        Segment.attach(bad)
    with pytest.raises(exc):
        Segment.open(bad, 64)
    with pytest.raises(exc):
        _core.shmget(bad, 64, 0)


@pytest.mark.parametrize("mode,exc", BAD_MODES)
def test_bad_modes(seg, key, mode, exc):
    with pytest.raises(exc):
        Segment.create(64, mode=mode)
    with pytest.raises(exc):
        Segment.open(key, 64, mode=mode)
    with pytest.raises(exc):
        seg.chmod(mode)
    assert seg.stat().mode == 0o600


@pytest.mark.parametrize("shmid,exc", BAD_SHMIDS)
def test_bad_shmids(shmid, exc):
    with pytest.raises(exc):
        Segment.attach(shmid=shmid)
    with pytest.raises(exc):
        shmipc.stat_segment(shmid)
    with pytest.raises(exc):
        shmipc.remove_segment(shmid)


def test_low_level_constructor_bad_arguments(seg):
    with pytest.raises(ValueError):
        _core.Segment(-1)
    with pytest.raises(TypeError):
        _core.Segment("1")
    with pytest.raises(TypeError):
        _core.Segment()
    with pytest.raises(TypeError):
        _core.Segment(seg.shmid, True)  # readonly is keyword-only
    with pytest.raises(OverflowError):
        _core.Segment(2**40)


def test_nothing_leaked_by_failed_constructors():
    before = {s.shmid for s in shmipc.segments() if s.cpid == os.getpid()}
    for bad in (0, -5, 2**63, "x"):
        with pytest.raises((ValueError, TypeError)):
            Segment.create(bad)
    after = {s.shmid for s in shmipc.segments() if s.cpid == os.getpid()}
    assert after <= before


def test_chown_bad_arguments(seg):
    for uid in (-2, 2**32, 2**70):
        with pytest.raises((ValueError, OverflowError)):
            seg.chown(uid=uid)
    for gid in (-2, 2**32):
        with pytest.raises((ValueError, OverflowError)):
            seg.chown(gid=gid)
    with pytest.raises(TypeError):
        seg.chown(uid="root")
    with pytest.raises(TypeError):
        seg.chown(gid=1.5)
    info = seg.stat()
    assert (info.uid, info.gid) == (os.geteuid(), os.getegid())


# ---- read / write ------------------------------------------------------------


def test_read_write_round_trip(seg):
    assert seg.write(b"hello") == 5
    assert seg.read(5) == b"hello"
    assert seg.write(bytearray(b"XY"), offset=1) == 2
    assert seg.read(5) == b"hXYlo"
    assert seg.read(3, offset=2) == b"Ylo"
    assert seg.read(offset=seg.size - 2) == b"\0\0"
    assert seg.read(0) == b""
    assert seg.read(offset=seg.size) == b""
    assert seg.write(b"", offset=seg.size) == 0
    assert seg.write(memoryview(b"end"), offset=seg.size - 3) == 3
    assert seg.read(size=3, offset=seg.size - 3) == b"end"
    assert len(seg.read()) == seg.size


def test_write_accepts_buffers_and_refuses_other_types(seg):
    import array

    seg.write(array.array("I", [0x01020304]))
    assert seg.read(4) == (0x01020304).to_bytes(4, "little")
    for bad in ("text", 123, None, [1, 2], 1.5):
        with pytest.raises(TypeError):
            seg.write(bad)


def test_write_from_an_overlapping_view_of_itself(seg):
    # The source aliases the destination: a memmove, not a garbled memcpy.
    seg.write(bytes(range(16)))
    with memoryview(seg) as view:
        seg.write(view[0:10], offset=3)
        seg.write(view[5:15], offset=0)
    expected = bytearray(range(16))
    expected[3:13] = expected[0:10]
    expected[0:10] = expected[5:15]
    assert seg.read(16) == bytes(expected)
    assert seg.exports == 0


def test_large_copies_release_the_gil_and_balance_exports(shm):
    big = shm.segment(1 << 20)
    payload = os.urandom(1 << 20)
    assert big.write(payload) == len(payload)
    assert big.exports == 0
    assert big.read() == payload
    assert big.exports == 0
    big.detach()  # nothing left exported by the copies


OUT_OF_RANGE = [
    dict(offset=-1),
    dict(offset=4097),
    dict(offset=2**62),
    dict(offset=2**63),
    dict(offset=2**200),
    dict(offset=-(2**200)),
    dict(size=-1),
    dict(size=4097),
    dict(size=2**62),
    dict(size=2**63),
    dict(size=2**200),
    dict(size=1, offset=4096),
    dict(size=2**62, offset=2**62),
    dict(size=2**63 - 1, offset=1),
    dict(size=4096, offset=1),
]


@pytest.mark.parametrize("kwargs", OUT_OF_RANGE, ids=str)
def test_read_out_of_range(seg, kwargs):
    with pytest.raises(ValueError):
        seg.read(**kwargs)


@pytest.mark.parametrize(
    "data,offset", [(b"x", -1), (b"x", 4096), (b"xy", 4095), (b"x", 2**62), (b"x", 2**63),
                    (b"x", 2**200), (b"x", -(2**63)), (bytes(4097), 0)]
)
def test_write_out_of_range(seg, data, offset):
    with pytest.raises(ValueError):
        seg.write(data, offset)
    assert seg.read() == bytes(4096)  # nothing partially written


@pytest.mark.parametrize("bad", ["1", 1.0, None, [0], b"\x00"])
def test_read_write_offset_types(seg, bad):
    with pytest.raises(TypeError):
        seg.read(offset=bad)
    with pytest.raises(TypeError):
        seg.write(b"x", offset=bad)


@pytest.mark.parametrize("bad", ["1", 1.0, [0], b"\x00"])
def test_read_size_types(seg, bad):
    with pytest.raises(TypeError):
        seg.read(bad)


def test_read_write_argument_count(seg):
    with pytest.raises(TypeError):
        seg.read(1, 2, 3)
    with pytest.raises(TypeError):
        seg.write()
    with pytest.raises(TypeError):
        seg.write(b"x", offset=0, size=1)


def test_read_many(seg):
    seg.write(bytes(range(64)))
    assert seg.read_many(4, 2) == [b"\x00\x01", b"\x02\x03", b"\x04\x05", b"\x06\x07"]
    assert seg.read_many(3, 2, 8, 10) == [bytes([8, 9]), bytes([18, 19]), bytes([28, 29])]
    assert seg.read_many(count=2, size=3, offset=1, stride=1) == [b"\x01\x02\x03", b"\x02\x03\x04"]  # overlapping
    assert seg.read_many(3, 0, 4093) == [b"", b"", b""]  # stride 1 for size 0: offsets 4093..4095
    assert seg.read_many(1, 0, 4096) == [b""]
    assert seg.read_many(0, 5) == []
    assert seg.read_many(2, 8, seg.size - 16) == [bytes(8), bytes(8)]  # exact fit at the end
    assert all(type(b) is bytes for b in seg.read_many(3, 4))


@pytest.mark.parametrize(
    "args",
    [(2, 8, 4096 - 15), (1, 4097), (2, 2049), (3, 1, 0, 2048), (2, 1, 4096), (-1, 1), (1, -1),
     (2, 1, 0, -1), (1, 1, -1), (2**62, 1, 0, 2**62), (2**63, 2**63), (2, 1, 0, 2**200), (1, 1, 2**200),
     (2, 1, 0, 0), (1, 1, 0, 0), (2**40, 0), (4098, 0), (2**31, 1, 0, 0)],
    ids=str,
)
def test_read_many_out_of_range(seg, args):
    with pytest.raises(ValueError):
        seg.read_many(*args)


def test_read_many_argument_types_and_detached(shm):
    seg = shm.segment(4096)
    for bad in ("1", 1.0, None):
        with pytest.raises(TypeError):
            seg.read_many(bad, 1)
        with pytest.raises(TypeError):
            seg.read_many(1, bad)
    with pytest.raises(TypeError):
        seg.read_many(1)
    with pytest.raises(TypeError):
        seg.read_many(1, 1, 0, 1, 5)
    with pytest.raises(TypeError):
        seg.read_many(1, 1, step=1)
    seg.detach()
    with pytest.raises(ValueError):
        seg.read_many(1, 1)


_DETACH_DURING_READ_MANY = """
import gc
import shmipc
seg = shmipc.Segment.create(1 << 20)
seg.remove()
class Detacher:
    def __del__(self):
        seg.detach()
gc.collect()
gc.disable()
a = Detacher(); a.cycle = a; del a
# The next object the collector tracks (read_many's list) starts a collection.
gc.set_threshold(max(gc.get_count()[0], 1))
gc.enable()
try:
    seg.read_many(100000, 8, 0, 8)
except ValueError as e:
    print("ValueError", e)
else:
    print("read", seg.closed)
"""


def test_read_many_survives_a_finalizer_that_detaches():
    # Allocating the result list may run the collector, whose finalizers may
    # detach the segment: a clear error, not a read through a dead mapping.
    # The child imports the same shmipc as this process.
    where = os.path.dirname(os.path.dirname(os.path.abspath(shmipc.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [where, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", _DETACH_DURING_READ_MANY], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    if sys.version_info < (3, 12):
        # The collector runs inside the allocation: the finalizer detaches mid-call.
        assert proc.stdout.startswith("ValueError operation on a detached segment"), proc.stdout
    else:
        # From 3.12 a collection waits for the interpreter's next safe point:
        # the call completes and the finalizer detaches after it (or before).
        assert proc.stdout.startswith(("ValueError operation on a detached segment", "read True")), proc.stdout


def test_prefault(shm):
    seg = shm.segment(3 * PAGE + 1)
    seg.write(b"keep", offset=2 * PAGE)
    assert seg.prefault() is None
    assert seg.read(4, offset=2 * PAGE) == b"keep"
    assert seg.exports == 0
    ro = shm.add(Segment.attach(shmid=seg.shmid, readonly=True))
    assert ro.prefault() is None
    assert ro.read(4, offset=2 * PAGE) == b"keep"


# ---- stat / chmod / chown / remove / segments() ----------------------------------


def test_stat_fields_match_what_the_kernel_reports(shm, key):
    t0 = int(time.time())
    seg = shm.add(Segment.create(12345, key))
    info = seg.stat()
    assert isinstance(info, SegmentInfo) and isinstance(info, tuple)
    assert info.key == key and info.shmid == seg.shmid
    assert info.size == 12345
    assert info.mode == 0o600
    assert (info.uid, info.gid) == (os.geteuid(), os.getegid())
    assert (info.cuid, info.cgid) == (os.geteuid(), os.getegid())
    assert info.cpid == os.getpid() and info.lpid == os.getpid()
    assert info.nattch == 1
    assert t0 - 1 <= info.ctime <= time.time() + 1
    assert t0 - 1 <= info.atime <= time.time() + 1
    assert info.dtime == 0  # never detached yet
    assert info.marked_for_destruction is False and info.locked is False
    with pytest.raises(AttributeError):
        info.size = 1  # an immutable record

    other = Segment.attach(key)
    assert seg.stat().nattch == 2
    other.detach()
    after = seg.stat()
    assert after.nattch == 1
    assert t0 - 1 <= after.dtime <= time.time() + 1


def test_stat_agrees_with_proc_sysvipc(shm, key):
    seg = shm.add(Segment.create(5000, key, mode=0o640))
    ro = shm.add(Segment.attach(shmid=seg.shmid, readonly=True))
    listed = {s.shmid: s for s in shmipc.segments()}
    assert all(isinstance(s, SegmentInfo) for s in listed.values())
    assert listed[seg.shmid] == seg.stat() == ro.stat()
    assert listed[seg.shmid].nattch == 2 and listed[seg.shmid].mode == 0o640
    # the raw text, too: key is printed as a signed int, perms in octal
    with open("/proc/sysvipc/shm") as f:
        header, *rows = [line.split() for line in f.read().splitlines()]
    row = next(dict(zip(header, r)) for r in rows if r and int(r[1]) == seg.shmid)
    assert int(row["key"]) & 0xFFFFFFFF == key
    assert int(row["perms"], 8) & 0o777 == 0o640
    assert int(row["size"]) == 5000 and int(row["cpid"]) == os.getpid()


def test_segments_lists_many(shm):
    made = {shm.segment(64 + i).shmid for i in range(3)}
    assert made <= {s.shmid for s in shmipc.segments()}


def test_chmod(seg):
    before = seg.stat()
    seg.chmod(0o644)
    assert seg.stat().mode == 0o644
    seg.chmod(0)
    assert seg.stat().mode == 0
    seg.write(b"root still writes")  # the mapping does not change
    seg.chmod(0o600)
    after = seg.stat()
    assert after.mode == 0o600
    assert after.ctime >= before.ctime


def test_chown(seg):
    seg.chown(uid=65534)
    info = seg.stat()
    assert info.uid == 65534 and info.gid == os.getegid()
    assert info.cuid == os.geteuid()  # the creator does not change
    seg.chown(gid=65534)
    assert (seg.stat().uid, seg.stat().gid) == (65534, 65534)
    seg.chown()  # nothing to change
    assert (seg.stat().uid, seg.stat().gid) == (65534, 65534)
    seg.chown(uid=0, gid=0)
    assert (seg.stat().uid, seg.stat().gid) == (0, 0)


def test_remove_while_attached_is_deferred(shm, key):
    seg = shm.add(Segment.create(PAGE, key))
    seg.write(b"still here")
    seg.remove()
    info = seg.stat()
    assert info.marked_for_destruction is True
    assert info.key == 0  # Linux drops the key at IPC_RMID
    assert info.nattch == 1
    with pytest.raises(FileNotFoundError):
        Segment.attach(key)  # no longer findable by key
    assert seg.read(10) == b"still here"
    seg.write(b"STILL")
    assert seg.read(10) == b"STILL here"
    shmid = seg.shmid
    seg.detach()
    assert gone(shmid)  # the last detach destroyed it
    with pytest.raises(FileNotFoundError):
        seg.remove()
    with pytest.raises(FileNotFoundError):
        seg.stat()
    with pytest.raises(FileNotFoundError):
        seg.chmod(0o600)
    with pytest.raises(FileNotFoundError):
        seg.chown(uid=0)


def test_remove_segment_and_stat_segment(shm):
    shmid = shm.add(_core.shmget(0, 64, CREAT | 0o600))
    assert shmipc.stat_segment(shmid).nattch == 0
    shmipc.remove_segment(shmid)  # nobody attached: destroyed at once
    assert gone(shmid)
    with pytest.raises(FileNotFoundError):
        shmipc.remove_segment(shmid)
    assert shmid not in {s.shmid for s in shmipc.segments()}


# ---- lifetime ----------------------------------------------------------------


def test_context_manager_detaches(shm):
    with shm.segment(64) as seg:
        assert seg.closed is False
        shmid = seg.shmid
        assert seg.stat().nattch == 1
    assert seg.closed is True
    assert shmipc.stat_segment(shmid).nattch == 0


def test_context_manager_detaches_on_error(shm):
    seg = shm.segment(64)
    with pytest.raises(KeyError):
        with seg:
            raise KeyError("boom")
    assert seg.closed


def test_context_manager_refuses_to_leave_with_exports(seg):
    with pytest.raises(BufferError):
        with seg:
            view = memoryview(seg)
    assert not seg.closed
    view.release()
    seg.detach()


def test_dealloc_detaches(shm):
    seg = shm.segment(64)
    shmid = seg.shmid
    extra = Segment.attach(shmid=shmid)
    assert shmipc.stat_segment(shmid).nattch == 2
    del extra
    assert shmipc.stat_segment(shmid).nattch == 1
    cyc = Segment.attach(shmid=shmid)
    cyc.me = cyc  # a reference cycle through the instance dict
    del cyc
    gc.collect()
    assert shmipc.stat_segment(shmid).nattch == 1


def test_detach_is_idempotent(seg):
    seg.detach()
    seg.detach()
    assert seg.closed


def test_pickle_reattaches_in_process(shm, seg):
    seg.write(b"pickled")
    copy = shm.add(pickle.loads(pickle.dumps(seg)))
    assert type(copy) is Segment
    assert copy.shmid == seg.shmid and copy.readonly is False
    assert copy.address != seg.address
    assert copy.read(7) == b"pickled"
    ro = shm.add(Segment.attach(shmid=seg.shmid, readonly=True))
    ro_copy = shm.add(pickle.loads(pickle.dumps(ro, protocol=pickle.HIGHEST_PROTOCOL)))
    assert ro_copy.readonly is True


def test_repr(seg):
    text = repr(seg)
    assert f"shmid={seg.shmid}" in text and "size=4096" in text and "rw" in text
    seg.detach()
    assert "detached" in repr(seg)


# Use after detach: everything that touches the mapping raises ValueError.
AFTER_DETACH = {
    "read": lambda s: s.read(),
    "read(1)": lambda s: s.read(1, 0),
    "write": lambda s: s.write(b"x"),
    "write(empty)": lambda s: s.write(b""),
    "prefault": lambda s: s.prefault(),
    "len": len,
    "bool": bool,
    "address": lambda s: s.address,
    "memoryview": memoryview,
    "bytes": bytes,
    "bytearray": bytearray,
    "ndarray": lambda s: s.ndarray(),
    "frombuffer": lambda s: __import__("numpy").frombuffer(s, "u1"),
    "pickle": pickle.dumps,
    "enter": lambda s: s.__enter__(),
}


@pytest.mark.parametrize("use", list(AFTER_DETACH), ids=list(AFTER_DETACH))
def test_use_after_detach_raises_value_error(seg, use):
    seg.detach()
    with pytest.raises(ValueError, match="detached"):
        AFTER_DETACH[use](seg)
    assert seg.closed and seg.exports == 0


def test_after_detach_identity_stays_and_kernel_object_is_reachable(seg):
    # What names the kernel object stays readable, and the operations on the
    # kernel object (by id) keep working: detach() then remove() is the
    # close-then-unlink idiom.
    shmid, key, size = seg.shmid, seg.key, seg.size
    seg.detach()
    assert (seg.shmid, seg.key, seg.size, seg.readonly) == (shmid, key, size, False)
    assert seg.closed is True and seg.exports == 0
    assert seg.stat().nattch == 0
    seg.chmod(0o640)
    seg.chown(gid=os.getegid())
    assert seg.stat().mode == 0o640
    seg.remove()
    assert gone(shmid)


# ---- ftok ----------------------------------------------------------------------


def test_ftok(tmp_path):
    path = tmp_path / "keyfile"
    path.write_text("x")
    key = shmipc.ftok(str(path), 1)
    assert key == shmipc.ftok(str(path), 1)  # same inputs, same key
    assert key == shmipc.ftok(path, 1) == shmipc.ftok(os.fsencode(str(path)), 1)
    assert shmipc.ftok(path, "A") == shmipc.ftok(path, ord("A"))
    assert shmipc.ftok(path, 2) != key
    # glibc's formula: proj_id in the top byte, then st_dev and st_ino bits
    st = os.stat(path)
    for proj in (1, 0x7F, 255):
        expected = ((proj & 0xFF) << 24) | ((st.st_dev & 0xFF) << 16) | (st.st_ino & 0xFFFF)
        assert shmipc.ftok(path, proj) == expected


def test_ftok_key_makes_a_segment(shm, tmp_path):
    key = shmipc.ftok(tmp_path, "s")
    try:
        Segment.attach(key)
    except FileNotFoundError:
        pass
    else:
        pytest.skip("another process uses this ftok key")
    seg = shm.add(Segment.create(64, key))
    assert Segment.attach(key).shmid == seg.shmid


@pytest.mark.parametrize("proj,exc", [(0, ValueError), (256, ValueError), (-1, ValueError),
                                      (2**70, ValueError), ("", ValueError), ("ab", ValueError),
                                      ("\0", ValueError), (1.0, TypeError), (True, TypeError),
                                      (None, TypeError), (b"a", TypeError)])
def test_ftok_bad_proj_id(tmp_path, proj, exc):
    with pytest.raises(exc):
        shmipc.ftok(tmp_path, proj)


def test_ftok_missing_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as info:
        shmipc.ftok(missing, 1)
    assert info.value.filename == str(missing)


@pytest.mark.parametrize("path,exc", [(123, TypeError), (None, TypeError), ("a\0b", ValueError)])
def test_ftok_bad_path(path, exc):
    with pytest.raises(exc):
        shmipc.ftok(path, 1)
