"""The buffer protocol of a segment: zero-copy views, export counting,
read-only mappings, and Segment.ndarray()."""
from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import struct
import sys

import pytest

from shmipc import Segment

np = pytest.importorskip("numpy")

PyBUF_SIMPLE, PyBUF_WRITABLE, PyBUF_FORMAT, PyBUF_ND = 0, 0x1, 0x4, 0x8


class Py_buffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.py_object),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(Py_buffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(Py_buffer)]
_release_buffer.restype = None


def get_buffer(obj, flags):
    """PyObject_GetBuffer(obj, flags) then PyBuffer_Release: (buf, len, readonly)."""
    view = Py_buffer()
    _get_buffer(obj, ctypes.byref(view), flags)  # pythonapi raises the error set
    try:
        return view.buf, view.len, view.readonly
    finally:
        _release_buffer(ctypes.byref(view))


def test_memoryview_shape_and_format(seg):
    with memoryview(seg) as view:
        assert view.format == "B" and view.itemsize == 1
        assert view.ndim == 1 and view.shape == (seg.size,) and view.strides == (1,)
        assert view.nbytes == len(view) == seg.size
        assert view.readonly is False
        assert view.c_contiguous and view.contiguous
        assert view.obj is seg


def test_memoryview_aliases_the_mapping(seg):
    with memoryview(seg) as view:
        view[0:3] = b"abc"
        assert seg.read(3) == b"abc"
        seg.write(b"XYZ", offset=10)
        assert bytes(view[10:13]) == b"XYZ"
        # the view's buffer starts exactly at the mapping
        assert ctypes.addressof(ctypes.c_char.from_buffer(view)) == seg.address


def test_two_attachments_in_one_process_share_pages(shm, seg):
    other = shm.add(Segment.attach(shmid=seg.shmid))
    a, b = seg.ndarray("u8"), other.ndarray("u8")
    assert a.ctypes.data == seg.address and b.ctypes.data == other.address
    assert seg.address != other.address
    a[5] = 0xDEADBEEF
    assert b[5] == 0xDEADBEEF  # same physical pages, no copy anywhere
    b[:] = 7
    assert int(a.sum()) == 7 * a.size
    del a, b


def test_writable_request_on_a_read_write_segment(seg):
    assert get_buffer(seg, PyBUF_WRITABLE) == (seg.address, seg.size, 0)
    assert seg.exports == 0
    cell = ctypes.c_uint32.from_buffer(seg, 8)
    cell.value = 0x11223344
    assert seg.read(4, 8) == (0x11223344).to_bytes(4, "little")
    assert seg.exports == 1
    del cell
    assert seg.exports == 0


def test_export_count(seg):
    assert seg.exports == 0
    view = memoryview(seg)
    assert seg.exports == 1
    sliced = view[10:20]  # shares the first export
    again = memoryview(view)
    assert seg.exports == 1
    second = memoryview(seg)
    assert seg.exports == 2
    arr = np.frombuffer(seg, dtype=np.uint8)
    assert seg.exports == 3
    del arr
    second.release()
    assert seg.exports == 1
    sliced.release()
    again.release()
    view.release()
    assert seg.exports == 0


def test_detach_refused_while_exported_then_allowed(seg):
    view = memoryview(seg)
    with pytest.raises(BufferError, match="exported"):
        seg.detach()
    assert not seg.closed
    view[0] = 1  # the mapping is still there and usable
    view.release()
    seg.detach()
    assert seg.closed


def test_detach_refused_while_numpy_array_alive(seg):
    arr = np.frombuffer(seg, dtype=np.uint8)
    derived = arr[100:200].reshape(10, 10)  # a view of a view keeps it alive
    del arr
    with pytest.raises(BufferError):
        seg.detach()
    derived[0, 0] = 42
    assert seg.read(1, offset=100) == b"\x2a"
    del derived
    seg.detach()


def test_failed_buffer_requests_do_not_count(shm, seg):
    ro = shm.add(Segment.attach(shmid=seg.shmid, readonly=True))
    for _ in range(3):
        with pytest.raises(BufferError):
            get_buffer(ro, PyBUF_WRITABLE)
    assert ro.exports == 0
    seg.detach()
    with pytest.raises(ValueError):
        memoryview(seg)
    assert seg.exports == 0
    ro.detach()


