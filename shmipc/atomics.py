"""Atomic operations on shared memory, for lock-free shared indices.

Python has no atomics and no memory fences: a plain ``memoryview`` store may
tear or be reordered as seen from another CPU.  :class:`AtomicView` wraps any
writable buffer (a :class:`shmipc.Segment`, an ``mmap``...) and performs
32- and 64-bit atomic operations at byte offsets:

=====================================  ==============  ==================
operation                              ordering        returns
=====================================  ==============  ==================
``load32/64(off)``                     acquire         the value
``store32/64(off, v)``                 release         None
``store32/64_seq_cst(off, v)``         seq_cst         None
``store64_then_load32(off, v, f)``     seq_cst both    the value at *f*
``store32_then_load64(f, v, off)``     seq_cst both    the value at *off*
``exchange32/64(off, v)``              seq_cst         the old value
``compare_exchange32/64(off, e, d)``   seq_cst strong  True if swapped
``fetch_add32/64(off, delta)``         seq_cst         the old value
``fence()``                            seq_cst         None
=====================================  ==============  ==================

Values are unsigned and must fit (``OverflowError``); ``delta`` may be
negative and wraps modulo 2**32 / 2**64.  Offsets are bytes from the start
of the buffer; the access must lie inside it and its address be naturally
aligned (``ValueError``).  Little-endian on x86: a 64-bit value is
``memoryview(seg).cast("Q")[off // 8]`` in this process's byte order.

Crash behaviour: atomics have no owner.  A process that dies leaves exactly
the values it last stored; nothing is undone and nobody is told.

``release()`` (alias ``close()``) drops the buffer export; it is idempotent
and every later call raises ``ValueError``.  While open, the view keeps a
segment from being detached (``BufferError``).
"""
from __future__ import annotations

from . import _core

__all__ = ["AtomicView", "fence"]

#: A sequentially consistent thread fence (``atomic_thread_fence(seq_cst)``).
fence = _core.fence


class AtomicView(_core.AtomicView):
    """Atomic 32/64-bit operations on the memory of a writable buffer.

    ``AtomicView(buffer)``; see the module documentation for the methods.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        if self.closed:
            return f"<{type(self).__name__} released>"
        return f"<{type(self).__name__} {len(self)} bytes of {type(self.obj).__name__}>"
