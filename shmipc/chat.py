"""``python -m shmipc chat``: the seed's worked example, on shmipc primitives.

A parent and a child process share one segment guarded by two named POSIX
semaphores.  The parent (the writer) waits on "may write", reads a line from
stdin into the segment and posts "may read"; the child (the reader) waits on
"may read", prints ``read buf : <line>.`` and posts "may write".  ``quit``
(or end of input) ends both; the parent waits for the child and removes the
segment and the semaphores, also when interrupted with Ctrl-C.

Slot layout in the segment: a 4-byte native length, then the UTF-8 line.
"""
from __future__ import annotations

import argparse
import os
import signal
import struct
import sys
import time
from typing import List, Optional, TextIO

from .named_semaphore import NamedSemaphore
from .segment import Segment

_LEN = struct.Struct("=I")
QUIT = "quit"


def _reader(seg: Segment, may_read: NamedSemaphore, may_write: NamedSemaphore, out: TextIO) -> int:
    """The child: print every line the writer puts in the segment."""
    while True:
        may_read.acquire()
        (n,) = _LEN.unpack(seg.read(_LEN.size))
        if n > len(seg) - _LEN.size:
            print("chat: corrupted segment", file=sys.stderr)
            return 1
        line = seg.read(n, _LEN.size).decode("utf-8", "replace")
        if line == QUIT:
            return 0
        out.write(f"read buf : {line}.\n")
        out.flush()
        may_write.release()


def run(stdin: TextIO, stdout: TextIO, size: int = 4096, prompt: str = ">") -> int:
    tag = f"shmipc-chat-{os.getpid()}-{time.monotonic_ns() % 1000000}"
    seg = Segment.create(size)
    may_write = may_read = None
    child = 0
    try:
        may_write = NamedSemaphore.create(f"{tag}-wsem", 1)
        may_read = NamedSemaphore.create(f"{tag}-rsem", 0)
        stdout.flush()
        child = os.fork()
        if child == 0:  # the reader
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = _reader(seg, may_read, may_write, stdout)
            finally:
                os._exit(code)
        # the writer
        while True:
            may_write.acquire()
            stdout.write(prompt)
            stdout.flush()
            raw = stdin.readline()
            line = QUIT if raw == "" else raw.rstrip("\r\n")
            data = line.encode("utf-8")[: size - _LEN.size]
            seg.write(_LEN.pack(len(data)) + data)
            may_read.release()
            if line == QUIT:
                if raw == "" or not stdin.isatty():
                    stdout.write("\n")
                break
        return _wait_child(child)
    except KeyboardInterrupt:
        stdout.write("\n")
        return 130
    finally:
        if child > 0:
            _stop_child(child)
        for sem in (may_write, may_read):
            if sem is not None:
                sem.unlink()
                sem.close()
        seg.remove()
        seg.detach()


def _wait_child(pid: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8
        time.sleep(0.005)
    return 1


def _stop_child(pid: int) -> None:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return
    if not done:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shmipc chat",
        description="The classic shared-memory example: type lines, a child process prints them; 'quit' ends.",
    )
    parser.add_argument("--size", type=int, default=4096, help="segment size in bytes (default 4096)")
    args = parser.parse_args(argv)
    if args.size < 16:
        parser.error("--size must be at least 16")
    return run(sys.stdin, sys.stdout, args.size)


if __name__ == "__main__":
    sys.exit(main())