# ---- read-only mappings ---------------------------------------------------------


@pytest.fixture
def ro(shm, seg):
    seg.write(b"ro-data")
    return shm.add(Segment.attach(shmid=seg.shmid, readonly=True))


def test_readonly_memoryview(ro):
    with memoryview(ro) as view:
        assert view.readonly is True
        assert bytes(view[:7]) == b"ro-data"
        with pytest.raises(TypeError):
            view[0] = 0
        with pytest.raises(TypeError):
            view.cast("B")[0] = 0
    assert ro.read(7) == b"ro-data"


def test_readonly_write_raises_type_error(ro):
    with pytest.raises(TypeError, match="read-only"):
        ro.write(b"x")
    with pytest.raises(TypeError):
        ro.write(b"", offset=0)


def test_readonly_writable_buffer_requests_raise_buffer_error(ro):
    # PyObject_GetBuffer(ro, PyBUF_WRITABLE) itself, as a C consumer calls it
    with pytest.raises(BufferError, match="read-only"):
        get_buffer(ro, PyBUF_WRITABLE)
    with pytest.raises(BufferError):
        get_buffer(ro, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_ND)
    assert get_buffer(ro, PyBUF_SIMPLE) == (ro.address, ro.size, 1)
    # the usual consumers fail too, one way or another, and write nothing
    with pytest.raises(TypeError):
        ctypes.c_char.from_buffer(ro)
    with pytest.raises(TypeError):
        struct.pack_into("I", ro, 0, 1)
    with pytest.raises(TypeError):
        import io

        io.BytesIO(b"zz").readinto(ro)
    assert ro.exports == 0
    assert ro.read(7) == b"ro-data"


def test_readonly_numpy_views(ro):
    arr = np.frombuffer(ro, dtype=np.uint8)
    assert arr.flags.writeable is False
    with pytest.raises(ValueError):
        arr.flags.writeable = True
    with pytest.raises(ValueError):
        arr[0] = 1
    nd = ro.ndarray("u1", 7)
    assert nd.flags.writeable is False
    assert nd.tobytes() == b"ro-data"
    del arr, nd
    assert ro.exports == 0


def test_readonly_mapping_is_really_read_only_in_the_kernel(ro):
    # Even a raw pointer write must fault; do it in a child so the fault kills
    # only the child.  (It proves SHM_RDONLY reached shmat.)
    pid = os.fork()
    if pid == 0:
        try:
            faulthandler.disable()  # die quietly of the expected SIGSEGV
            signal.signal(signal.SIGSEGV, signal.SIG_DFL)
            ctypes.memset(ro.address, 0x41, 1)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV
    assert ro.read(7) == b"ro-data"


# ---- ndarray ---------------------------------------------------------------------


def test_ndarray_default_is_bytes_over_everything(seg):
    arr = seg.ndarray()
    assert arr.dtype == np.uint8 and arr.shape == (seg.size,)
    assert arr.ctypes.data == seg.address
    assert arr.base is not None and arr.flags.writeable


@pytest.mark.parametrize(
    "dtype,shape,offset,expected_shape",
    [
        ("float64", None, 0, (512,)),
        ("<i4", (4, 8), 0, (4, 8)),
        (np.int16, 10, 2, (10,)),
        ("u8", None, 8, (511,)),
        ("u8", None, 4, (511,)),  # unaligned offset, whole items that fit
        ("u1", (), 0, ()),  # a 0-d array of one item
        ("u1", (0,), 4096, (0,)),
        ("u1", None, 4096, (0,)),
        (np.dtype([("a", "<u4"), ("b", "<f8")]), (3,), 0, (3,)),
        ("u1", (2, 0, 5), 0, (2, 0, 5)),
    ],
)
def test_ndarray_shapes_dtypes_offsets(seg, dtype, shape, offset, expected_shape):
    arr = seg.ndarray(dtype, shape, offset)
    assert arr.shape == expected_shape
    assert arr.dtype == np.dtype(dtype)
    assert arr.ctypes.data == seg.address + offset
    if arr.size:
        flat = arr.reshape(-1).view(np.uint8)
        flat[:] = 0xAB
        assert seg.read(flat.size, offset) == b"\xab" * flat.size


