"""Shared fixtures, and the session-end leak check.

Fixtures hand out segments and keys that are always removed and detached
at teardown, whatever the test did.  At the end of the session the run fails
if any SysV segment, registered semaphore set or ``shmipc-test-`` file in
/dev/shm that this run made is still there (see _leaks.py for how "this run
made it" is decided when other runs share the machine).
"""
from __future__ import annotations

import gc
import os
import secrets
import shutil
import sys
import tempfile
from typing import Any, List, Optional, Set, Union

import pytest

# The helpers (_leaks, _children) import by name under every --import-mode,
# and spawned children find them through the sys.path they inherit.
_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import _leaks  # noqa: E402
from shmipc import Segment, _core  # noqa: E402

# ---- session-end leak check ---------------------------------------------

_STATE: dict = {}


def pytest_sessionstart(session: pytest.Session) -> None:
    rundir = tempfile.mkdtemp(prefix="shmipc-testrun-")
    os.environ[_leaks.ENV_RUNDIR] = rundir
    os.environ[_leaks.ENV_TOKEN] = secrets.token_hex(4)
    _STATE.update(rundir=rundir, pid=os.getpid(), snapshot=_leaks.snapshot())
    if not _STATE.get("fork_hook"):
        # Children forked by the run (multiprocessing "fork", os.fork) record
        # their pid, so segments they create count as ours.
        os.register_at_fork(after_in_child=_leaks.record_pid)
        _STATE["fork_hook"] = True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    rundir = _STATE.get("rundir")
    if rundir is None or os.getpid() != _STATE["pid"]:
        return
    try:
        gc.collect()  # segments only referenced from cycles detach now
        wait = float(os.environ.get("SHMIPC_TEST_LEAK_WAIT", "2"))  # for deferred destruction
        leaks = _leaks.wait_for_leaks(_STATE["snapshot"], rundir, _STATE["pid"], wait)
        if leaks:
            failed = _leaks.remove_leaks(leaks)
            lines = [f"  {leak.kind} {leak.ident} {leak.detail}".rstrip() for leak in leaks]
            lines.append("(removed them now" + (f"; could not remove: {failed})" if failed else ")"))
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            title = f"shmipc leak check: {len(leaks)} kernel object(s) made by this run survived it"
            if reporter is not None:
                reporter.write_sep("=", title, red=True, bold=True)
                for line in lines:
                    reporter.write_line(line)
            else:
                print(title, *lines, sep="\n", file=sys.stderr)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
        os.environ.pop(_leaks.ENV_RUNDIR, None)
        _STATE.pop("rundir", None)


# ---- fixtures ------------------------------------------------------------


class ShmTracker:
    """Makes segments and keys for one test and cleans all of them up.

    ``segment()`` creates and attaches; ``add()`` tracks a Segment made some
    other way or a bare shmid; ``key()`` is a fresh unused key whose segment
    (if the test made one) is removed at teardown.
    """

    def __init__(self) -> None:
        self._segments: List[Segment] = []
        self._shmids: Set[int] = set()
        self._keys: List[int] = []

    def segment(self, size: int = 4096, key: Optional[int] = None, *, mode: int = 0o600) -> Segment:
        return self.add(Segment.create(size, key, mode=mode))

    def add(self, obj: Union[Segment, int]) -> Any:
        if isinstance(obj, Segment):
            self._segments.append(obj)
            shmid = obj.shmid
        else:
            shmid = obj
        self._shmids.add(shmid)
        _leaks.register_shm(shmid)
        return obj

    def key(self) -> int:
        key = _leaks.new_key()
        self._keys.append(key)
        return key

    def cleanup(self) -> None:
        for key in self._keys:
            try:
                self._shmids.add(_core.shmget(key, 0, 0))
            except OSError:
                pass
        for shmid in self._shmids:
            try:
                _core.shm_remove(shmid)
            except OSError:
                pass
        for seg in self._segments:
            try:
                seg.detach()
            except BufferError:
                gc.collect()
                try:
                    seg.detach()
                except BufferError:
                    pass  # removed already; the kernel frees it at dealloc
        self._segments.clear()


@pytest.fixture
def shm():
    tracker = ShmTracker()
    yield tracker
    tracker.cleanup()


@pytest.fixture
def seg(shm: ShmTracker) -> Segment:
    """A fresh private 4096-byte segment, attached read-write."""
    return shm.segment(4096)


@pytest.fixture
def key(shm: ShmTracker) -> int:
    """An IPC key no segment has; anything made with it is removed."""
    return shm.key()
