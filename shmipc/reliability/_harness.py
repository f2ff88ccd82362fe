"""What every figure stands on: rows of the table, child processes under a
watchdog, a record of every kernel object the suite creates, timing stats,
CPU stress and checksummed messages.

Everything a figure creates is recorded *before* it can leak: one line per
object in an append-only file that survives the death of the process that
wrote it (the suite kills its own figures and children on purpose), so the
top level can check at the end that nothing it created is left, and remove
what is.
"""
from __future__ import annotations

import os
import signal
import struct
import time
import zlib
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

_FORK = get_context("fork")
monotonic = time.monotonic

# ---- one row of the table ----------------------------------------------------


@dataclass
class Row:
    """One measured figure.  ``ok`` is True/False for a figure with a target,
    None for an informational row or a skipped one (``status`` says which)."""

    fid: str
    name: str
    value: str
    target: str
    ok: Optional[bool]
    status: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if not self.status:
            self.status = {True: "PASS", False: "FAIL", None: "info"}[self.ok]


def row(fid: str, name: str, value: Any, target: str, ok: Optional[bool], detail: str = "") -> Row:
    return Row(fid, name, str(value), target, ok, detail=detail)


def skipped(fid: str, name: str, why: str, target: str = "") -> Row:
    return Row(fid, name, "-", target, None, status=f"skipped: {why}")


@dataclass
class Tier:
    """Scale of a run: ``quick`` for CI, ``long`` for the nightly job."""

    name: str
    scale: float  # fraction of the counts

    @property
    def long(self) -> bool:
        return self.name == "long"

    def n(self, quick: int, long: int) -> int:
        return long if self.long else quick

    def t(self, quick: float, long: float) -> float:
        return long if self.long else quick


# ---- the record of created objects -------------------------------------------

_TRACK_ENV = "SHMIPC_RELIABILITY_TRACK"
NAME_PREFIX = "shmipc-rel-"


def _track_path() -> Optional[str]:
    return os.environ.get(_TRACK_ENV)


def _record(line: str) -> None:
    path = _track_path()
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def track_shm(shmid: int) -> int:
    """Record a segment id this run created (call right after creating)."""
    _record(f"shm {shmid}")
    return shmid


def track_sem(semid: int) -> int:
    """Record a semaphore set id this run created, with its ctime so a reused
    id is never mistaken for ours."""
    from .. import _core

    try:
        ctime = _core.sem_stat(semid)[9]
    except OSError:
        ctime = -1
    _record(f"sem {semid} {ctime}")
    return semid


def track_pid(pid: int) -> int:
    _record(f"pid {pid}")
    return pid


_name_counter = [0]


def new_name(tag: str = "") -> str:
    """A fresh POSIX semaphore name under this run's prefix."""
    _name_counter[0] += 1
    root = os.environ.get("SHMIPC_RELIABILITY_ROOT", str(os.getpid()))
    # The creator's pid is the first all-digit part (what shmipc.cleanup reads).
    return f"{NAME_PREFIX[:-1]}{root}-{os.getpid()}-{tag}{_name_counter[0]}"


def ring(capacity: int, key: Optional[int] = None, **kw: Any) -> Any:
    from ..ring import Ring

    r = Ring.create(capacity, key, **kw)
    track_shm(r.shmid)
    return r


def mailbox(max_size: int, key: Optional[int] = None, **kw: Any) -> Any:
    from ..mailbox import Mailbox

    m = Mailbox.create(max_size, key, **kw)
    track_shm(m.shmid)
    return m


def segment(size: int, key: Optional[int] = None, **kw: Any) -> Any:
    from ..segment import Segment

    s = Segment.create(size, key, **kw)
    track_shm(s.shmid)
    return s


def semaphore(value: Any = 0, key: Optional[int] = None, **kw: Any) -> Any:
    from ..semaphore import Semaphore

    s = Semaphore.create(value, key, **kw)
    track_sem(s.semid)
    return s