def test_ndarray_zero_copy_both_ways(seg):
    arr = seg.ndarray("<u4", (16,), offset=64)
    arr[3] = 0x01020304
    assert seg.read(4, 64 + 12) == bytes([4, 3, 2, 1])
    seg.write((99).to_bytes(4, "little"), 64)
    assert arr[0] == 99


@pytest.mark.parametrize(
    "kwargs,exc",
    [
        (dict(offset=-1), ValueError),
        (dict(offset=4097), ValueError),
        (dict(offset=2**70), ValueError),
        (dict(offset=True), TypeError),
        (dict(offset=1.0), TypeError),
        (dict(offset="0"), TypeError),
        (dict(shape=4097), ValueError),
        (dict(shape=(2, 2049)), ValueError),
        (dict(shape=(-1,)), ValueError),
        (dict(shape=(True,)), TypeError),
        (dict(shape=True), TypeError),
        (dict(shape=(2.0,)), TypeError),
        (dict(shape=2.0), TypeError),
        (dict(shape=b"3"), TypeError),
        (dict(shape=(2, None)), TypeError),
        (dict(shape=(2**40, 2**40)), ValueError),
        (dict(dtype="u8", shape=513), ValueError),
        (dict(dtype="u8", shape=512, offset=1), ValueError),
        (dict(dtype="V0"), ValueError),
        (dict(dtype="no-such-dtype"), TypeError),
        (dict(shape="3"), TypeError),
    ],
    ids=str,
)
def test_ndarray_errors(seg, kwargs, exc):
    with pytest.raises(exc):
        seg.ndarray(**kwargs)
    assert seg.exports == 0


def test_ndarray_keeps_segment_attached(seg):
    arr = seg.ndarray("u2")
    with pytest.raises(BufferError):
        seg.detach()
    del arr
    seg.detach()


def test_ndarray_without_numpy_has_a_clear_message(seg, monkeypatch):
    monkeypatch.setitem(sys.modules, "numpy", None)  # "import numpy" now fails
    with pytest.raises(ImportError, match=r"needs numpy.*pip install numpy"):
        seg.ndarray()
    # everything else works without numpy
    seg.write(b"ok")
    assert bytes(memoryview(seg)[:2]) == b"ok"


# ---- threads -----------------------------------------------------------------------


def test_detach_racing_large_copies_in_other_threads(shm):
    # read()/write() of >= 256 KiB copy with the GIL released, holding an
    # export: a detach() in another thread must wait (BufferError), never
    # unmap under the copy.  Each copy either completes or, if it started
    # after the detach, raises ValueError.
    import threading

    size = 8 << 20
    payload = b"\x5a" * size
    for _ in range(5):
        seg = shm.segment(size)
        results = []

        def copier(seg, results):
            for op in ("write", "read", "write", "read"):
                try:
                    if op == "write":
                        results.append(seg.write(payload) == size)
                    else:
                        results.append(seg.read() == payload)
                except ValueError:
                    results.append("detached")

        thread = threading.Thread(target=copier, args=(seg, results))
        thread.start()
        refused = 0
        while True:
            try:
                seg.detach()
                break
            except BufferError:
                refused += 1
        thread.join(10)
        assert not thread.is_alive()
        assert seg.closed and seg.exports == 0
        # results: some completed copies (all correct), then only "detached"
        done = [r for r in results if r != "detached"]
        assert all(done) and results == done + ["detached"] * (len(results) - len(done))


# ---- arguments that run Python code --------------------------------------------------


def test_read_size_index_that_detaches_raises_instead_of_crashing(seg):
    # size's __index__ runs Python code after the offset is converted: it may
    # detach the segment, and the copy must then not touch the unmapped pages.
    class DetachingSize:
        def __index__(self):
            seg.detach()
            return 16

    with pytest.raises(ValueError, match="detached"):
        seg.read(DetachingSize())
    assert seg.closed


def test_write_offset_index_that_detaches_raises_instead_of_crashing(seg):
    class DetachingOffset:
        def __index__(self):
            seg.detach()
            return 0

    with pytest.raises(ValueError, match="detached"):
        seg.write(b"x", DetachingOffset())
    assert seg.closed
