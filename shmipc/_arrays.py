"""How a numpy array travels as one message: a small header, then the data.

Layout of an array message (native byte order)::

    offset      size   field
    0           4      magic   b"SAR1"
    4           1      ndim    0..32
    5           1      dtype string length (1..63)
    6           2      reserved, 0
    8           dlen   dtype string: numpy's dtype.str, e.g. "<f8", "|u1"
    8+dlen      ...    zero padding to a multiple of 8 (= shape_at)
    shape_at    8*ndim shape, u64 each
    data_at     rest   the array's bytes, C order; data_at = shape_at + 8*ndim

The data starts 8-aligned inside the message, and messages start 8-aligned
in a ring, so the decoded array is aligned for every dtype up to 8 bytes.
Everything is validated on decode: the bytes may come from another process.
"""
from __future__ import annotations

import re
import struct
from typing import Any

__all__ = ["array_header", "decode_array", "encoded_size"]

ARRAY_MAGIC = b"SAR1"
MAX_NDIM = 32
_DTYPE_RE = re.compile(r"[<>|=][biufcmMV]\d{1,4}(\[[a-zA-Z]{1,2}\])?")
_PREFIX = struct.Struct("=4sBBH")


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise ImportError("array messages need numpy: pip install numpy") from None
    return numpy


def array_header(array: Any) -> bytes:
    """The header for a C-contiguous *array* (dtype without objects or fields)."""
    dtype = array.dtype
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise TypeError(f"arrays of dtype {dtype} cannot be shared (objects, fields or sub-arrays)")
    dstr = dtype.str.encode("ascii")
    if not _DTYPE_RE.fullmatch(dtype.str):
        raise TypeError(f"arrays of dtype {dtype} cannot be shared")
    if array.ndim > MAX_NDIM:
        raise ValueError(f"arrays of more than {MAX_NDIM} dimensions cannot be shared")
    body = _PREFIX.pack(ARRAY_MAGIC, array.ndim, len(dstr), 0) + dstr
    body += b"\0" * (-len(body) % 8)
    return body + struct.pack(f"={array.ndim}Q", *array.shape)


def encoded_size(header: bytes, array: Any) -> int:
    return len(header) + array.nbytes


def decode_array(view: Any) -> Any:
    """A zero-copy array over an array message (read-only if *view* is)."""
    numpy = _numpy()
    mv = memoryview(view)
    try:
        return _decode(numpy, mv)
    except BaseException:
        # A failed decode must not leave an export of *view* behind (the
        # traceback keeps this frame alive): Ring.get_view()'s exit would then
        # refuse to free the message and raise BufferError instead of this.
        mv.release()
        raise


def _decode(numpy: Any, mv: memoryview) -> Any:
    size = mv.nbytes
    if size < 8:
        raise ValueError("message is too short to be an array")
    magic, ndim, dlen, reserved = _PREFIX.unpack_from(mv, 0)
    if magic != ARRAY_MAGIC or reserved != 0 or ndim > MAX_NDIM or not 1 <= dlen <= 63:
        raise ValueError("message is not an array (bad array header)")
    shape_at = (8 + dlen + 7) & ~7
    data_at = shape_at + 8 * ndim
    if data_at > size:
        raise ValueError("array message is truncated")
    try:
        dstr = bytes(mv[8:8 + dlen]).decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("array message has a corrupted dtype") from None
    if not _DTYPE_RE.fullmatch(dstr):
        raise ValueError(f"array message has an unsupported dtype {dstr!r}")
    dtype = numpy.dtype(dstr)
    shape = struct.unpack_from(f"={ndim}Q", mv, shape_at)
    count = 1
    for dim in shape:
        count *= dim
    if count * dtype.itemsize != size - data_at:
        raise ValueError(
            f"array message is corrupted: shape {shape} of {dtype} needs {count * dtype.itemsize} bytes, "
            f"{size - data_at} are there"
        )
    return numpy.frombuffer(mv, dtype=dtype, count=count, offset=data_at).reshape(shape)