def liveness(slots: int) -> Any:
    from ..liveness import Liveness

    live = Liveness.create(slots)
    track_sem(live.semid)
    return live


def dispose(*objs: Any) -> None:
    """Remove and detach rings, mailboxes, segments, semaphores; never raises."""
    for obj in objs:
        if obj is None:
            continue
        for meth in ("remove", "detach", "close"):
            fn = getattr(obj, meth, None)
            if fn is None:
                continue
            try:
                fn()
            except Exception:
                pass


def free_key() -> int:
    """A System V key no segment or semaphore set uses right now."""
    from ..segment import segments
    from ..semaphore import semaphores

    used = {s.key for s in segments()} | {s.key for s in semaphores()}
    while True:
        key = int.from_bytes(os.urandom(4), "little") & 0x3FFFFFFF | 0x40000000
        if key not in used:
            return key


@dataclass
class Leftovers:
    segments: List[int] = field(default_factory=list)
    semaphores: List[int] = field(default_factory=list)
    names: List[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.segments or self.semaphores or self.names)

    def describe(self) -> str:
        parts = []
        if self.segments:
            parts.append(f"segments {self.segments}")
        if self.semaphores:
            parts.append(f"semaphore sets {self.semaphores}")
        if self.names:
            parts.append(f"/dev/shm files {self.names}")
        return "; ".join(parts) or "none"


def find_leftovers(track_file: str, root: str, since: float, remove: bool = True) -> Leftovers:
    """What this run created and is still there (and remove it if asked).

    Segments: an id recorded in *track_file*, or any segment whose creator is
    a process of this run (recorded pids) created after *since* (wall time).
    Semaphore sets: a recorded id with the same ctime.  Names: /dev/shm files
    under this run's prefix.
    """
    from .. import _core
    from ..segment import segments
    from ..semaphore import semaphores

    shm_ids, sem_ids, pids = set(), {}, {os.getpid()}
    try:
        with open(track_file) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "shm":
                    shm_ids.add(int(parts[1]))
                elif len(parts) >= 3 and parts[0] == "sem":
                    sem_ids[int(parts[1])] = int(parts[2])
                elif len(parts) >= 2 and parts[0] == "pid":
                    pids.add(int(parts[1]))
    except FileNotFoundError:
        pass
    out = Leftovers()
    for seg in segments():
        if seg.shmid in shm_ids or (seg.cpid in pids and seg.ctime >= since - 1):
            if seg.marked_for_destruction and seg.nattch == 0:
                continue
            out.segments.append(seg.shmid)
            if remove:
                try:
                    _core.shm_remove(seg.shmid)
                except OSError:
                    pass
    for sem in semaphores():
        if sem.semid in sem_ids and sem_ids[sem.semid] in (sem.ctime, -1):
            out.semaphores.append(sem.semid)
            if remove:
                try:
                    _core.sem_remove(sem.semid)
                except OSError:
                    pass
    prefix = f"sem.{NAME_PREFIX[:-1]}{root}-"
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        names = []
    for name in names:
        if name.startswith(prefix):
            out.names.append(name)
            if remove:
                try:
                    os.unlink(os.path.join("/dev/shm", name))
                except OSError:
                    pass
    return out


# ---- child processes under a watchdog ----------------------------------------


class Child:
    """A forked child running a module-level function; ``join`` is bounded."""

    def __init__(self, target: Callable[..., Any], *args: Any) -> None:
        self.proc = _FORK.Process(target=_child_main, args=(target, args), daemon=False)
        self.proc.start()
        self.pid: int = self.proc.pid  # type: ignore[assignment]
        track_pid(self.pid)
        self.hung = False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def alive(self) -> bool:
        return self.proc.is_alive()

    def join(self, timeout: float) -> Optional[int]:
        """Wait up to *timeout*; a child still running then is killed and
        counted as hung.  Returns the exit code (negative: killed by signal)."""
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            self.hung = True
            self.kill()
            self.proc.join(5)
        return self.proc.exitcode


