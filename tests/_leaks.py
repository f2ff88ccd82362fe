"""Leak accounting for a test run: which kernel objects did *this* run make?

Other developers run the suite on the same machine at the same time, so "a
segment appeared during the run" is not proof that we made it.  The session
(see conftest.py) therefore identifies its own objects positively:

* Segments: /proc/sysvipc/shm names the creator pid (``cpid``).  A segment
  is ours when it was not there at session start and its cpid is a pid of
  this run: the pytest process, every child it forked (an ``os.fork`` hook
  records the child's pid), and every spawned child that imports this module
  (it records itself at import when the run's environment variable is set;
  the test modules that start children import it).  Any test may also
  ``register_shm()`` an id, which is then checked whoever created it.
* Semaphore sets: /proc/sysvipc/sem has no creator pid, so only the sets a
  test registered with ``register_sem()`` are checked.
* /dev/shm files (POSIX named semaphores, shm_open): names containing
  ``shmipc-test-`` that appeared during the run.  ``posix_name()`` gives
  names with this run's token; names carrying another run's token are
  skipped, names without a token are counted as ours.

Registrations and pids are files in a run directory named by the
environment, so every process of the run can add to them cheaply and
atomically.  Without that variable (module imported outside a test session)
every function here is a harmless no-op.
"""
from __future__ import annotations

import itertools
import os
import random
import re
import time
from typing import Dict, List, NamedTuple, Set

ENV_RUNDIR = "SHMIPC_TEST_RUNDIR"
ENV_TOKEN = "SHMIPC_TEST_TOKEN"
PREFIX = "shmipc-test-"
DEV_SHM = "/dev/shm"
PROC_SHM = "/proc/sysvipc/shm"
PROC_SEM = "/proc/sysvipc/sem"

_counter = itertools.count()


def _touch(name: str) -> None:
    rundir = os.environ.get(ENV_RUNDIR)
    if not rundir:
        return
    try:
        with open(os.path.join(rundir, name), "x"):
            pass
    except FileExistsError:
        pass
    except OSError:  # run directory already gone: the session is over
        pass


def record_pid() -> None:
    """Count this process as part of the run (its segments are ours)."""
    _touch(f"pid-{os.getpid()}")


def register_shm(shmid: int) -> int:
    """Check at session end that segment *shmid* is gone; returns it."""
    _touch(f"shm-{int(shmid)}")
    return shmid


def register_sem(semid: int) -> int:
    """Check at session end that semaphore set *semid* is gone; returns it."""
    _touch(f"sem-{int(semid)}")
    return semid


def posix_name(tag: str = "") -> str:
    """A fresh POSIX IPC name ("/shmipc-test-r<token>-...") for this run."""
    token = os.environ.get(ENV_TOKEN, "none")
    return f"/{PREFIX}r{token}-{tag}{'-' if tag else ''}{os.getpid()}-{next(_counter)}"


def new_key() -> int:
    """A random IPC key that names no segment right now."""
    from shmipc import _core

    rng = random.Random()
    while True:
        key = rng.randrange(0x10000000, 0x7FFFFFFF)
        try:
            _core.shmget(key, 0, 0)
        except FileNotFoundError:
            return key


# ---- reading the system's tables ------------------------------------------


def _proc_rows(path: str) -> List[Dict[str, str]]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    if not lines:
        return []
    names = lines[0].split()
    return [dict(zip(names, line.split())) for line in lines[1:] if line.split()]


def shm_rows() -> Dict[int, Dict[str, str]]:
    return {int(r["shmid"]): r for r in _proc_rows(PROC_SHM)}


def sem_rows() -> Dict[int, Dict[str, str]]:
    return {int(r["semid"]): r for r in _proc_rows(PROC_SEM)}


def dev_shm_names() -> Set[str]:
    try:
        return {n for n in os.listdir(DEV_SHM) if PREFIX in n}
    except OSError:
        return set()


class Snapshot(NamedTuple):
    shm: Set[int]
    sem: Set[int]
    files: Set[str]


def snapshot() -> Snapshot:
    return Snapshot(set(shm_rows()), set(sem_rows()), dev_shm_names())


def _registered(rundir: str) -> Dict[str, Set[int]]:
    out: Dict[str, Set[int]] = {"pid": set(), "shm": set(), "sem": set()}
    try:
        names = os.listdir(rundir)
    except OSError:
        return out
    for name in names:
        kind, _, value = name.partition("-")
        if kind in out and value.isdigit():
            out[kind].add(int(value))
    return out


class Leak(NamedTuple):
    kind: str  # "segment", "semaphore set", "file"
    ident: str  # shmid / semid / file name
    detail: str


def find_leaks(snap: Snapshot, rundir: str, session_pid: int) -> List[Leak]:
    reg = _registered(rundir)
    pids = reg["pid"] | {session_pid}
    leaks: List[Leak] = []
    for shmid, row in sorted(shm_rows().items()):
        ours = shmid in reg["shm"] or (shmid not in snap.shm and int(row["cpid"]) in pids)
        if ours:
            leaks.append(
                Leak(
                    "segment",
                    str(shmid),
                    f"key={int(row['key']) & 0xFFFFFFFF:#010x} size={row['size']} "
                    f"cpid={row['cpid']} nattch={row['nattch']} perms={row['perms']}",
                )
            )
    for semid, row in sorted(sem_rows().items()):
        if semid in reg["sem"]:
            leaks.append(
                Leak("semaphore set", str(semid), f"key={int(row['key']) & 0xFFFFFFFF:#010x} nsems={row['nsems']}")
            )
    token = os.environ.get(ENV_TOKEN, "")
    other_run = re.compile(re.escape(PREFIX) + r"r([0-9a-f]+)-")
    for name in sorted(dev_shm_names() - snap.files):
        m = other_run.search(name)
        if m and m.group(1) != token:
            continue  # another concurrent run's object
        leaks.append(Leak("file", os.path.join(DEV_SHM, name), ""))
    return leaks


def wait_for_leaks(snap: Snapshot, rundir: str, session_pid: int, timeout: float = 2.0) -> List[Leak]:
    """find_leaks(), giving deferred destruction (last detach) up to *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        leaks = find_leaks(snap, rundir, session_pid)
        if not leaks or time.monotonic() >= deadline:
            return leaks
        time.sleep(0.05)


def remove_leaks(leaks: List[Leak]) -> List[str]:
    """Best-effort removal of what leaked, so one bad run does not pile up."""
    import subprocess

    from shmipc import _core

    failed = []
    for leak in leaks:
        try:
            if leak.kind == "segment":
                _core.shm_remove(int(leak.ident))
            elif leak.kind == "semaphore set":
                subprocess.run(["ipcrm", "-s", leak.ident], check=True, capture_output=True, timeout=5)
            else:
                os.unlink(leak.ident)
        except FileNotFoundError:
            pass
        except (OSError, subprocess.SubprocessError) as exc:
            failed.append(f"{leak.kind} {leak.ident}: {exc}")
    return failed


# A spawned child that imports this module belongs to the run.
if os.environ.get(ENV_RUNDIR):
    record_pid()