def _child_main(target: Callable[..., Any], args: Tuple[Any, ...]) -> None:
    # A child must not run the parent's atexit/finalisers or flush its buffers.
    code = 1
    try:
        result = target(*args)
        code = int(result) if isinstance(result, int) else 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def join_all(children: Iterable[Child], timeout: float) -> Tuple[List[Optional[int]], int]:
    """Join every child within one shared deadline; returns (exit codes, hangs)."""
    deadline = monotonic() + timeout
    codes, hangs = [], 0
    for c in children:
        codes.append(c.join(max(0.0, deadline - monotonic())))
        hangs += c.hung
    return codes, hangs


def wait_file(path: str, timeout: float, min_size: int = 1) -> bool:
    """Poll until *path* holds at least *min_size* bytes."""
    deadline = monotonic() + timeout
    while monotonic() < deadline:
        try:
            if os.path.getsize(path) >= min_size:
                return True
        except OSError:
            pass
        time.sleep(0.0005)
    return False


def zombie(pid: int) -> bool:
    """True if *pid* is a zombie (dead, not reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] == b"Z"


# ---- CPU stress --------------------------------------------------------------


def _spin() -> None:
    x = 0
    while True:
        x += 1


class Stress:
    """``with Stress(n):`` n busy-looping processes (all cores busy)."""

    def __init__(self, n: Optional[int] = None) -> None:
        self.n = n if n is not None else (os.cpu_count() or 2) + 1
        self.children: List[Child] = []

    def __enter__(self) -> "Stress":
        self.children = [Child(_spin) for _ in range(self.n)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for c in self.children:
            c.kill()
        join_all(self.children, 5)


# ---- statistics --------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(-(-p * len(ordered) // 100)) - 1))
    return ordered[k]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# ---- checksummed messages ----------------------------------------------------

# producer id, payload length, sequence, crc32 of (the 16 bytes before it + payload)
MSG_HEADER = struct.Struct("<IIQI")
_BLOB = os.urandom(1 << 16)


def make_message(producer: int, seq: int, size: int) -> bytes:
    """A message of exactly *size* bytes (>= MSG_HEADER.size)."""
    n = size - MSG_HEADER.size
    start = (seq * 7919 + producer * 104729) % len(_BLOB)
    payload = (_BLOB[start:] + _BLOB)[:n] if n > len(_BLOB) - start else _BLOB[start:start + n]
    if len(payload) < n:
        payload = (payload * (n // max(1, len(payload)) + 1))[:n]
    head = struct.pack("<IIQ", producer, n, seq)
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def check_message(msg: Any) -> Optional[Tuple[int, int]]:
    """(producer, seq) of a valid message, None if it is torn or corrupted."""
    if len(msg) < MSG_HEADER.size:
        return None
    producer, n, seq, crc = MSG_HEADER.unpack_from(msg)
    if n != len(msg) - MSG_HEADER.size:
        return None
    view = memoryview(msg)
    if zlib.crc32(view[MSG_HEADER.size:], zlib.crc32(view[:16])) != crc:
        return None
    return producer, seq


def read_u64s(path: str) -> List[int]:
    """A log of little-endian u64 values written by a child (a torn tail is dropped)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    n = len(data) // 8
    return list(struct.unpack(f"<{n}Q", data[: n * 8]))


class U64Log:
    """Append u64 values to a file, one ``write`` each (survives SIGKILL)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._pack = struct.Struct("<Q").pack

    def add(self, value: int) -> None:
        os.write(self.fd, self._pack(value))

    def close(self) -> None:
        os.close(self.fd)


def result_file(tmp: str, name: str) -> str:
    return os.path.join(tmp, name)


def write_json(path: str, obj: Any) -> None:
    import json

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


Context = Dict[str, Any]


def wait_for_kill() -> None:
    """Hold whatever this child holds until it is killed (the watchdog's
    join timeout ends it if the parent never does)."""
    while True:
        time.sleep(3600)
